"""PettingZoo / Gymnasium API conformance, configuration, rewards and modes of the environment."""
from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import api_test, max_cycles_test, parallel_api_test, parallel_seed_test

import starec_env
from starec_env.batched import BatchedEnv, EnvError, resolve_reward
from starec_env.config import EnvConfig
from starec_env.data.synthetic import SyntheticConfig, generate_world
from starec_env.parallel import StarecParallelEnv
from starec_env.protocol import LeaveOneOut
from starec_env.types import PAD

SMALL = {"world": {"n_users": 60, "n_items": 200}, "seed": 0}


@pytest.fixture(scope="module")
def world():
    return generate_world(SyntheticConfig(n_users=60, n_items=200), seed=0)


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_parallel_api():
    parallel_api_test(starec_env.parallel_env(n_users=8, **SMALL), num_cycles=60)


def test_aec_api():
    api_test(starec_env.env(n_users=4, **SMALL), num_cycles=15)
    raw = starec_env.raw_env(n_users=4, **SMALL)
    raw.reset(seed=0)
    assert raw.agent_selection in raw.possible_agents


def test_max_cycles_on_module():
    max_cycles_test(starec_env)


def test_parallel_seed():
    parallel_seed_test(lambda: starec_env.parallel_env(n_users=5, **SMALL), num_cycles=10)


def test_single_user_gymnasium_env():
    env = gymnasium.make(starec_env.SINGLE_USER_ENV_ID, n_users=30, seed=0, world={"n_items": 150})
    check_env(env.unwrapped)
    obs, info = env.reset(seed=3, options={"user": 7})
    assert info["user"] == 7 and env.observation_space.contains(obs)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert isinstance(reward, float) and set(info) == {"clicked", "rating"}
    assert env.unwrapped.text_view().user == 7


def test_defaults_follow_the_contract():
    env = starec_env.parallel_env()
    cfg = env.batched.cfg
    assert cfg.dataset == "synthetic" and cfg.mode == "online"
    assert len(env.possible_agents) == cfg.n_users and env.possible_agents[0].startswith("user_")
    obs, infos = env.reset(seed=0)
    agent = env.agents[0]
    space = env.observation_space(agent)
    assert space is env.observation_space(env.agents[-1]) and env.action_space(agent) is env.action_space(agent)
    assert space.contains(obs[agent]) and infos[agent] == {}
    assert obs[agent]["candidates"].shape == (cfg.n_candidates,)


def test_observation_matches_batch_and_text_view(world):
    env = StarecParallelEnv(dataset=world, n_users=10, seed=0)
    obs, _ = env.reset(seed=1)
    agent = env.agents[3]
    row = env.agent_row(agent)
    batch = env.batched.batch
    np.testing.assert_array_equal(obs[agent]["candidates"], batch.candidates[row])
    hist = obs[agent]["history"]
    np.testing.assert_array_equal(hist == world.n_items, batch.history[row] == PAD)
    np.testing.assert_array_equal(obs[agent]["candidate_genres"], world.item_genres[batch.candidates[row]])
    view = env.text_view(agent)
    assert view.user == batch.users[row] and view.candidate_items == batch.candidates[row].tolist()
    titles = world.items["title"].to_numpy()
    assert [c[0] for c in view.candidates] == titles[batch.candidates[row]].tolist()
    assert len(view.history) == int((batch.history[row] != PAD).sum())
    assert {"user_id", "age", "gender", "occupation"} <= set(view.profile)
    with pytest.raises(EnvError, match="unknown agent"):
        env.text_view("user_nobody")


def test_infos_report_clicks_and_agents_leave(world):
    env = StarecParallelEnv(dataset=world, n_users=10, seed=0, max_cycles=3)
    obs, _ = env.reset(seed=2)
    for step in range(3):
        acting = list(env.agents)
        actions = {a: env.action_space(a).sample() for a in acting}
        obs, rewards, terms, truncs, infos = env.step(actions)
        assert set(obs) == set(rewards) == set(infos) == set(acting)
        for a in acting:
            assert (infos[a]["clicked"] >= 0) == (rewards[a] > 0)
    assert env.agents == [] and all(truncs[a] or terms[a] for a in acting)


def test_bad_actions_are_clear_errors(world):
    env = StarecParallelEnv(dataset=world, n_users=4, seed=0)
    env.reset(seed=0)
    actions = {a: np.zeros(20, np.float32) for a in env.agents}
    with pytest.raises(EnvError, match="no action"):
        env.step(dict(list(actions.items())[:-1]))
    bad = dict(actions)
    bad[env.agents[0]] = np.zeros(3)
    with pytest.raises(EnvError, match=r"expected \(20,\)"):
        env.step(bad)
    batched = BatchedEnv(dataset=world, n_users=4, seed=0)
    batched.reset(seed=0)
    with pytest.raises(EnvError, match="shape"):
        batched.step(np.zeros((4, 19)))
    with pytest.raises(EnvError, match="NaN"):
        batched.step(np.full((4, 20), np.nan))


def test_config_validation_and_nested_tables():
    with pytest.raises(ValueError, match="slate_size"):
        EnvConfig(slate_size=30, n_candidates=20)
    with pytest.raises(ValueError, match="mode"):
        EnvConfig(mode="replay")
    with pytest.raises(ValueError, match="unknown environment option"):
        EnvConfig.from_dict({"n_user": 3})
    with pytest.raises(ValueError, match="unknown simulator option"):
        EnvConfig.from_dict({"simulator": {"patiense": 1}})
    cfg = EnvConfig.from_dict({"n_users": 7, "slate_size": 3, "simulator": {"no_click_cost": 0.5}, "world": {"n_items": 90}})
    assert (cfg.n_users, cfg.slate_size, cfg.simulator.no_click_cost, cfg.world) == (7, 3, 0.5, {"n_items": 90})
    with pytest.raises(EnvError, match="n_users=500"):
        BatchedEnv(dataset=generate_world(SyntheticConfig(n_users=20, n_items=50)), n_users=500)


def test_rewards_resolve_by_name_or_callable(world):
    with pytest.raises(ValueError, match="click_rating"):
        resolve_reward("likes")
    assert resolve_reward("click").__name__ == "click_reward"
    env = BatchedEnv(dataset=world, n_users=20, seed=0, reward=lambda out: np.full(len(out.clicked), 2.0))
    batch = env.reset(seed=0)
    res = env.step(np.zeros(batch.candidates.shape))
    assert (res.rewards == 2.0).all()
    env = BatchedEnv(dataset=world, n_users=20, seed=0, reward="ndcg")
    batch = env.reset(seed=0)
    oracle = env.step(env.simulator.current_utility(env.state, batch.candidates))
    np.testing.assert_allclose(oracle.rewards, 1.0)
    assert oracle.outcome.utilities.shape == batch.candidates.shape
    batch = env.reset(seed=0)
    anti = env.step(-env.simulator.current_utility(env.state, batch.candidates))
    assert anti.rewards.mean() < 0.8


def test_offline_mode_is_the_leave_one_out_protocol(world):
    env = BatchedEnv(dataset=world, n_users=30, seed=0, mode="offline")
    protocol = LeaveOneOut(world, n_negatives=19, n_users=30, seed=0)
    batch = env.reset()
    np.testing.assert_array_equal(batch.candidates, protocol.batch.candidates)
    scores = np.random.default_rng(0).random(batch.candidates.shape)
    res = env.step(scores)
    np.testing.assert_allclose(res.rewards, protocol.per_user(scores)["ndcg@20"])
    assert res.terminated.all() and not res.alive.any()
    np.testing.assert_array_equal(res.feedback.clicked, protocol.targets)
    par = StarecParallelEnv(dataset=world, n_users=30, seed=0, mode="offline")
    obs, _ = par.reset()
    _, rewards, terms, _, _ = par.step({a: scores[par.agent_row(a)] for a in par.agents})
    assert np.isclose(np.mean(list(rewards.values())), res.rewards.mean()) and all(terms.values())
    assert par.agents == []


def test_lazy_package_attributes():
    assert starec_env.BatchedEnv is BatchedEnv
    with pytest.raises(AttributeError):
        starec_env.no_such_thing  # noqa: B018


def test_simulator_of_another_dataset_is_rejected(world):
    from starec_env.simulator import build_simulator

    other = build_simulator(generate_world(SyntheticConfig(n_users=20, n_items=50)), seed=0)
    with pytest.raises(EnvError, match="same dataset"):
        BatchedEnv(dataset=world, simulator=other, n_users=5)
