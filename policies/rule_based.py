"""Rule-based reference agents: random, popularity, genre affinity, item-kNN.

They are the floor every learned or LLM agent must beat. All of them score
from the batch alone (history in, scores out) plus statistics of the training
interactions, so they work unchanged for users never seen in training, such
as fresh users of the online environment.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from policies.base import Policy, PolicyContext
from policies.options import at_least, check_types, read, takes
from starec_env.data.model import Dataset
from starec_env.types import PAD, RankingBatch, TrainSplit

#: Weight of the popularity tie-breaker added to content scores: small enough
#: never to override a real preference difference, large enough to order ties.
TIE_BREAK = 1e-6


def item_counts(n_items: int, interactions: pd.DataFrame) -> np.ndarray:
    """Interaction count per item index in ``interactions``."""
    return np.bincount(interactions["item"].to_numpy(np.int64), minlength=n_items).astype(np.float64)


def popularity_prior(counts: np.ndarray) -> np.ndarray:
    """log-popularity scaled into [0, 1]; the shared fallback of every agent."""
    logp = np.log1p(counts)
    top = logp.max() if len(logp) else 0.0
    return logp / top if top > 0 else logp


class _PopularityAware(Policy):
    """Holds training popularity; until ``fit`` it uses the whole dataset's counts."""

    def __init__(self, dataset: Dataset, variant: str = "full") -> None:
        self.dataset = dataset
        self.variant = variant
        self.prior = popularity_prior(dataset.item_popularity)

    def fit(self, split: TrainSplit) -> None:
        self.prior = popularity_prior(item_counts(self.dataset.n_items, split.for_variant(self.variant)))


class RandomPolicy(Policy):
    """Uniform random scores: the chance level of every metric."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def score(self, batch: RankingBatch) -> np.ndarray:
        return self.rng.random(batch.candidates.shape)


class PopularityPolicy(_PopularityAware):
    """Most interacted-with items first (the paper's Pop baseline)."""

    def score(self, batch: RankingBatch) -> np.ndarray:
        return self.prior[batch.candidates]


class GenreAffinityPolicy(_PopularityAware):
    """Cosine between a candidate's genres and the user's rating-weighted genre taste.

    Each history item votes for its genres with weight ``rating - center``,
    so disliked items push their genres down. Users pick among items they
    have heard of, so the affinity is blended with ``pop_weight`` times the
    popularity prior (0 gives pure content affinity). Users without history
    (or without a genre signal) get the popularity order.
    """

    def __init__(self, dataset: Dataset, variant: str = "full", center: float = 2.5, pop_weight: float = 2.0) -> None:
        super().__init__(dataset, variant)
        self.center = center
        self.pop_weight = pop_weight
        g = dataset.item_genres.astype(np.float64)
        norms = np.linalg.norm(g, axis=1, keepdims=True)
        self.genres_unit = np.divide(g, norms, out=np.zeros_like(g), where=norms > 0)

    def score(self, batch: RankingBatch) -> np.ndarray:
        valid = batch.history != PAD
        weights = np.where(valid, batch.history_ratings - self.center, 0.0)
        hist_genres = self.genres_unit[np.where(valid, batch.history, 0)]  # (B, H, G)
        taste = np.einsum("bh,bhg->bg", weights, hist_genres)
        norm = np.linalg.norm(taste, axis=1, keepdims=True)
        taste = np.divide(taste, norm, out=np.zeros_like(taste), where=norm > 0)
        affinity = np.einsum("bg,bcg->bc", taste, self.genres_unit[batch.candidates])
        return affinity + (self.pop_weight or TIE_BREAK) * self.prior[batch.candidates]


class ItemKNNPolicy(_PopularityAware):
    """Sum of item-item cosine similarities between a candidate and the history.

    Similarity is over the users who interacted with both items in training.
    Small catalogues precompute the item x item matrix. Large ones never
    build it: for a chunk of users the scorer spreads each history item's
    users into a (chunk x users) vote table, then gathers the votes of each
    candidate's users, so memory stays O(chunk x users + nnz).
    """

    #: Catalogues up to this size get a precomputed dense similarity matrix
    #: (fast repeated scoring in online sessions); larger ones use the sparse path.
    DENSE_MAX_ITEMS = 5000

    def __init__(self, dataset: Dataset, variant: str = "full", chunk_cells: int = 4_000_000, dense: bool | None = None) -> None:
        super().__init__(dataset, variant)
        self.chunk_cells = chunk_cells
        self.dense = dataset.n_items <= self.DENSE_MAX_ITEMS if dense is None else dense
        self._index(dataset.interactions)

    def fit(self, split: TrainSplit) -> None:
        super().fit(split)
        self._index(split.for_variant(self.variant))

    def _index(self, interactions: pd.DataFrame) -> None:
        pairs = np.unique(interactions[["item", "user"]].to_numpy(np.int64), axis=0)
        counts = np.bincount(pairs[:, 0], minlength=self.dataset.n_items)
        self.item_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.item_users = pairs[:, 1]
        self.inv_sqrt_deg = np.divide(1.0, np.sqrt(counts), out=np.zeros(len(counts)), where=counts > 0)
        self.n_users = self.dataset.n_users
        self.similarity = None
        if self.dense:
            x = np.zeros((self.dataset.n_items, self.n_users), dtype=np.float32)
            x[pairs[:, 0], pairs[:, 1]] = 1.0
            scale = self.inv_sqrt_deg.astype(np.float32)
            self.similarity = (x @ x.T) * scale[:, None] * scale[None, :]

    def score(self, batch: RankingBatch) -> np.ndarray:
        if self.similarity is not None:
            valid = batch.history != PAD
            pair = self.similarity[batch.candidates[:, :, None], np.where(valid, batch.history, 0)[:, None, :]]
            knn = (pair * valid[:, None, :]).sum(axis=2, dtype=np.float64)
            return knn + TIE_BREAK * self.prior[batch.candidates]
        n = len(batch)
        step = max(1, self.chunk_cells // max(1, self.n_users))
        out = np.empty(batch.candidates.shape, dtype=np.float64)
        for lo in range(0, n, step):
            out[lo:lo + step] = self._score_chunk(batch.history[lo:lo + step], batch.candidates[lo:lo + step])
        return out + TIE_BREAK * self.prior[batch.candidates]

    def _score_chunk(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        b = len(history)
        rows, cols = np.nonzero(history != PAD)
        hist_items = history[rows, cols]
        owner, users = _expand(self.item_offsets, self.item_users, hist_items)
        cell = rows[owner] * self.n_users + users
        weights = self.inv_sqrt_deg[hist_items][owner]
        votes = np.bincount(cell, weights=weights, minlength=b * self.n_users).reshape(b, self.n_users)
        flat = candidates.ravel()
        owner, users = _expand(self.item_offsets, self.item_users, flat)
        per_cand = np.bincount(owner, weights=votes[owner // candidates.shape[1], users], minlength=len(flat))
        return (per_cand * self.inv_sqrt_deg[flat]).reshape(candidates.shape)


def _expand(offsets: np.ndarray, values: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the CSR rows of ``keys``: (position in ``keys``, value) per entry."""
    starts, lengths = offsets[keys], offsets[keys + 1] - offsets[keys]
    owner = np.repeat(np.arange(len(keys)), lengths)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(keys) else np.zeros(0, np.int64)
    idx = np.arange(lengths.sum()) - np.repeat(first - starts, lengths)
    return owner, values[idx]


VARIANTS = ("full", "sample")


@dataclass(frozen=True)
class VariantOption:
    """``variant``: the training interactions a statistic is counted on -
    every user's ("full") or the evaluated users' only ("sample")."""

    variant: str = "full"

    def __post_init__(self) -> None:
        check_types(self)
        if self.variant not in VARIANTS:
            raise ValueError(f"variant: expected one of {list(VARIANTS)}, got {self.variant!r}")


@dataclass(frozen=True)
class GenreOptions:
    """The genre agent's blend: history votes are ``rating - center``; ``pop_weight`` x popularity is added."""

    center: float = 2.5
    pop_weight: float = 2.0

    def __post_init__(self) -> None:
        check_types(self)
        at_least(self, 0.0, "pop_weight")


@takes()
def make_random(ctx: PolicyContext) -> Policy:
    return RandomPolicy(ctx.rng(salt=1))


@takes(VariantOption)
def make_popularity(ctx: PolicyContext) -> Policy:
    return PopularityPolicy(ctx.dataset, read(VariantOption, ctx.options).variant)


@takes(VariantOption, GenreOptions)
def make_genre(ctx: PolicyContext) -> Policy:
    opts = read(GenreOptions, ctx.options)
    return GenreAffinityPolicy(ctx.dataset, read(VariantOption, ctx.options).variant, float(opts.center), float(opts.pop_weight))


@takes(VariantOption)
def make_itemknn(ctx: PolicyContext) -> Policy:
    return ItemKNNPolicy(ctx.dataset, read(VariantOption, ctx.options).variant)
