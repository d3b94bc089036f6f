"""Feature observation: inside its space, the same on every path, and meaning what the README says."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import api_test, parallel_api_test

import starec_env
from policies.rule_based import GenreAffinityPolicy
from starec_env.batched import BatchedEnv
from starec_env.data.synthetic import SyntheticConfig, generate_world
from starec_env.features import CANDIDATE_FEATURES, USER_FEATURES, item_embeddings
from starec_env.parallel import StarecParallelEnv
from starec_env.single import SingleUserEnv
from starec_env.types import PAD

WORLD = generate_world(SyntheticConfig(n_users=80, n_items=200), seed=0)
C, F, U = 20, len(CANDIDATE_FEATURES), len(USER_FEATURES)


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _column(obs: np.ndarray, name: str) -> np.ndarray:
    return obs[..., : C * F].reshape(*obs.shape[:-1], C, F)[..., CANDIDATE_FEATURES.index(name)]


def test_feature_space_and_pettingzoo_checks():
    env = StarecParallelEnv(dataset=WORLD, n_users=8, seed=0, observation="features")
    space = env.observation_space(env.possible_agents[0])
    assert space.shape == (C * F + U,) and space.dtype == np.float32
    parallel_api_test(env, num_cycles=60)
    api_test(starec_env.env(dataset=WORLD, n_users=4, seed=0, observation="features"), num_cycles=15)
    check_env(SingleUserEnv(dataset=WORLD, seed=0, observation="features"))


def test_features_stay_in_space_over_many_steps():
    env = StarecParallelEnv(dataset=WORLD, n_users=30, seed=0, max_cycles=40, observation="features",
                            popularity_coupling=1.0)
    space = env.observation_space(env.possible_agents[0])
    rng = np.random.default_rng(0)
    seen = 0
    for episode in range(4):
        obs, _ = env.reset(seed=episode)
        while env.agents:
            assert all(space.contains(o) for o in obs.values())
            seen += len(obs)
            obs, *_ = env.step({a: rng.normal(size=C) for a in env.agents})
        assert all(space.contains(o) for o in obs.values())
    assert seen > 1000


def test_dict_api_equals_batched_features():
    options = dict(dataset=WORLD, n_users=25, seed=3, max_cycles=30, popularity_coupling=0.5)
    par = StarecParallelEnv(observation="features", **options)
    fast = BatchedEnv(**options)
    obs, _ = par.reset(seed=9)
    fast.reset(seed=9)
    rng = np.random.default_rng(0)
    steps = 0
    while par.agents:
        feats = fast.features()
        for agent, o in obs.items():
            np.testing.assert_array_equal(o, feats[par.agent_row(agent)])
        scores = rng.random((25, C))
        obs, *_ = par.step({a: scores[par.agent_row(a)] for a in par.agents})
        fast.step(scores)
        steps += 1
    assert steps > 5


def test_a_users_features_do_not_depend_on_the_batch():
    """Single-user env, batches of one and a batch of many give bit-identical rows."""
    many = BatchedEnv(dataset=WORLD, n_users=40, seed=0)
    many.reset(seed=4)
    all_rows = many.features()
    for row in (0, 17, 39):
        alone = BatchedEnv(dataset=WORLD, n_users=40, seed=0)
        alone.reset(seed=4, users=many.users[[row]])
        alone.batch = many.batch.take(np.array([row]))  # same candidates as in the big batch
        np.testing.assert_array_equal(alone.features()[0], all_rows[row])
    single = SingleUserEnv(dataset=WORLD, seed=0, observation="features")
    obs, info = single.reset(seed=5)
    np.testing.assert_array_equal(obs, single.batched.features()[0])


def test_features_mean_what_the_docs_say():
    env = BatchedEnv(dataset=WORLD, n_users=40, seed=0)
    batch = env.reset(seed=1)
    feats = env.features()
    counts = np.log1p(WORLD.item_popularity)
    np.testing.assert_allclose(_column(feats, "popularity"), (counts / counts.max())[batch.candidates], rtol=1e-6)
    # genre_match + 2 * popularity is the genre baseline's rule (full-data popularity prior).
    genre = GenreAffinityPolicy(WORLD).score(batch)
    ours = _column(feats, "genre_match") + 2.0 * _column(feats, "popularity")
    np.testing.assert_allclose(ours, genre, atol=1e-5)
    user = feats[:, C * F:]
    valid = batch.history != PAD
    np.testing.assert_allclose(user[:, USER_FEATURES.index("history_fill")], valid.mean(axis=1), rtol=1e-6)
    assert (user[:, USER_FEATURES.index("progress")] == 0).all()
    res = env.step(np.random.default_rng(0).random((40, C)))
    user = env.features()[:, C * F:]
    clicked = res.feedback.clicked >= 0
    np.testing.assert_allclose(user[:, USER_FEATURES.index("click_rate")], clicked.astype(float))
    np.testing.assert_allclose(user[:, USER_FEATURES.index("miss_streak")], (~clicked) / 10.0)
    np.testing.assert_allclose(user[:, USER_FEATURES.index("last_rating")], res.feedback.rating / 5.0, rtol=1e-6)
    np.testing.assert_allclose(user[:, USER_FEATURES.index("progress")], 1 / env.max_cycles, rtol=1e-6)


def test_item_embeddings_capture_co_consumption():
    emb = item_embeddings(WORLD, 16, seed=0)
    assert emb.shape == (WORLD.n_items, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(emb, item_embeddings(WORLD, 16, seed=0))
    # Items consumed by the same users are closer than random pairs.
    users, items = WORLD.user_arr, WORLD.item_arr
    same = [(items[i], items[i + 1]) for i in range(len(items) - 1) if users[i] == users[i + 1]][:2000]
    rng = np.random.default_rng(0)
    pairs = np.array(same)
    rand = rng.integers(WORLD.n_items, size=pairs.shape)
    cos = lambda p: np.einsum("nk,nk->n", emb[p[:, 0]], emb[p[:, 1]]).mean()  # noqa: E731
    assert cos(pairs) > cos(rand) + 0.05
