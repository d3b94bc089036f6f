"""The paper's preprocessing: k-core filtering and optional user sampling.

History truncation (``max_history``) and the positive threshold are applied
downstream (protocol, environment) where histories are built; they are
stored in ``ds.meta["preprocess"]`` so every layer reads the same values.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

import numpy as np

from starec_env.configtools import config_from_dict
from starec_env.data.errors import PreprocessError
from starec_env.data.model import Dataset


@dataclass
class PreprocessConfig:
    """``kcore``: keep users and items with >= k interactions, iterated to a
    fixed point (0 or 1 keeps everything); ``max_history``: most recent items
    a history keeps; ``positive_threshold``: a rating strictly above it is a
    positive; ``max_users``: sample this many users (seeded) after k-core."""

    kcore: int = 10
    max_history: int = 40
    positive_threshold: float = 3.0
    max_users: int | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.kcore) or self.kcore < 0:
            raise ValueError(f"PreprocessConfig.kcore: expected an integer >= 0, got {self.kcore!r}")
        if not _is_int(self.max_history) or self.max_history < 1:
            raise ValueError(f"PreprocessConfig.max_history: expected an integer >= 1, got {self.max_history!r}")
        threshold = self.positive_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ValueError(f"PreprocessConfig.positive_threshold: expected a finite number, got {threshold!r}")
        if self.max_users is not None and (not _is_int(self.max_users) or self.max_users < 1):
            raise ValueError(f"PreprocessConfig.max_users: expected an integer >= 1 or None, got {self.max_users!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "PreprocessConfig":
        """Build from a TOML table, refusing unknown keys (a typo must not be silently ignored)."""
        return config_from_dict(cls, values, "preprocess")


def _is_int(value: Any) -> bool:
    """An integer that is not a bool (TOML's ``true`` must not pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def kcore_rows(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the interactions in the k-core of the user-item graph.

    Removing a sparse user can push an item below k and vice versa, so the
    filter repeats until nothing changes; counts only fall, so it terminates.
    """
    alive = np.ones(len(users), dtype=bool)
    if k <= 1:
        return alive
    n_users = int(users.max(initial=-1)) + 1
    n_items = int(items.max(initial=-1)) + 1
    while True:
        user_count = np.bincount(users[alive], minlength=n_users)
        item_count = np.bincount(items[alive], minlength=n_items)
        keep = alive & (user_count[users] >= k) & (item_count[items] >= k)
        if keep.sum() == alive.sum():
            return keep
        alive = keep


def preprocess(ds: Dataset, cfg: PreprocessConfig, rng: np.random.Generator) -> Dataset:
    """k-core filter, then sample ``cfg.max_users`` users with ``rng``.

    Users and items left without interactions are dropped; Dataset.subset
    keeps a synthetic world's ground truth aligned.
    """
    stats = {"input": _counts(ds)}
    rows = kcore_rows(ds.user_arr, ds.item_arr, cfg.kcore)
    if not rows.all():
        if not rows.any():
            raise PreprocessError(
                f"{cfg.kcore}-core filtering leaves dataset {ds.name!r} empty "
                f"({ds.n_users} users, {ds.n_items} items, {len(ds.interactions)} interactions): lower kcore"
            )
        ds = ds.subset(np.unique(ds.user_arr[rows]), np.unique(ds.item_arr[rows]))
    stats["kcore"] = _counts(ds)
    if cfg.max_users is not None and ds.n_users > cfg.max_users:
        chosen = np.sort(rng.choice(ds.n_users, size=cfg.max_users, replace=False))
        chosen_rows = np.isin(ds.user_arr, chosen)
        ds = ds.subset(chosen, np.unique(ds.item_arr[chosen_rows]))
        stats["sampled"] = _counts(ds)
    meta = dict(ds.meta)
    meta["preprocess"] = asdict(cfg)
    meta["preprocess_stats"] = stats
    return replace(ds, meta=meta)


def _counts(ds: Dataset) -> dict[str, int]:
    return {"users": ds.n_users, "items": ds.n_items, "interactions": len(ds.interactions)}
