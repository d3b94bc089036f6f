"""Rule-based, BPR and oracle agents on a tiny synthetic world."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from policies import PolicyContext, make_policy
from policies.rule_based import ItemKNNPolicy, RandomPolicy
from starec_env.data import load_dataset
from starec_env.metrics import ndcg_single, rank_of
from starec_env.protocol import LeaveOneOut
from starec_env.simulator import build_simulator
from starec_env.types import PAD, RankingBatch

torch.set_num_threads(1)
AGENTS = ("random", "pop", "genre", "itemknn", "bpr", "bpr-full")


@pytest.fixture(scope="module")
def world():
    ds = load_dataset("synthetic", seed=0, n_users=240, n_items=150)
    return ds, build_simulator(ds, seed=0), LeaveOneOut(ds, n_users=160, seed=0)


@pytest.fixture(scope="module")
def results(world):
    ds, sim, protocol = world
    out = {}
    for name in (*AGENTS, "oracle"):
        policy = make_policy(name, PolicyContext(ds, seed=0, simulator=sim if name == "oracle" else None, options={"epochs": 5}))
        policy.fit(protocol.split)
        scores = policy.score(protocol.batch)
        out[name] = (policy, scores, protocol.evaluate(scores))
    return out


def _random_expectation(k: int, c: int = 20) -> float:
    return float(sum(1 / np.log2(r + 2) for r in range(min(k, c))) / c)


def test_random_matches_analytic_ndcg() -> None:
    n, c = 20000, 20
    rng = np.random.default_rng(7)
    batch = RankingBatch(np.zeros(n, np.int64), rng.integers(1000, size=(n, c)), np.full((n, 1), PAD), np.zeros((n, 1)))
    ranks = rank_of(RandomPolicy(np.random.default_rng(1)).score(batch), rng.integers(c, size=n))
    for k in (1, 5, 10, 20):
        assert ndcg_single(ranks, k).mean() == pytest.approx(_random_expectation(k), abs=0.01)


@pytest.mark.parametrize("name", AGENTS)
def test_agent_scores_shape_and_beats_chance(world, results, name) -> None:
    _, _, protocol = world
    policy, scores, metrics = results[name]
    assert scores.shape == protocol.batch.candidates.shape and np.isfinite(scores).all()
    assert not policy.upper_bound
    if name != "random":
        assert metrics["ndcg@10"] > _random_expectation(10) + 0.12, metrics


def test_oracle_is_best_and_labelled(results) -> None:
    oracle, _, best = results["oracle"]
    assert oracle.upper_bound
    for name in AGENTS:
        assert best["ndcg@10"] > results[name][2]["ndcg@10"], name


def test_seeded_agents_are_deterministic(world, results) -> None:
    ds, _, protocol = world
    for name in ("random", "bpr"):
        policy = make_policy(name, PolicyContext(ds, seed=0, options={"epochs": 5}))
        policy.fit(protocol.split)
        np.testing.assert_array_equal(policy.score(protocol.batch), results[name][1])
    other = make_policy("bpr", PolicyContext(ds, seed=1, options={"epochs": 5}))
    other.fit(protocol.split)
    assert not np.array_equal(other.score(protocol.batch), results["bpr"][1])


def test_bpr_reports_training_cost(results) -> None:
    sample, full = results["bpr"][0].stats(), results["bpr-full"][0].stats()
    assert sample["train_s"] > 0 and full["train_fraction"] == 1.0
    assert sample["train_interactions"] <= full["train_interactions"]


def test_itemknn_matches_brute_force_cosine(world) -> None:
    ds, _, protocol = world
    dense = ItemKNNPolicy(ds)
    sparse = ItemKNNPolicy(ds, chunk_cells=ds.n_users * 7, dense=False)  # several chunks
    dense.fit(protocol.split)
    sparse.fit(protocol.split)
    train = protocol.split.interactions
    x = np.zeros((ds.n_items, ds.n_users))
    x[train["item"], train["user"]] = 1.0
    norm = np.linalg.norm(x, axis=1)
    sim = (x @ x.T) / np.maximum(np.outer(norm, norm), 1e-12)
    batch = protocol.batch.take(np.arange(20))
    expect = np.array([
        [sim[c, h[h != PAD]].sum() for c in cands] for cands, h in zip(batch.candidates, batch.history)
    ])
    assert dense.similarity is not None and sparse.similarity is None
    for knn in (dense, sparse):
        np.testing.assert_allclose(knn.score(batch), expect, atol=1e-4)


def test_unknown_users_fall_back_to_popularity(world, results) -> None:
    ds, _, protocol = world
    pop_order = np.argsort(-results["pop"][0].score(protocol.batch.take(np.arange(5))), axis=1)
    empty = RankingBatch(
        protocol.batch.users[:5],
        protocol.batch.candidates[:5],
        np.full((5, 3), PAD),
        np.zeros((5, 3)),
    )
    for name in ("genre", "itemknn"):
        order = np.argsort(-results[name][0].score(empty), axis=1)
        np.testing.assert_array_equal(order, pop_order, err_msg=name)
    # BPR "sample" has never seen the users outside the sample: it still ranks them
    bpr = results["bpr"][0]
    outsiders = np.setdiff1d(np.arange(ds.n_users), protocol.split.sample_users)
    if len(outsiders):
        batch = RankingBatch(outsiders[:3], protocol.batch.candidates[:3], np.full((3, 1), PAD), np.zeros((3, 1)))
        assert np.isfinite(bpr.score(batch)).all()


def test_oracle_needs_a_simulator(world) -> None:
    with pytest.raises(ValueError, match="simulator"):
        make_policy("oracle", PolicyContext(world[0]))


def test_bpr_before_fit_is_a_clear_error(world) -> None:
    policy = make_policy("bpr", PolicyContext(world[0]))
    with pytest.raises(RuntimeError, match="fit"):
        policy.score(world[2].batch)
