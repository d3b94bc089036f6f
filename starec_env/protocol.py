"""The paper's offline leave-one-out protocol (target + sampled negatives).

For each sampled user the last interaction rated above the positive threshold
is held out; it is ranked among ``n_negatives`` items the user never touched.
Every random draw is keyed on ``(seed, user)``, so a user's candidate list is
identical for every agent and does not depend on which other users happen to
be sampled: runs with the same seed are directly comparable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from starec_env.data.model import Dataset
from starec_env.metrics import hit_rate, ndcg_single, rank_of
from starec_env.text import text_view
from starec_env.types import PAD, RankingBatch, TrainSplit

NDCG_KS = (1, 5, 10, 20)
HIT_KS = (1, 5, 10)

# Separate random streams derived from the seed (user sampling vs. per-user draws).
_SAMPLE_STREAM = 0
_USER_STREAM = 1


class ProtocolError(ValueError):
    """The dataset cannot support the requested protocol, or scores are malformed."""


@dataclass(frozen=True)
class SkipReport:
    """Why eligible-looking users were left out (reported beside results)."""

    no_positive: int
    short_history: int
    too_few_negatives: int

    def as_dict(self) -> dict:
        return {
            "no_positive": self.no_positive,
            "short_history": self.short_history,
            "too_few_negatives": self.too_few_negatives,
        }


class LeaveOneOut:
    """Leave-one-out evaluation: one held-out positive among sampled negatives.

    ``n_users=None`` (or more than are eligible) evaluates every eligible
    user. ``min_history`` is the fewest interactions a user must have before
    the target to be evaluated (an empty history gives a policy nothing to
    personalise on).
    """

    def __init__(
        self,
        dataset: Dataset,
        n_negatives: int = 19,
        n_users: int | None = 1000,
        history_len: int = 40,
        positive_threshold: float = 3.0,
        seed: int = 0,
        min_history: int = 1,
    ) -> None:
        if n_negatives < 0:
            raise ProtocolError(f"n_negatives must be >= 0, got {n_negatives}")
        if history_len < 1:
            raise ProtocolError(f"history_len must be >= 1, got {history_len}")
        if n_users is not None and n_users < 1:
            raise ProtocolError(f"n_users must be >= 1 or None, got {n_users}")
        self.dataset = dataset
        self.n_negatives = n_negatives
        self.history_len = history_len
        self.positive_threshold = positive_threshold
        self.seed = seed

        target_row, skipped, eligible = self._eligible_users(min_history)
        self.skipped = skipped
        self.n_eligible = len(eligible)
        if not len(eligible):
            raise ProtocolError(
                f"dataset {dataset.name!r}: no user has a positive (rating > {positive_threshold}) "
                f"with >= {min_history} earlier interactions and {n_negatives} unseen items; "
                f"skipped {skipped.as_dict()}"
            )
        users = self._sample(eligible, n_users)
        self.users = users
        self.target_rows = target_row[users]
        self.targets = dataset.item_arr[self.target_rows]
        self.batch, self.target_pos = self._build_batch(users, self.target_rows)
        self.split = self._build_split(users, self.target_rows)

    # -- construction -------------------------------------------------------

    def _eligible_users(self, min_history: int) -> tuple[np.ndarray, SkipReport, np.ndarray]:
        ds = self.dataset
        off = ds.user_offsets
        rows = np.arange(len(ds.interactions), dtype=np.int64)
        positive = ds.rating_arr > self.positive_threshold
        target_row = np.full(ds.n_users, -1, dtype=np.int64)
        np.maximum.at(target_row, ds.user_arr[positive], rows[positive])
        has_pos = target_row >= 0
        n_before = np.where(has_pos, target_row - off[:-1], 0)
        long_enough = n_before >= min_history
        n_seen = np.diff(off)
        unseen_ok = ds.n_items - n_seen >= self.n_negatives
        skipped = SkipReport(
            no_positive=int((~has_pos).sum()),
            short_history=int((has_pos & ~long_enough).sum()),
            too_few_negatives=int((has_pos & long_enough & ~unseen_ok).sum()),
        )
        eligible = np.flatnonzero(has_pos & long_enough & unseen_ok)
        return target_row, skipped, eligible

    def _sample(self, eligible: np.ndarray, n_users: int | None) -> np.ndarray:
        if n_users is None or n_users >= len(eligible):
            return eligible
        rng = np.random.default_rng([self.seed, _SAMPLE_STREAM])
        return np.sort(rng.choice(eligible, size=n_users, replace=False))

    def _build_batch(self, users: np.ndarray, target_rows: np.ndarray) -> tuple[RankingBatch, np.ndarray]:
        ds = self.dataset
        off = ds.user_offsets
        n, h, c = len(users), self.history_len, self.n_negatives + 1
        history = np.full((n, h), PAD, dtype=np.int64)
        ratings = np.zeros((n, h), dtype=np.float32)
        candidates = np.empty((n, c), dtype=np.int64)
        target_pos = np.empty(n, dtype=np.int64)
        for b, (u, t) in enumerate(zip(users, target_rows)):
            lo = max(off[u], t - h)
            k = t - lo
            if k:
                history[b, h - k:] = ds.item_arr[lo:t]
                ratings[b, h - k:] = ds.rating_arr[lo:t]
            rng = np.random.default_rng([self.seed, _USER_STREAM, int(u)])
            seen = ds.item_arr[off[u]:off[u + 1]]
            negatives = sample_unseen(rng, ds.n_items, seen, self.n_negatives)
            pos = int(rng.integers(c))
            candidates[b] = np.insert(negatives, pos, ds.item_arr[t])
            target_pos[b] = pos
        return RankingBatch(users.copy(), candidates, history, ratings), target_pos

    def _build_split(self, users: np.ndarray, target_rows: np.ndarray) -> TrainSplit:
        ds = self.dataset
        cut = np.full(ds.n_users, np.iinfo(np.int64).max, dtype=np.int64)
        cut[users] = target_rows
        keep = np.arange(len(ds.interactions)) < cut[ds.user_arr]
        inter = ds.interactions[keep].reset_index(drop=True)
        return TrainSplit(ds, inter, users.copy(), self.history_len)

    # -- evaluation ---------------------------------------------------------

    def ranks(self, scores: np.ndarray) -> np.ndarray:
        """0-based rank of each user's target under ``scores`` (ties count against it)."""
        scores = np.asarray(scores, dtype=np.float64)
        expected = self.batch.candidates.shape
        if scores.shape != expected:
            raise ProtocolError(f"scores have shape {scores.shape}; expected {expected} (users x candidates)")
        if not np.isfinite(scores).all():
            bad = int((~np.isfinite(scores)).any(axis=1).sum())
            raise ProtocolError(f"scores contain NaN/inf in {bad} user row(s); expected finite numbers")
        return rank_of(scores, self.target_pos)

    def per_user(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        """Per-user metric arrays (for significance tests and breakdowns)."""
        ranks = self.ranks(scores)
        out = {f"ndcg@{k}": ndcg_single(ranks, k) for k in NDCG_KS}
        out.update({f"hit@{k}": hit_rate(ranks, k) for k in HIT_KS})
        out["rank"] = ranks
        return out

    def evaluate(self, scores: np.ndarray) -> dict[str, float]:
        """Mean NDCG@1/5/10/20 and hit@1/5/10 over the evaluated users."""
        return {k: float(v.mean()) for k, v in self.per_user(scores).items() if k != "rank"}

    # -- views --------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.users)

    def text_view(self, row: int):
        """The LLM-readable view (profile, history, candidates) of one evaluated user."""
        b = self.batch
        return text_view(self.dataset, int(b.users[row]), b.history[row], b.history_ratings[row], b.candidates[row])

    def summary(self) -> dict:
        """Protocol facts reported beside results."""
        return {
            "users": len(self),
            "eligible": self.n_eligible,
            "candidates": self.n_negatives + 1,
            "history_len": self.history_len,
            "positive_threshold": self.positive_threshold,
            "seed": self.seed,
            "skipped": self.skipped.as_dict(),
            "train_interactions": len(self.split.interactions),
            "sample_fraction": self.split.fraction("sample"),
        }


def sample_unseen(rng: np.random.Generator, n_items: int, seen: np.ndarray, k: int) -> np.ndarray:
    """``k`` distinct items drawn uniformly from those not in ``seen``.

    Rejection sampling keeps this O(k) for large catalogues; when the user has
    seen most of the catalogue it falls back to choosing from the complement.
    """
    seen_set = np.unique(seen)
    n_free = n_items - len(seen_set)
    if n_free < 2 * k:
        free = np.setdiff1d(np.arange(n_items), seen_set, assume_unique=True)
        return rng.choice(free, size=k, replace=False)
    picked: list[int] = []
    chosen: set[int] = set()
    while len(picked) < k:
        draw = rng.integers(n_items, size=2 * (k - len(picked)) + 4)
        draw = draw[~np.isin(draw, seen_set)]
        for item in draw.tolist():
            if item not in chosen:
                chosen.add(item)
                picked.append(item)
                if len(picked) == k:
                    break
    return np.asarray(picked, dtype=np.int64)

