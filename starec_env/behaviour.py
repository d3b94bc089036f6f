"""Behaviour models: how simulated users value, choose and rate items.

The simulator's split, after RecSim: a *user model* gives every user's
utility for every item, the *item model* is the item side of that utility
(genre weights, long-tailed exposure), a *choice model* turns utilities into
which items a user picks, one after another, and a *rating model* turns the
utility of a chosen item into stars. :class:`SyntheticTruth` is the exact,
typed ground truth of a synthetic world built from them
(``Dataset.truth``).

The module sits below both its users and imports nothing from the package:
the synthetic generator (``starec_env.data.synthetic``) samples its log from
these models and the simulator (``starec_env.simulator``) judges agents by
them, so layers stay one-way: behaviour -> data -> simulator -> env.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np

# --- Item model ------------------------------------------------------------


def genre_weights(genre_matrix: np.ndarray) -> np.ndarray:
    """0/1 item-genre matrix -> rows scaled to unit norm (multi-genre items split their weight)."""
    counts = genre_matrix.sum(axis=1, keepdims=True)
    return (genre_matrix / np.sqrt(np.maximum(counts, 1.0))).astype(np.float32)


def zipf_log_exposure(rank: np.ndarray, alpha: float) -> np.ndarray:
    """Centred log exposure of items at the given popularity ranks (0 = most exposed), Zipf exponent ``alpha``."""
    log_exposure = -alpha * np.log1p(rank)
    return log_exposure - log_exposure.mean()


# --- User model ------------------------------------------------------------


class UserModel(ABC):
    """Users' true utility for items: the taste both choices and ratings follow."""

    @abstractmethod
    def utility(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(B,) users x (B, C) items -> (B, C) utilities."""

    @abstractmethod
    def full(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) utilities of the whole catalogue, for choices over it."""


@dataclass(frozen=True)
class EmbeddingUserModel(UserModel):
    """Utility as the dot product of a user row and an item row of two embedding tables.

    Both worlds share this form (the synthetic truth is exactly of it, fitted
    models are mapped into it), so code downstream never needs to know where
    the utilities came from.
    """

    user_emb: np.ndarray
    item_emb: np.ndarray

    def __post_init__(self) -> None:
        if self.user_emb.shape[1] != self.item_emb.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: user and item embeddings differ in width "
                f"({self.user_emb.shape[1]} vs {self.item_emb.shape[1]})"
            )

    @classmethod
    def from_parts(
        cls, genre_affinity: np.ndarray, user_factors: np.ndarray, item_genres: np.ndarray,
        item_factors: np.ndarray, quality: np.ndarray,
    ) -> "EmbeddingUserModel":
        """The synthetic layout: ``user_emb = [genre affinity, latent factors, 1]`` and
        ``item_emb = [genre weights of the 0/1 item_genres, latent factors, quality]``."""
        user_emb = np.concatenate([genre_affinity, user_factors, np.ones((len(genre_affinity), 1), np.float32)], axis=1)
        item_emb = np.concatenate([genre_weights(item_genres), item_factors, quality[:, None]], axis=1)
        return cls(user_emb.astype(np.float32), item_emb.astype(np.float32))

    @property
    def n_users(self) -> int:
        return self.user_emb.shape[0]

    @property
    def n_items(self) -> int:
        return self.item_emb.shape[0]

    def utility(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.einsum("bcd,bd->bc", self.item_emb[items], self.user_emb[np.asarray(users)], optimize=False)

    def full(self, users: np.ndarray) -> np.ndarray:
        return self.user_emb[np.asarray(users)] @ self.item_emb.T


# --- Choice model ----------------------------------------------------------


def consume_plackett_luce(
    logit_fn: Callable[[np.ndarray], np.ndarray], n_rows: int, n_items: int, lengths: np.ndarray,
    rng: np.random.Generator, chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Sequential MNL choice without replacement over the whole catalogue.

    ``logit_fn(rows) -> (len(rows), n_items)`` gives choice logits. Row r picks
    ``lengths[r]`` distinct items; by the Gumbel-top-k identity, sorting
    logits + Gumbel noise gives exactly the Plackett-Luce choice order, so this
    is one vectorised pass instead of a Python loop over steps. Returns
    (row index, item) arrays in choice order per row.
    """
    lengths = np.minimum(np.asarray(lengths, dtype=np.int64), n_items)
    rows_out, items_out = [], []
    for lo in range(0, n_rows, chunk):
        rows = np.arange(lo, min(lo + chunk, n_rows))
        keys = logit_fn(rows) + rng.gumbel(size=(len(rows), n_items)).astype(np.float32)
        top = int(lengths[rows].max())
        if top < n_items:
            part = np.argpartition(-keys, top - 1, axis=1)[:, :top]
        else:
            part = np.broadcast_to(np.arange(n_items), keys.shape)
        order = np.argsort(-np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
        chosen = np.take_along_axis(part, order, axis=1)
        keep = np.arange(top)[None, :] < lengths[rows][:, None]
        rows_out.append(np.broadcast_to(rows[:, None], chosen.shape)[keep])
        items_out.append(chosen[keep])
    return np.concatenate(rows_out), np.concatenate(items_out)


class ChoiceModel(ABC):
    """Which items users pick from the catalogue: a logit per item, choices in proportion
    to ``exp(logit)`` among the items not yet consumed (Plackett-Luce)."""

    @property
    @abstractmethod
    def n_items(self) -> int:
        """Size of the catalogue the logits cover."""

    @abstractmethod
    def logits(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) choice logits."""

    def sequences(
        self, users: np.ndarray, lengths: np.ndarray, rng: np.random.Generator, chunk: int = 2048
    ) -> tuple[np.ndarray, np.ndarray]:
        """``users[r]`` consumes ``lengths[r]`` distinct items; (position r, item) arrays in choice order."""
        users = np.asarray(users)
        return consume_plackett_luce(lambda rows: self.logits(users[rows]), len(users), self.n_items, lengths, rng, chunk)


@dataclass(frozen=True)
class MultinomialLogit(ChoiceModel):
    """``logit = utility / temperature + item_bias``; the bias is the item's awareness,
    ``popularity_weight * log_exposure``, in float32."""

    user_model: UserModel
    temperature: float
    item_bias: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.item_bias)

    def logits(self, users: np.ndarray) -> np.ndarray:
        return self.user_model.full(users) / np.float32(self.temperature) + self.item_bias


# --- Rating model ----------------------------------------------------------


def calibrate_thresholds(scores: np.ndarray, hist: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """Four ordinal cut points so that rating ``1 + #(score > cut)`` follows ``hist``."""
    hist = np.asarray(hist, dtype=np.float64)
    cum = np.cumsum(hist / hist.sum())[:-1]
    return np.quantile(np.asarray(scores, dtype=np.float64), cum).astype(np.float32)


def ordinal_ratings(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Map latent rating scores to 1..5 stars through the cut points."""
    return (1 + np.searchsorted(thresholds, scores, side="left")).astype(np.float32)


class RatingModel(ABC):
    """The stars a user gives an item they consumed, given its utility."""

    @abstractmethod
    def rate(self, utility: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n,) float32 ratings in 1..5 for items with the given utilities."""


@dataclass(frozen=True)
class OrdinalRatings(RatingModel):
    """Stars = ``1 + #(utility + noise > cut)``: Gaussian noise on the utility, four cut points."""

    thresholds: np.ndarray
    noise: float

    def rate(self, utility: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        latent = rng.standard_normal(len(utility), dtype=np.float32)
        latent *= np.float32(self.noise)
        latent += utility
        return ordinal_ratings(latent, self.thresholds)


# --- Ground truth ----------------------------------------------------------


@dataclass(frozen=True)
class SyntheticTruth(EmbeddingUserModel):
    """Exact ground truth of a synthetic world.

    Utility of user u for item i is ``user_emb[u] @ item_emb[i]`` in the
    layout of :meth:`EmbeddingUserModel.from_parts`; the first ``n_genres``
    columns are the genre block (the simulator's fatigue acts there), column
    j naming ``genre_names[j]``. Choices follow :class:`MultinomialLogit` with
    ``temperature`` and ``popularity_weight * log_exposure``; ratings follow
    :class:`OrdinalRatings` with ``rating_thresholds`` and ``rating_noise``.
    """

    n_genres: int
    log_exposure: np.ndarray
    rating_thresholds: np.ndarray
    rating_noise: float
    temperature: float
    popularity_weight: float
    genre_names: tuple[str, ...]

    def subset(self, users: np.ndarray, items: np.ndarray) -> "SyntheticTruth":
        """The truth restricted (and re-indexed) to the given users and items."""
        return SyntheticTruth(
            self.user_emb[users], self.item_emb[items], self.n_genres, self.log_exposure[items],
            self.rating_thresholds, self.rating_noise, self.temperature, self.popularity_weight, self.genre_names,
        )
