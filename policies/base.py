"""The one policy interface shared by the CLI, the environment loop and user code."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from starec_env.data.model import Dataset
from starec_env.types import Feedback, RankingBatch, TrainSplit


@dataclass
class PolicyContext:
    """Everything a policy factory may need to build a policy.

    ``simulator`` is only handed to privileged agents (the oracle upper bound,
    teachers); ordinary policies must not read it. ``options`` carries
    policy-specific settings from the config (e.g. ``model``, ``epochs``).
    """

    dataset: Dataset
    seed: int = 0
    simulator: Any = None
    options: dict = field(default_factory=dict)

    def rng(self, salt: int = 0) -> np.random.Generator:
        """A generator derived from the seed; ``salt`` separates independent streams."""
        return np.random.default_rng([self.seed, salt])


class Policy:
    """Scores candidate items for a batch of users; higher is better.

    Subclasses override :meth:`score`; learned ones also :meth:`fit`, agents
    with memory also :meth:`observe`. ``stats`` lets a policy report costs
    (training seconds, LLM tokens, ...) that end up in the results table.
    """

    name: str = "policy"
    #: True for privileged references (the oracle): reported, never a real policy.
    upper_bound: bool = False

    def fit(self, split: TrainSplit) -> None:
        """Learn from training interactions (no-op for rule-free agents)."""

    def score(self, batch: RankingBatch) -> np.ndarray:
        """Return (B, C) scores for ``batch.candidates``."""
        raise NotImplementedError

    def observe(self, batch: RankingBatch, feedback: Feedback) -> None:
        """See what the users did with the slate (agents with memory)."""

    def stats(self) -> dict:
        """Cost figures for reports (e.g. ``{"train_s": 1.2}``)."""
        return {}
