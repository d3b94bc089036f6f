"""Response model: which shown item the user clicks, and the rating given.

Click: multinomial logit over the displayed slate plus a no-click option.
The logit of an item is its (state-dependent) utility over the temperature,
plus awareness (log exposure of the item, its long-tailed popularity), plus a
position bias that decays with the slot, plus an optional popularity boost
coupling users. Rating: the behaviour module's ordinal rating model
(thresholds on utility plus Gaussian noise), calibrated so that ratings
follow the dataset's histogram.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from starec_env.behaviour import OrdinalRatings


@dataclass(frozen=True)
class ResponseModel:
    log_exposure: np.ndarray
    temperature: float
    popularity_weight: float
    position_decay: float
    no_click_logit: float
    rating_thresholds: np.ndarray
    rating_noise: float

    def position_bias(self, slate_size: int) -> np.ndarray:
        return (-self.position_decay * np.log1p(np.arange(slate_size))).astype(np.float32)

    def click_logits(self, slate_utility: np.ndarray, slate_items: np.ndarray, boost: np.ndarray | None = None) -> np.ndarray:
        """(N, S) logits of the shown items, in display order."""
        appeal = self.popularity_weight * self.log_exposure if boost is None else self.popularity_weight * self.log_exposure + boost
        logits = slate_utility * np.float32(1.0 / self.temperature)
        logits += np.take(appeal, slate_items)
        logits += self.position_bias(slate_items.shape[1])
        return logits

    def choose(self, logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Slot index clicked per row (``S`` = no click), by inverse-CDF sampling of the MNL.

        Works slot-major ((S + 1, N)): the max, the running sum (one add per
        slot; ``np.cumsum`` along a short axis is ~10x slower) and the count
        then run across rows in vectorised passes instead of over short rows.
        Single precision: after subtracting the row max every weight is in
        (0, 1], so probabilities are exact to ~1e-7, far below sampling noise.
        """
        n, s = logits.shape
        full = np.empty((s + 1, n), np.float32)
        full[:s] = logits.T
        full[s] = self.no_click_logit
        full -= full.max(axis=0)
        np.exp(full, out=full)
        for slot in range(1, s + 1):
            full[slot] += full[slot - 1]
        u = rng.random(n, dtype=np.float32)
        u *= full[s]
        return np.minimum(np.count_nonzero(full < u, axis=0), s)

    def click_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(N, S + 1) exact MNL probabilities, last column = no click (for tests/analysis)."""
        full = np.concatenate([logits, np.full((len(logits), 1), self.no_click_logit)], axis=1).astype(np.float64)
        full -= full.max(axis=1, keepdims=True)
        expd = np.exp(full)
        return expd / expd.sum(axis=1, keepdims=True)

    @cached_property
    def rating(self) -> OrdinalRatings:
        """The rating model the thresholds and noise define."""
        return OrdinalRatings(self.rating_thresholds, self.rating_noise)

    def rate(self, utility: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """1..5 star ratings for items with the given true utilities."""
        return self.rating.rate(utility, rng)

    def expected_rating_hist(self, utility: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Share of 1..5 stars the model gives to items with these utilities."""
        ratings = self.rate(utility, rng).astype(np.int64)
        return np.bincount(ratings, minlength=6)[1:] / max(1, len(ratings))
