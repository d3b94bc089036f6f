"""Leave-one-out protocol: determinism, candidate validity, train/test separation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from starec_env.data.model import Dataset, build_dataset
from starec_env.protocol import LeaveOneOut, ProtocolError
from starec_env.types import PAD

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi")


def tiny_world(seed: int = 0, n_users: int = 60, n_items: int = 80, per_user: int = 25) -> Dataset:
    """A small latent-taste world: users rate genre-matching items higher."""
    rng = np.random.default_rng(seed)
    item_genre = rng.integers(len(GENRES), size=n_items)
    taste = rng.integers(len(GENRES), size=n_users)
    pop = rng.pareto(1.5, size=n_items) + 0.1
    rows = []
    for u in range(n_users):
        p = pop * np.where(item_genre == taste[u], 4.0, 1.0)
        items = rng.choice(n_items, size=per_user, replace=False, p=p / p.sum())
        for t, i in enumerate(items):
            base = 4.2 if item_genre[i] == taste[u] else 2.6
            rating = float(np.clip(np.rint(base + rng.normal(0, 0.8)), 1, 5))
            rows.append((f"u{u}", f"i{i}", rating, 1000 + t))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({
        "item_id": [f"i{i}" for i in range(n_items)],
        "title": [f"{GENRES[g]} Story {i}" for i, g in enumerate(item_genre)],
        "genres": [(GENRES[g],) for g in item_genre],
        "year": 1990 + rng.integers(30, size=n_items),
    })
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(n_users)]})
    return build_dataset("tiny", items, users, inter)


@pytest.fixture(scope="module")
def world() -> Dataset:
    return tiny_world()


def test_same_seed_same_candidates(world: Dataset) -> None:
    a = LeaveOneOut(world, n_users=30, seed=3)
    b = LeaveOneOut(world, n_users=30, seed=3)
    np.testing.assert_array_equal(a.batch.candidates, b.batch.candidates)
    np.testing.assert_array_equal(a.target_pos, b.target_pos)
    c = LeaveOneOut(world, n_users=30, seed=4)
    assert not np.array_equal(a.batch.candidates, c.batch.candidates) or not np.array_equal(a.users, c.users)


def test_candidates_do_not_depend_on_which_users_are_sampled(world: Dataset) -> None:
    some = LeaveOneOut(world, n_users=20, seed=1)
    every = LeaveOneOut(world, n_users=None, seed=1)
    row = {int(u): r for r, u in enumerate(every.users)}
    for r, u in enumerate(some.users):
        np.testing.assert_array_equal(some.batch.candidates[r], every.batch.candidates[row[int(u)]])


def test_target_once_and_negatives_unseen(world: Dataset) -> None:
    p = LeaveOneOut(world, n_users=None, n_negatives=19, seed=0)
    cands = p.batch.candidates
    assert cands.shape == (len(p), 20)
    for r, u in enumerate(p.users):
        seen = set(world.user_history(int(u))["item"])
        row = cands[r]
        assert len(set(row.tolist())) == 20
        assert (row == p.targets[r]).sum() == 1
        assert row[p.target_pos[r]] == p.targets[r]
        negatives = np.delete(row, p.target_pos[r])
        assert not seen.intersection(negatives.tolist())
    # the target's slot is shuffled, not always the same
    assert len(set(p.target_pos.tolist())) > 3


def test_target_is_last_positive_and_history_precedes_it(world: Dataset) -> None:
    p = LeaveOneOut(world, n_users=None, history_len=5, seed=0)
    for r, u in enumerate(p.users):
        hist = world.user_history(int(u))
        pos_rows = np.flatnonzero(hist["rating"].to_numpy() > 3.0)
        t = pos_rows[-1]
        assert hist["item"].iloc[t] == p.targets[r]
        expect = hist["item"].to_numpy()[max(0, t - 5):t]
        got = p.batch.history[r]
        np.testing.assert_array_equal(got[got != PAD], expect)
        np.testing.assert_array_equal(p.batch.history_ratings[r][got != PAD], hist["rating"].to_numpy()[max(0, t - 5):t])


def test_train_split_excludes_target_and_later(world: Dataset) -> None:
    p = LeaveOneOut(world, n_users=25, seed=2)
    train = p.split.interactions
    for r, u in enumerate(p.users):
        hist = world.user_history(int(u))
        t = int(p.target_rows[r] - world.user_offsets[u])
        got = train[train["user"] == u]
        np.testing.assert_array_equal(got["item"].to_numpy(), hist["item"].to_numpy()[:t])
    others = np.setdiff1d(np.arange(world.n_users), p.users)
    assert train["user"].isin(others).sum() == np.isin(world.user_arr, others).sum()
    assert set(p.split.for_variant("sample")["user"]) <= set(p.users.tolist())


def test_skips_users_without_positive() -> None:
    ds = tiny_world(seed=5, n_users=20)
    inter = ds.interactions.copy()
    inter.loc[inter["user"] == 0, "rating"] = 2.0
    inter["user_id"] = ds.users["user_id"].to_numpy()[inter["user"]]
    inter["item_id"] = ds.items["item_id"].to_numpy()[inter["item"]]
    ds2 = build_dataset("tiny", ds.items, ds.users, inter)
    p = LeaveOneOut(ds2, n_users=None)
    assert 0 not in p.users.tolist()
    assert p.skipped.no_positive >= 1
    assert p.summary()["eligible"] == len(p)


def test_evaluate_perfect_and_worst_scores(world: Dataset) -> None:
    p = LeaveOneOut(world, n_users=30, seed=0)
    perfect = np.zeros(p.batch.candidates.shape)
    perfect[np.arange(len(p)), p.target_pos] = 1.0
    res = p.evaluate(perfect)
    assert res == {k: 1.0 for k in res}
    assert set(res) == {"ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20", "hit@1", "hit@5", "hit@10"}
    worst = -perfect
    res = p.evaluate(worst)
    assert res["hit@10"] == 0.0 and res["ndcg@20"] == pytest.approx(1 / np.log2(21))


def test_evaluate_rejects_bad_scores(world: Dataset) -> None:
    p = LeaveOneOut(world, n_users=10)
    with pytest.raises(ProtocolError, match="shape"):
        p.evaluate(np.zeros((10, 5)))
    bad = np.zeros(p.batch.candidates.shape)
    bad[0, 0] = np.nan
    with pytest.raises(ProtocolError, match="NaN"):
        p.evaluate(bad)


def test_impossible_protocol_has_clear_error(world: Dataset) -> None:
    with pytest.raises(ProtocolError, match="no user"):
        LeaveOneOut(world, n_negatives=world.n_items)


def test_text_view_matches_the_batch(world: Dataset) -> None:
    p = LeaveOneOut(world, n_users=5, history_len=4, seed=0)
    view = p.text_view(2)
    assert view.user == p.users[2]
    assert view.candidate_items == p.batch.candidates[2].tolist()
    target_title = world.items["title"].iloc[p.targets[2]]
    assert view.candidates[p.target_pos[2]][0] == target_title
    hist = p.batch.history[2]
    assert view.history_items == hist[hist != PAD].tolist() and len(view.history) <= 4
