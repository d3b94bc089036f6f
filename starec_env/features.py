"""Feature observation: a flat float32 vector per user that a generic learner can use.

The dict observation carries raw item ids, which an MLP learner (SB3 one-hot
encodes them) cannot generalise over. This layout describes every candidate
by what a recommender knows about it *relative to this user*, plus a few
numbers about the user's own session; no ids. It is computed for the whole
batch at once, row by row independent, so the dict API, the single-user env
and the vector env give exactly the same vector for the same user state.

Per candidate (:data:`CANDIDATE_FEATURES`, range in brackets):

- ``popularity`` [0, 1]: log(1 + interactions) / log(1 + max), from the logged data;
- ``genre_match`` [-1, 1]: cosine between the candidate's genres and the
  user's rating-weighted genre taste (each history item votes with
  ``rating - 2.5``, so disliked genres count against);
- ``genre_overlap`` [0, 1]: cosine with the plain genre counts of the history;
- ``similarity`` [-1, 1]: cosine between the candidate's collaborative
  embedding and the mean embedding of the history (embeddings: a seeded
  truncated SVD of the degree-normalised user-item matrix of the logged data);
- ``liked_similarity`` [-1, 1]: the same against the rating-weighted history;
- ``fatigue`` [0, 1]: genre overlap with the last items consumed, decaying by
  :data:`FATIGUE_DECAY` per position (what the user has just had a lot of);
- ``recency`` [-1, 1]: embedding cosine with the most recent history item.

Per user (:data:`USER_FEATURES`, all in [0, 1]): ``history_fill`` (share of
the history window used), ``mean_rating`` (/5), ``progress`` (episode step /
``max_cycles``), ``click_rate`` (clicks / steps this episode),
``miss_streak`` (slates in a row without a click, /10, capped) and
``last_rating`` (/5, 0 without a click).

The vector is candidate-major: ``obs[c * F + f]`` is feature ``f`` of
candidate ``c``; the user block follows at ``C * F``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from starec_env.data.model import Dataset
from starec_env.types import PAD, RankingBatch

CANDIDATE_FEATURES = (
    "popularity", "genre_match", "genre_overlap", "similarity", "liked_similarity", "fatigue", "recency",
)
USER_FEATURES = ("history_fill", "mean_rating", "progress", "click_rate", "miss_streak", "last_rating")
_CANDIDATE_LOW = np.array([0, -1, 0, -1, -1, 0, -1], np.float32)
#: Rating that counts as neutral when weighting history items (the genre baseline's centre).
RATING_CENTER = 2.5
FATIGUE_DECAY = 0.7
FATIGUE_WINDOW = 10
MISS_CAP = 10
EMBEDDING_DIM = 16
_EMBEDDING_STREAM = 0xFEA7


@dataclass
class EpisodeCounters:
    """Per-row session numbers the user features read (kept by :class:`~starec_env.batched.BatchedEnv`)."""

    steps: np.ndarray
    clicks: np.ndarray
    miss_streak: np.ndarray
    last_rating: np.ndarray

    @classmethod
    def zeros(cls, n: int) -> "EpisodeCounters":
        return cls(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.float32))

    def restart(self, rows: np.ndarray) -> None:
        """New episodes in ``rows`` (the vector env's replaced users)."""
        for arr in (self.steps, self.clicks, self.miss_streak, self.last_rating):
            arr[rows] = 0

    def record(self, acted: np.ndarray, clicked: np.ndarray, rating: np.ndarray) -> None:
        """Count one step of the rows in ``acted`` with their feedback."""
        hit = clicked >= 0
        self.steps += acted
        self.clicks += acted & hit
        self.miss_streak = np.where(acted, np.where(hit, 0, self.miss_streak + 1), self.miss_streak)
        self.last_rating = np.where(acted, np.where(hit, rating, 0.0), self.last_rating).astype(np.float32)


def item_embeddings(dataset: Dataset, dim: int, seed: int) -> np.ndarray:
    """(n_items, dim) unit-norm item factors: seeded randomized SVD of D_u^-1/2 X D_i^-1/2.

    X is the binary user-item matrix of the logged interactions. Only the
    interaction arrays are touched (segment sums over sorted rows), so it
    scales to catalogues where an item x item matrix would not fit.
    """
    n_users, n_items = dataset.n_users, dataset.n_items
    users, items = dataset.user_arr, dataset.item_arr
    if len(items) == 0:
        return np.zeros((n_items, dim), np.float32)
    u_deg = np.bincount(users, minlength=n_users).astype(np.float64)
    i_deg = np.bincount(items, minlength=n_items).astype(np.float64)
    weight = 1.0 / np.sqrt(u_deg[users] * i_deg[items])
    by_item = np.argsort(items, kind="stable")
    u_off = dataset.user_offsets
    i_off = np.concatenate([[0], np.cumsum(i_deg.astype(np.int64))])

    def segment_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        out = np.zeros((len(offsets) - 1, values.shape[1]))
        filled = np.flatnonzero(offsets[1:] > offsets[:-1])
        out[filled] = np.add.reduceat(values, offsets[filled], axis=0)
        return out

    def a_times(m: np.ndarray) -> np.ndarray:  # (n_items, q) -> (n_users, q); rows are sorted by user
        return segment_sums(m[items] * weight[:, None], u_off)

    def at_times(m: np.ndarray) -> np.ndarray:  # (n_users, q) -> (n_items, q)
        return segment_sums(m[users[by_item]] * weight[by_item, None], i_off)

    q = min(dim + 8, n_items)
    rng = np.random.default_rng([seed, _EMBEDDING_STREAM])
    basis = np.linalg.qr(a_times(rng.standard_normal((n_items, q))))[0]
    for _ in range(2):  # power iterations sharpen the leading directions
        basis = np.linalg.qr(a_times(at_times(basis)))[0]
    _, sing, vt = np.linalg.svd(at_times(basis).T, full_matrices=False)
    factors = np.zeros((n_items, dim))
    k = min(dim, len(sing))
    factors[:, :k] = vt[:k].T * sing[:k]
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    return np.divide(factors, norms, out=np.zeros_like(factors), where=norms > 0).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero)."""
    norm = np.sqrt(np.einsum("nk,nk->n", x, x, optimize=False))[:, None]
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


class FeatureBuilder:
    """The feature space of a dataset and the (N, D) feature arrays of a batch (see module doc)."""

    def __init__(self, dataset: Dataset, n_candidates: int, history_len: int, seed: int = 0) -> None:
        self.n_items = dataset.n_items
        self.n_candidates, self.history_len = n_candidates, history_len
        pop = np.log1p(dataset.item_popularity)
        pop = pop / pop.max() if pop.max() > 0 else pop
        genres = dataset.item_genres.astype(np.float32)
        # One extra zero row: padded history slots (index n_items) contribute nothing.
        self.popularity = pop.astype(np.float32)
        self.n_genres = genres.shape[1]
        # Per item: unit genre vector, then unit collaborative embedding; one extra zero
        # row that padded history slots (index n_items) select.
        rows = np.hstack([_unit(genres), item_embeddings(dataset, EMBEDDING_DIM, seed)])
        self.table = np.vstack([rows, np.zeros((1, rows.shape[1]), np.float32)]).astype(np.float32)
        window = np.arange(history_len)[::-1]  # age of each history slot, newest last
        decay = np.where(window < FATIGUE_WINDOW, FATIGUE_DECAY ** window.astype(np.float32), 0.0)
        self.fatigue_weights = (decay / decay.sum()).astype(np.float32)
        f, u = len(CANDIDATE_FEATURES), len(USER_FEATURES)
        self.dim = n_candidates * f + u
        self.low = np.concatenate([np.tile(_CANDIDATE_LOW, n_candidates), np.zeros(u, np.float32)])
        self.high = np.ones(self.dim, np.float32)
        self.observation_space = spaces.Box(self.low, self.high, (self.dim,), np.float32)

    def compute(self, batch: RankingBatch, counters: EpisodeCounters, max_cycles: int) -> np.ndarray:
        """(len(batch), dim) float32 features; rows of ``counters`` align with the batch rows.

        Two gathers and two stacked matmuls: the history's item rows (genres
        and embeddings side by side) are reduced into the user's profiles by
        one (3, H) weight matrix per user, and the candidates' rows are
        multiplied by all six profiles at once. Each user's numbers depend
        only on that user's row, whatever the batch around it.
        """
        n, c = batch.candidates.shape
        g = self.n_genres
        valid = batch.history != PAD
        hist = np.where(valid, batch.history, self.n_items)
        ratings = np.where(valid, batch.history_ratings, np.float32(0.0)).astype(np.float32)
        mix = np.empty((n, 3, self.history_len), np.float32)  # rating-weighted, plain, fatigue-weighted
        np.subtract(ratings, np.float32(RATING_CENTER), out=mix[:, 0])
        mix[:, 0] *= valid
        mix[:, 1] = valid
        mix[:, 2] = self.fatigue_weights
        hist_rows = np.take(self.table, hist, axis=0)  # (N, H, G + K); padded slots are zero rows
        prof = np.matmul(mix, hist_rows)  # (N, 3, G + K)
        profiles = np.zeros((n, self.table.shape[1], 6), np.float32)
        profiles[:, :g, 0] = _unit(prof[:, 0, :g])  # genre taste (rating-weighted)
        profiles[:, :g, 1] = _unit(prof[:, 1, :g])  # genre counts
        profiles[:, g:, 2] = _unit(prof[:, 1, g:])  # mean embedding
        profiles[:, g:, 3] = _unit(prof[:, 0, g:])  # rating-weighted embedding
        profiles[:, :g, 4] = prof[:, 2, :g]  # recent genres (fatigue)
        profiles[:, g:, 5] = hist_rows[:, -1, g:]  # the latest item
        cosines = np.matmul(np.take(self.table, batch.candidates, axis=0), profiles)  # (N, C, 6)

        per_cand = np.empty((n, c, len(CANDIDATE_FEATURES)), np.float32)
        per_cand[..., 0] = np.take(self.popularity, batch.candidates)
        per_cand[..., 1:] = cosines[..., [0, 1, 2, 3, 4, 5]]
        out = np.empty((n, self.dim), np.float32)
        out[:, : per_cand[0].size] = per_cand.reshape(n, -1)
        n_valid = mix[:, 1].sum(axis=1)
        steps = counters.steps
        user = out[:, per_cand[0].size:]
        user[:, 0] = n_valid / self.history_len
        user[:, 1] = ratings.sum(axis=1) / np.maximum(n_valid, 1) / 5.0
        user[:, 2] = np.minimum(steps / max_cycles, 1.0)
        user[:, 3] = counters.clicks / np.maximum(steps, 1)
        user[:, 4] = np.minimum(counters.miss_streak, MISS_CAP) / MISS_CAP
        user[:, 5] = counters.last_rating / 5.0
        np.clip(out, self.low, self.high, out=out)  # float32 cosines may overshoot 1 by an ulp
        return out
