"""Seeded runs repeat exactly, over >= 1,000 steps and across resets (dict and feature
observations, global state); dict API == batched path."""
from __future__ import annotations

import numpy as np
from gymnasium.utils.env_checker import data_equivalence

from starec_env.batched import BatchedEnv
from starec_env.data.synthetic import SyntheticConfig, generate_world
from starec_env.parallel import StarecParallelEnv

WORLD = {"n_users": 40, "n_items": 300}


def _trajectory(seed: int, steps: int = 1000, **options) -> list:
    """Observations, rewards, terminations, truncations and infos of ``steps`` parallel steps (and the states)."""
    env = StarecParallelEnv(n_users=4, seed=0, max_cycles=30, world=WORLD, popularity_coupling=1.0, **options)
    policy_rng = np.random.default_rng(seed + 100)
    out = []
    obs, infos = env.reset(seed=seed)
    out.append((obs, infos))
    for _ in range(steps):
        if not env.agents:
            obs, infos = env.reset()  # unseeded: continues the episode stream
            out.append((obs, infos))
        actions = {a: policy_rng.random(20).astype(np.float32) for a in env.agents}
        out.append(env.step(actions))
        out.append(env.state())
    return out


def test_thousand_steps_repeat_exactly():
    first, second = _trajectory(5), _trajectory(5)
    assert len(first) > 1000
    assert data_equivalence(first, second)
    other = _trajectory(6, steps=50)
    assert not data_equivalence(first[: len(other)], other)


def test_feature_observations_repeat_exactly():
    first, second = _trajectory(5, observation="features"), _trajectory(5, observation="features")
    assert len(first) > 2000 and data_equivalence(first, second)
    assert not data_equivalence(first[:100], _trajectory(6, steps=50, observation="features")[:100])


def test_dict_api_equals_batched_path():
    world = generate_world(SyntheticConfig(**WORLD), seed=0)
    options = dict(dataset=world, n_users=25, seed=3, max_cycles=40, popularity_coupling=0.5, reward="ndcg")
    par, fast = StarecParallelEnv(**options), BatchedEnv(**options)
    obs, _ = par.reset(seed=9)
    batch = fast.reset(seed=9)
    rng = np.random.default_rng(0)
    for _ in range(40):
        if not par.agents:
            break
        scores = rng.random(batch.candidates.shape).astype(np.float32)
        for agent, o in obs.items():
            row = par.agent_row(agent)
            np.testing.assert_array_equal(o["candidates"], batch.candidates[row])
            np.testing.assert_array_equal(o["history_ratings"], batch.history_ratings[row])
        obs, rewards, terms, truncs, infos = par.step({a: scores[par.agent_row(a)] for a in par.agents})
        res = fast.step(scores)
        batch = res.batch
        for agent in rewards:
            row = par.agent_row(agent)
            assert rewards[agent] == res.rewards[row]
            assert (terms[agent], truncs[agent]) == (res.terminated[row], res.truncated[row])
            assert infos[agent]["clicked"] == res.feedback.clicked[row]
        assert sorted(par.agent_row(a) for a in par.agents) == np.flatnonzero(res.alive).tolist()
