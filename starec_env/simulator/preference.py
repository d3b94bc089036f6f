"""Preference model: every user's true utility for every item.

One representation serves both worlds: utility is the dot product of a user
row and an item row of two embedding tables whose first ``n_genres`` columns
are the genre block (item side: genre weights; user side: genre affinity).
The synthetic truth is exactly of this form and the model fitted to real
ratings is mapped into it, so the response and dynamics code never needs to
know where the utilities came from (genre fatigue simply shifts the user's
genre block).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PreferenceModel:
    """``utility(users (B,), items (B, C)) -> (B, C)`` as embedding dot products."""

    user_emb: np.ndarray
    item_emb: np.ndarray
    n_genres: int
    #: Where the utilities come from ("truth" for synthetic, "fitted" for real data).
    source: str = "truth"

    def __post_init__(self) -> None:
        if self.user_emb.shape[1] != self.item_emb.shape[1]:
            raise ValueError(
                f"PreferenceModel: user and item embeddings differ in width "
                f"({self.user_emb.shape[1]} vs {self.item_emb.shape[1]})"
            )

    @property
    def n_users(self) -> int:
        return self.user_emb.shape[0]

    @property
    def n_items(self) -> int:
        return self.item_emb.shape[0]

    def utility(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True utilities (float32) of ``items[b]`` for ``users[b]``."""
        return self.utility_from(self.user_emb[np.asarray(users)], items)

    def utility_from(self, user_vectors: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Utilities for explicit (B, D) user vectors, e.g. state-shifted ones."""
        return np.einsum("bcd,bd->bc", self.item_emb[items], user_vectors)

    def full(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) utilities, for analyses on small worlds."""
        return self.user_emb[np.asarray(users)] @ self.item_emb.T

    def genre_block(self, items: np.ndarray) -> np.ndarray:
        return self.item_emb[items, : self.n_genres]
