"""Batched data types exchanged between the environment, protocols and policies.

Everything is arrays over a batch of users, so the same policy code serves
the offline protocol, the online simulation and the PettingZoo dict API.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from starec_env.data.model import Dataset

PAD = -1  # padding value for item indices in histories


@dataclass(frozen=True)
class RankingBatch:
    """What a policy sees when asked to rank.

    ``users`` (B,) user indices; ``candidates`` (B, C) item indices;
    ``history`` (B, H) item indices, most recent last, left-padded with
    :data:`PAD`; ``history_ratings`` (B, H) ratings, 0 where padded.
    """

    users: np.ndarray
    candidates: np.ndarray
    history: np.ndarray
    history_ratings: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def take(self, rows: np.ndarray) -> "RankingBatch":
        """The sub-batch of the given rows (e.g. the users still alive)."""
        return RankingBatch(self.users[rows], self.candidates[rows], self.history[rows], self.history_ratings[rows])


@dataclass(frozen=True)
class Feedback:
    """What the user did with what was shown, for policies with memory.

    ``shown`` (B, S) item indices displayed in order; ``clicked`` (B,) the
    clicked item index or -1 for no click; ``rating`` (B,) the rating given
    (0 when no click).
    """

    users: np.ndarray
    shown: np.ndarray
    clicked: np.ndarray
    rating: np.ndarray


@dataclass(frozen=True)
class TrainSplit:
    """Training data under an evaluation protocol.

    ``interactions`` holds every user's training interactions (each
    evaluation user's held-out target and anything after it removed);
    ``sample_users`` are the sampled evaluation users. Learned policies train
    on :meth:`for_variant`: "sample" is the paper's small-data setting (the
    sampled users' last ``history_len`` training interactions each, e.g.
    1,000 users x 40 = 40,000 interactions); "full" is every user's whole
    training history.
    """

    dataset: Dataset
    interactions: pd.DataFrame
    sample_users: np.ndarray
    history_len: int | None = 40

    def for_variant(self, variant: str) -> pd.DataFrame:
        if variant == "full":
            return self.interactions
        if variant == "sample":
            inter = self.interactions[self.interactions["user"].isin(self.sample_users)]
            if self.history_len is not None:
                from_end = inter.groupby("user", sort=False).cumcount(ascending=False)
                inter = inter[from_end.to_numpy() < self.history_len]
            return inter
        raise ValueError(f"unknown training variant {variant!r}: expected 'sample' or 'full'")

    def fraction(self, variant: str) -> float:
        """Share of all training interactions a variant uses (reported beside results)."""
        return len(self.for_variant(variant)) / max(1, len(self.interactions))


@dataclass(frozen=True)
class StepOutcome:
    """Everything a reward function may look at after one environment step.

    ``batch`` is what the agents ranked; ``scores`` (N, C) their scores;
    ``slate`` (N, S) the items shown in display order and ``slate_pos``
    (N, S) their candidate positions; ``clicked`` (N,) the clicked item or
    -1; ``rating`` (N,) the rating (0 without click); ``utilities`` (N, C)
    the simulator's current true utilities of the candidates (online they
    are computed only for reward functions whose ``needs_utilities``
    attribute is not False; None otherwise);
    ``target_pos`` (N,) the held-out target's candidate position in offline
    mode (None online); ``alive`` (N,) the rows that acted this step.
    """

    batch: RankingBatch
    scores: np.ndarray
    slate: np.ndarray
    slate_pos: np.ndarray
    clicked: np.ndarray
    rating: np.ndarray
    utilities: np.ndarray | None
    target_pos: np.ndarray | None
    alive: np.ndarray
