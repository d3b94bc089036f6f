"""The one in-memory dataset model every loader produces and every layer reads.

Items, users and interactions use dense integer indices (0..n-1) internally;
the original identifiers are kept in ``items.item_id`` / ``users.user_id`` so
results can be traced back to the source files. A synthetic world also
carries its exact ground truth (``Dataset.truth``), typed by the behaviour
module that both the generator and the simulator build on.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from starec_env.behaviour import SyntheticTruth

ITEM_COLUMNS = ("item_id", "title", "genres", "year", "description")
USER_COLUMNS = ("user_id", "age", "gender", "occupation")
INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp")
#: ``meta`` entries that count what a loader changed or filled in (reported with the summary).
LOADER_COUNTS = ("repeated_pairs_dropped", "ratings_rescaled", "placeholder_items", "placeholder_users")
log = logging.getLogger("starec_env.data")


@dataclass(frozen=True)
class Dataset:
    """A recommendation dataset: catalogue, users and their rated interactions.

    ``items``: one row per item index with columns ``item_id`` (str), ``title``
    (str), ``genres`` (tuple of str), ``year`` (int, 0 when unknown) and
    ``description`` (str, may be empty).
    ``users``: one row per user index with ``user_id`` (str) and optional
    demographics ``age`` (int, 0 unknown), ``gender`` and ``occupation`` (str,
    "" unknown).
    ``interactions``: columns ``user``, ``item`` (int indices), ``rating``
    (float, 1-5 scale) and ``timestamp`` (int), sorted by user then time.
    ``truth``: the exact ground truth of a synthetic world, aligned with the
    item and user indices (None for real data).
    """

    name: str
    items: pd.DataFrame
    users: pd.DataFrame
    interactions: pd.DataFrame
    meta: dict = field(default_factory=dict)
    truth: SyntheticTruth | None = None

    def __post_init__(self) -> None:
        for frame, cols, what in (
            (self.items, ITEM_COLUMNS, "items"),
            (self.users, USER_COLUMNS, "users"),
            (self.interactions, INTERACTION_COLUMNS, "interactions"),
        ):
            missing = [c for c in cols if c not in frame.columns]
            if missing:
                raise ValueError(f"Dataset {self.name!r}: {what} table lacks columns {missing}")
        inter = self.interactions
        if len(inter) and (
            inter["user"].min() < 0
            or inter["user"].max() >= len(self.users)
            or inter["item"].min() < 0
            or inter["item"].max() >= len(self.items)
        ):
            raise ValueError(f"Dataset {self.name!r}: interaction indices out of range")

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @cached_property
    def genre_names(self) -> tuple[str, ...]:
        """Sorted vocabulary of all genres/categories in the catalogue."""
        names = sorted({g for gs in self.items["genres"] for g in gs})
        return tuple(names)

    @cached_property
    def item_genres(self) -> np.ndarray:
        """(n_items, n_genres) float32 0/1 matrix of item genres."""
        index = {g: j for j, g in enumerate(self.genre_names)}
        mat = np.zeros((self.n_items, len(self.genre_names)), dtype=np.float32)
        for i, gs in enumerate(self.items["genres"]):
            for g in gs:
                mat[i, index[g]] = 1.0
        return mat

    @cached_property
    def user_arr(self) -> np.ndarray:
        return self.interactions["user"].to_numpy(np.int64)

    @cached_property
    def item_arr(self) -> np.ndarray:
        return self.interactions["item"].to_numpy(np.int64)

    @cached_property
    def rating_arr(self) -> np.ndarray:
        return self.interactions["rating"].to_numpy(np.float32)

    @cached_property
    def user_offsets(self) -> np.ndarray:
        """CSR offsets: user ``u``'s interactions are rows ``off[u]:off[u+1]``."""
        counts = np.bincount(self.user_arr, minlength=self.n_users)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @cached_property
    def item_popularity(self) -> np.ndarray:
        """Interaction count per item (float64)."""
        return np.bincount(self.item_arr, minlength=self.n_items).astype(np.float64)

    def user_history(self, user: int) -> pd.DataFrame:
        """The user's interactions in time order."""
        lo, hi = self.user_offsets[user], self.user_offsets[user + 1]
        return self.interactions.iloc[lo:hi]

    def subset(self, users: np.ndarray, items: np.ndarray, rows: np.ndarray | None = None) -> "Dataset":
        """Keep the given user and item indices (and interaction ``rows`` mask).

        Indices are re-densified in the given order. The ground truth
        (synthetic worlds) is subset alongside so it stays aligned.
        """
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        umap = np.full(self.n_users, -1, dtype=np.int64)
        umap[users] = np.arange(len(users))
        imap = np.full(self.n_items, -1, dtype=np.int64)
        imap[items] = np.arange(len(items))
        inter = self.interactions
        keep = (umap[self.user_arr] >= 0) & (imap[self.item_arr] >= 0)
        if rows is not None:
            keep &= np.asarray(rows, dtype=bool)
        inter = inter[keep].copy()
        inter["user"] = umap[inter["user"].to_numpy()]
        inter["item"] = imap[inter["item"].to_numpy()]
        inter = inter.sort_values(["user", "timestamp", "item"], kind="stable").reset_index(drop=True)
        return Dataset(
            self.name,
            self.items.iloc[items].reset_index(drop=True),
            self.users.iloc[users].reset_index(drop=True),
            inter,
            dict(self.meta),
            None if self.truth is None else self.truth.subset(users, items),
        )

    def summary(self) -> dict:
        """Basic statistics, for logs and reports."""
        n = len(self.interactions)
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n,
            "density": n / max(1, self.n_users * self.n_items),
            "mean_rating": float(self.rating_arr.mean()) if n else float("nan"),
            "loader": {k: self.meta[k] for k in LOADER_COUNTS if k in self.meta},
        }


def build_dataset(
    name: str,
    items: pd.DataFrame,
    users: pd.DataFrame,
    interactions: pd.DataFrame,
    meta: dict | None = None,
) -> Dataset:
    """Index raw tables into a :class:`Dataset`.

    ``interactions`` must carry raw ``user_id`` / ``item_id`` columns (str) and
    ``rating`` / ``timestamp``. Interactions whose item or user is unknown to
    the metadata tables get a placeholder row (many real dumps are
    incomplete), counted in ``meta["placeholder_items"]`` / ``["placeholder_users"]``
    and logged when a table was given; items/users without interactions are
    dropped. Missing optional columns are filled with "unknown" values.
    """
    meta = dict(meta or {})
    inter = interactions.copy()
    inter["user_id"] = inter["user_id"].astype(str)
    inter["item_id"] = inter["item_id"].astype(str)

    items = _with_defaults(items, ITEM_COLUMNS, {"title": "", "genres": (), "year": 0, "description": ""})
    users = _with_defaults(users, USER_COLUMNS, {"age": 0, "gender": "", "occupation": ""})
    items["item_id"] = items["item_id"].astype(str)
    users["user_id"] = users["user_id"].astype(str)
    items = items.drop_duplicates("item_id", keep="first")
    users = users.drop_duplicates("user_id", keep="first")

    used_items = pd.Index(inter["item_id"].unique())
    used_users = pd.Index(inter["user_id"].unique())
    missing_items = used_items.difference(pd.Index(items["item_id"]))
    missing_users = used_users.difference(pd.Index(users["user_id"]))
    meta["placeholder_items"], meta["placeholder_users"] = len(missing_items), len(missing_users)
    for what, missing, table in (("items", missing_items, items), ("users", missing_users, users)):
        if len(missing) and len(table):
            log.warning("%s: %d rated %s are missing from its %s table and get placeholders", name, len(missing), what, what[:-1])
    if len(missing_items):
        extra = pd.DataFrame({"item_id": missing_items, "title": [f"Item {i}" for i in missing_items]})
        items = pd.concat([items, _with_defaults(extra, ITEM_COLUMNS, {"genres": (), "year": 0, "description": ""})])
    if len(missing_users):
        extra = pd.DataFrame({"user_id": missing_users})
        users = pd.concat([users, _with_defaults(extra, USER_COLUMNS, {"age": 0, "gender": "", "occupation": ""})])

    items = items[items["item_id"].isin(used_items)]
    users = users[users["user_id"].isin(used_users)]
    items = items.sort_values("item_id", key=_natural_key, kind="stable").reset_index(drop=True)
    users = users.sort_values("user_id", key=_natural_key, kind="stable").reset_index(drop=True)
    items["genres"] = [tuple(g) for g in items["genres"]]
    items["year"] = items["year"].fillna(0).astype(np.int64)
    users["age"] = users["age"].fillna(0).astype(np.int64)

    item_index = pd.Series(np.arange(len(items)), index=items["item_id"])
    user_index = pd.Series(np.arange(len(users)), index=users["user_id"])
    out = pd.DataFrame(
        {
            "user": user_index.loc[inter["user_id"]].to_numpy(np.int64),
            "item": item_index.loc[inter["item_id"]].to_numpy(np.int64),
            "rating": inter["rating"].to_numpy(np.float32),
            "timestamp": inter["timestamp"].to_numpy(np.int64),
        }
    )
    out = out.sort_values(["user", "timestamp", "item"], kind="stable").reset_index(drop=True)
    return Dataset(name, items[list(ITEM_COLUMNS)], users[list(USER_COLUMNS)], out, meta)


def _with_defaults(frame: pd.DataFrame, columns: tuple[str, ...], defaults: dict) -> pd.DataFrame:
    frame = frame.copy()
    for col in columns:
        if col not in frame.columns:
            default = defaults[col]
            frame[col] = [default] * len(frame)
    return frame


def _natural_key(values: pd.Series) -> pd.Series:
    """Sort numeric-looking ids numerically ("2" < "10"), others as text."""
    as_num = pd.to_numeric(values, errors="coerce")
    if as_num.notna().all():
        return as_num
    return values.astype(str)
