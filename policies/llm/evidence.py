"""Collaborative evidence lines for LLM prompts, from the rule-based agents.

Small language models know little about particular movies, but they can
reason over explicit evidence: how popular a candidate is, how well its
genres match the user's rated history, how similar it is to what the user
watched (item-kNN). Each signal is computed by the corresponding rule-based
agent (``pop``, ``genre``, ``itemknn`` from :mod:`policies.rule_based`,
built through the policy registry), so the LLM sees exactly the numbers the
baselines rank by. The evidence is shown as a rank among the candidates
("#2 of 20 (high)"), which is scale-free and cheap to read. A config switch
turns it off for the no-evidence ablation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from policies.base import Policy, PolicyContext
from policies.registry import make_policy
from starec_env.configtools import config_from_dict
from starec_env.types import RankingBatch, TrainSplit

#: Signals available, in the order they are printed.
SIGNALS = ("pop", "genre", "itemknn")
#: Scores this close to zero mean "no signal" (the rule-based agents add a
#: tie-breaker of at most 1e-6, so a zero similarity stays below this).
NO_SIGNAL = 1e-5
#: Options for the agents behind each signal: the genre agent's popularity
#: blend is switched off, since popularity has its own evidence line and the
#: model should see the pure content match.
SCORER_OPTIONS = {"genre": {"pop_weight": 0.0}}


@dataclass(frozen=True)
class EvidenceConfig:
    """Which evidence to show; ``enabled=False`` is the no-evidence ablation."""

    enabled: bool = True
    signals: tuple[str, ...] = SIGNALS

    def __post_init__(self) -> None:
        unknown = [s for s in self.signals if s not in SIGNALS]
        if unknown:
            raise ValueError(f"unknown evidence signal(s) {unknown}; expected some of {list(SIGNALS)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvidenceConfig":
        return config_from_dict(cls, data, "evidence")


@dataclass(frozen=True)
class Signal:
    """One signal for one candidate: 1-based rank among the candidates
    (0 = no signal), its tercile level and the raw score."""

    name: str
    rank: int
    level: str
    score: float


@dataclass(frozen=True)
class EvidenceTable:
    """Evidence for a batch: per signal, (B, C) raw scores and ranks (0 = none)."""

    scores: dict[str, np.ndarray]
    ranks: dict[str, np.ndarray]

    def signals(self, row: int, cand: int) -> list[Signal]:
        n = next(iter(self.ranks.values())).shape[1] if self.ranks else 0
        out = []
        for name, ranks in self.ranks.items():
            rank = int(ranks[row, cand])
            out.append(Signal(name, rank, level_of(rank, n), float(self.scores[name][row, cand])))
        return out


def level_of(rank: int, n: int) -> str:
    """"high" / "medium" / "low" by tercile of a 1-based rank; "none" for 0."""
    if rank <= 0:
        return "none"
    if rank <= max(1, round(n / 3)):
        return "high"
    return "medium" if rank <= round(2 * n / 3) else "low"


def candidate_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based competition ranks per row (ties share the best rank); 0 where
    the score carries no signal (|score| below :data:`NO_SIGNAL`)."""
    scores = np.asarray(scores, dtype=np.float64)
    ranks = 1 + (scores[:, None, :] > scores[:, :, None]).sum(axis=2)
    return np.where(np.abs(scores) < NO_SIGNAL, 0, ranks)


class EvidenceBuilder:
    """Computes evidence with the rule-based agents for batches of users.

    ``scorers`` overrides the agents (name -> Policy); by default they are
    built from the registry with ``ctx``. Call :meth:`fit` with the training
    split of an offline protocol so held-out targets do not leak; without it
    the agents use the whole dataset (right for the online environment).
    """

    def __init__(
        self,
        ctx: PolicyContext,
        config: EvidenceConfig | None = None,
        scorers: dict[str, Policy] | None = None,
    ) -> None:
        self.config = config or EvidenceConfig()
        self.ctx = ctx
        self._scorers = dict(scorers or {})

    def _scorer(self, name: str) -> Policy:
        if name not in self._scorers:
            options = {**self.ctx.options, **SCORER_OPTIONS.get(name, {})}
            self._scorers[name] = make_policy(name, replace(self.ctx, options=options))
        return self._scorers[name]

    def fit(self, split: TrainSplit) -> None:
        if self.config.enabled:
            for name in self.config.signals:
                self._scorer(name).fit(split)

    def table(self, batch: RankingBatch) -> EvidenceTable:
        scores = {name: np.asarray(self._scorer(name).score(batch), dtype=np.float64) for name in self.config.signals}
        return EvidenceTable(scores, {name: candidate_ranks(s) for name, s in scores.items()})

    def lines(self, batch: RankingBatch) -> list[list[str]] | None:
        """One evidence line per candidate per row, or None when disabled."""
        if not self.config.enabled or not self.config.signals:
            return None
        return render_lines(self.table(batch))


def render_lines(table: EvidenceTable) -> list[list[str]]:
    """Evidence lines from ``templates/evidence.j2`` for every row and candidate."""
    from policies.llm.prompts import template_module

    line = template_module("evidence").line
    first = next(iter(table.ranks.values()))
    b, c = first.shape
    return [[str(line(table.signals(row, cand), c)) for cand in range(c)] for row in range(b)]
