"""k-core filtering, user sampling and the preprocess config."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from starec_env.data import Dataset, PreprocessConfig, PreprocessError, build_dataset, kcore_rows
from starec_env.data.preprocess import preprocess


def _dataset(pairs: list[tuple[str, str]], meta: dict | None = None) -> Dataset:
    inter = pd.DataFrame(
        {"user_id": [u for u, _ in pairs], "item_id": [i for _, i in pairs], "rating": 4.0, "timestamp": np.arange(len(pairs))}
    )
    return build_dataset("hand", pd.DataFrame({"item_id": []}), pd.DataFrame({"user_id": []}), inter, meta)


def _pairs(ds: Dataset) -> set[tuple[str, str]]:
    users = ds.users["user_id"].to_numpy()[ds.user_arr]
    items = ds.items["item_id"].to_numpy()[ds.item_arr]
    return set(zip(users, items))


def test_kcore_hand_checked_needs_iteration() -> None:
    # item z has one rating -> removed; then user c has one left -> removed;
    # only then does x drop from 3 to 2 ratings (still >= 2).
    ds = _dataset([("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "x"), ("c", "z")])
    out = preprocess(ds, PreprocessConfig(kcore=2), np.random.default_rng(0))
    assert _pairs(out) == {("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")}
    assert out.users["user_id"].tolist() == ["a", "b"] and out.items["item_id"].tolist() == ["x", "y"]
    assert out.meta["preprocess_stats"]["input"] == {"users": 3, "items": 3, "interactions": 6}
    assert out.meta["preprocess_stats"]["kcore"] == {"users": 2, "items": 2, "interactions": 4}
    with pytest.raises(PreprocessError, match="3-core filtering leaves dataset 'hand' empty"):
        preprocess(ds, PreprocessConfig(kcore=3), np.random.default_rng(0))


def _naive_kcore(pairs: set[tuple[int, int]], k: int) -> set[tuple[int, int]]:
    """Reference: remove one under-connected user or item at a time (the k-core is unique)."""
    while True:
        users = Counter(u for u, _ in pairs)
        items = Counter(i for _, i in pairs)
        weak_users = sorted(u for u, c in users.items() if c < k)
        weak_items = sorted(i for i, c in items.items() if c < k)
        if weak_users:
            pairs = {p for p in pairs if p[0] != weak_users[0]}
        elif weak_items:
            pairs = {p for p in pairs if p[1] != weak_items[0]}
        else:
            return pairs


@settings(max_examples=60, deadline=None)
@given(
    st.sets(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=60),
    st.integers(0, 5),
)
def test_kcore_matches_naive_reference(pairs: set[tuple[int, int]], k: int) -> None:
    ordered = sorted(pairs)
    users = np.array([u for u, _ in ordered], dtype=np.int64)
    items = np.array([i for _, i in ordered], dtype=np.int64)
    keep = kcore_rows(users, items, k)
    got = {p for p, kept in zip(ordered, keep) if kept}
    assert got == _naive_kcore(pairs, k)
    if got:
        assert min(np.bincount(users[keep])[np.unique(users[keep])]) >= k
        assert min(np.bincount(items[keep])[np.unique(items[keep])]) >= k


def test_user_sampling_is_seeded_and_drops_orphan_items() -> None:
    rng = np.random.default_rng(0)
    pairs = [(f"u{u}", f"i{i}") for u in range(30) for i in rng.choice(40, size=6, replace=False)]
    ds = _dataset(pairs)
    cfg = PreprocessConfig(kcore=0, max_users=5)
    a = preprocess(ds, cfg, np.random.default_rng(7))
    b = preprocess(ds, cfg, np.random.default_rng(7))
    c = preprocess(ds, cfg, np.random.default_rng(8))
    assert a.n_users == 5 and _pairs(a) == _pairs(b) and _pairs(a) != _pairs(c)
    assert _pairs(a) <= set(pairs)
    assert set(a.items["item_id"]) == {i for _, i in _pairs(a)}  # no item without interactions
    assert a.meta["preprocess"] == {"kcore": 0, "max_history": 40, "positive_threshold": 3.0, "max_users": 5}
    assert a.meta["preprocess_stats"]["sampled"]["users"] == 5
    bigger = preprocess(ds, PreprocessConfig(kcore=0, max_users=100), np.random.default_rng(7))
    assert bigger.n_users == 30  # fewer users than asked for: keep them all


@dataclass
class _Truth:
    """Stands in for a synthetic world's ground truth: remembers original ids."""

    user_ids: np.ndarray
    item_ids: np.ndarray

    def subset(self, users: np.ndarray, items: np.ndarray) -> "_Truth":
        return _Truth(self.user_ids[users], self.item_ids[items])


def test_ground_truth_stays_aligned_through_kcore_and_sampling() -> None:
    pairs = [(f"u{u}", f"i{(u + j) % 12}") for u in range(20) for j in range(4)] + [("lonely", "i0")]
    ds = _dataset(pairs)
    ds = replace(ds, truth=_Truth(ds.users["user_id"].to_numpy(), ds.items["item_id"].to_numpy()))
    out = preprocess(ds, PreprocessConfig(kcore=2, max_users=8), np.random.default_rng(1))
    assert "lonely" not in set(out.users["user_id"])
    assert out.truth.user_ids.tolist() == out.users["user_id"].tolist()
    assert out.truth.item_ids.tolist() == out.items["item_id"].tolist()


def test_config_validation_and_toml_dict() -> None:
    assert PreprocessConfig.from_dict({"kcore": 5, "max_users": 1000}) == PreprocessConfig(kcore=5, max_users=1000)
    with pytest.raises(ValueError, match=r"unknown preprocess option\(s\) \['k_core'\]"):
        PreprocessConfig.from_dict({"k_core": 5})
    with pytest.raises(ValueError, match="kcore"):
        PreprocessConfig(kcore=-1)
    with pytest.raises(ValueError, match="max_users"):
        PreprocessConfig(max_users=0)
    with pytest.raises(ValueError, match="max_history"):
        PreprocessConfig(max_history=0)
