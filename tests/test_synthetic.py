"""The synthetic world: seeded, MovieLens-like statistics, exact truth, readable text."""
from __future__ import annotations

import numpy as np
import pytest

from starec_env.behaviour import SyntheticTruth
from starec_env.data.synthetic import GENRES, MOVIELENS_RATING_HIST, SyntheticConfig, generate_world
from starec_env.simulator.fidelity import popularity_stats, rating_histogram


@pytest.fixture(scope="module")
def world():
    return generate_world(SyntheticConfig(n_users=400, n_items=400), seed=7)


def test_same_seed_same_world_and_different_seed_differs(world):
    again = generate_world(SyntheticConfig(n_users=400, n_items=400), seed=7)
    assert again.interactions.equals(world.interactions)
    assert again.items.equals(world.items)
    np.testing.assert_array_equal(again.truth.user_emb, world.truth.user_emb)
    other = generate_world(SyntheticConfig(n_users=400, n_items=400), seed=8)
    assert not other.interactions[["user", "item"]].equals(world.interactions[["user", "item"]])


def test_tables_and_truth_are_aligned(world):
    truth = world.truth
    assert isinstance(truth, SyntheticTruth)
    assert truth.user_emb.shape[0] == world.n_users and truth.item_emb.shape[0] == world.n_items
    assert world.genre_names == tuple(sorted(world.genre_names)) and set(world.genre_names) <= set(GENRES)
    assert set(world.users.columns) >= {"age", "gender", "occupation"}
    assert (world.users["age"] > 0).all() and world.users["gender"].isin(["M", "F"]).all()


def test_rating_histogram_resembles_movielens(world):
    hist = np.array(rating_histogram(world.rating_arr))
    np.testing.assert_allclose(hist, MOVIELENS_RATING_HIST, atol=0.01)
    assert 3.4 < world.rating_arr.mean() < 3.7
    assert hist.argmax() == 3  # mode is 4 stars


def test_history_lengths_are_long_tailed_with_minimum(world):
    lengths = np.diff(world.user_offsets)
    assert lengths.min() >= 10
    assert lengths.max() > 3 * np.median(lengths)


def test_item_popularity_is_long_tailed(world):
    stats = popularity_stats(world.item_arr, world.n_items)
    assert stats["gini"] > 0.4
    assert stats["top10_share"] > 0.3


def test_histories_reflect_tastes(world):
    truth = world.truth
    chosen = truth.utility(world.user_arr, world.item_arr[:, None])[:, 0]
    rng = np.random.default_rng(0)
    random_items = rng.integers(0, world.n_items, (len(chosen), 1))
    baseline = truth.utility(world.user_arr, random_items)[:, 0]
    assert chosen.mean() > baseline.mean() + 0.5
    # Ratings follow utility (ordinal model on utility + noise).
    assert np.corrcoef(chosen, world.rating_arr)[0, 1] > 0.5


def test_text_carries_genre_signal(world):
    for _, row in world.items.head(50).iterrows():
        assert row["title"] and row["description"].endswith(".")
        for genre in row["genres"]:
            assert genre.lower() in row["description"]
        assert 1930 <= row["year"] <= 2000
    assert world.items["title"].nunique() == world.n_items


def test_demographics_shape_genre_taste(world):
    truth = world.truth
    g = {name: j for j, name in enumerate(GENRES)}
    ages = world.users["age"].to_numpy()
    young, old = ages < 18, ages >= 45
    kids = truth.user_emb[:, g["Children's"]]
    assert kids[young].mean() > kids[old].mean() + 0.5
    women = world.users["gender"].to_numpy() == "F"
    romance = truth.user_emb[:, g["Romance"]]
    assert romance[women].mean() > romance[~women].mean() + 0.4


def test_subset_keeps_truth_aligned(world):
    users = np.array([5, 3, 100])
    items = np.arange(50, 120)
    sub = world.subset(users, items)
    old = world.truth.utility(users, np.broadcast_to(items, (3, len(items))))
    new = sub.truth.utility(np.arange(3), np.broadcast_to(np.arange(len(items)), (3, len(items))))
    np.testing.assert_allclose(new, old)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="n_items"):
        SyntheticConfig(n_items=1)
    with pytest.raises(ValueError, match="rating_hist"):
        SyntheticConfig(rating_hist=(1.0, 2.0))
    with pytest.raises(ValueError, match="min_history"):
        SyntheticConfig(n_items=10, min_history=10)
