"""Shared-policy tooling: Gymnasium vector env, SB3 adapter, registration, fixed agents, state, render."""
from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env, data_equivalence
from gymnasium.vector import AutoresetMode
from pettingzoo.test import render_test
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import VecCheckNan, VecMonitor

import starec_env
from starec_env.data.synthetic import SyntheticConfig, generate_world
from starec_env.parallel import StarecParallelEnv
from starec_env.sb3 import StarecSB3VecEnv
from starec_env.single import SingleUserEnv
from starec_env.vector import StarecVectorEnv

WORLD = generate_world(SyntheticConfig(n_users=80, n_items=200), seed=0)
OPTS = {"dataset": WORLD, "seed": 0, "observation": "features"}


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_registration_from_a_fresh_interpreter():
    code = (
        "import gymnasium\n"
        "env = gymnasium.make('starec_env:STARec/SingleUser-v0', world={'n_items': 120})\n"
        "print(env.spec.max_episode_steps, env.unwrapped.batched.max_cycles)\n"
        "vec = gymnasium.make_vec('starec_env:STARec/SingleUser-v0', num_envs=3, world={'n_items': 120})\n"
        "print(type(vec).__name__, vec.num_envs, vec.unwrapped.batched.max_cycles)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.split() == ["50", "50", "StarecVectorEnv", "3", "50"]


def _run(env: StarecVectorEnv, seed: int, steps: int) -> list:
    out = [env.reset(seed=seed)]
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        out.append(env.step(rng.random((env.num_envs, 20)).astype(np.float32)))
    return out


def test_vector_env_contract_and_same_step_autoreset():
    env = gymnasium.make_vec("STARec/SingleUser-v0", num_envs=6, max_cycles=8, **OPTS)
    assert isinstance(env, StarecVectorEnv) and env.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    assert env.observation_space.shape == (6, *env.single_observation_space.shape)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["user"].shape == (6,)
    finished = 0
    for _ in range(40):
        before = env.unwrapped.batched.users.copy()
        obs, rewards, term, trunc, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and rewards.shape == (6,)
        done = term | trunc
        if done.any():
            np.testing.assert_array_equal(info["_final_obs"], done)
            for i in np.flatnonzero(done):
                assert env.single_observation_space.contains(info["final_obs"][i])
                # The fresh user's first observation: no episode progress yet.
                assert obs[i][-4] == 0.0  # "progress"
            finished += int(done.sum())
        assert (info["user"][~done] == before[~done]).all()
    assert finished >= 6 * 40 // 8 - 6  # every slot is refilled at least once per 8 steps


def test_vector_env_is_deterministic():
    first = _run(StarecVectorEnv(num_envs=5, max_cycles=10, **OPTS), 3, 120)
    second = _run(StarecVectorEnv(num_envs=5, max_cycles=10, **OPTS), 3, 120)
    assert data_equivalence(first, second)
    other = _run(StarecVectorEnv(num_envs=5, max_cycles=10, **OPTS), 4, 20)
    assert not data_equivalence(first[:21], other)


def test_vector_env_dict_observation():
    env = StarecVectorEnv(num_envs=4, dataset=WORLD, seed=0, max_cycles=3)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for _ in range(6):
        obs, *_, info = env.step(np.zeros((4, 20)))
        assert env.observation_space.contains(obs)
    assert env.single_observation_space.contains(info["final_obs"][0])


def test_single_env_passes_gymnasium_and_sb3_checkers():
    """The vector adapter's sub-environment spaces are the single-user env's, checked by both libraries."""
    env = SingleUserEnv(**OPTS)
    check_env(env)
    sb3_check_env(SingleUserEnv(**OPTS), warn=True)
    venv = StarecSB3VecEnv(num_envs=4, **OPTS)
    assert venv.observation_space == env.observation_space and venv.action_space == env.action_space


def test_sb3_adapter_contract():
    venv = VecCheckNan(StarecSB3VecEnv(num_envs=4, max_cycles=5, **OPTS), raise_exception=True)
    venv.seed(7)
    obs = venv.reset()
    assert obs.shape == (4, *venv.observation_space.shape)
    first = obs.copy()
    venv.seed(7)
    np.testing.assert_array_equal(venv.reset(), first)
    ended = 0
    for _ in range(12):
        obs, rewards, dones, infos = venv.step(np.random.default_rng(0).uniform(-1, 1, (4, 20)))
        assert rewards.dtype == np.float32 and len(infos) == 4
        for i in np.flatnonzero(dones):
            assert venv.observation_space.contains(infos[i]["terminal_observation"])
            assert infos[i]["TimeLimit.truncated"] in (True, False)
            ended += 1
    assert ended >= 8
    assert venv.get_attr("render_mode") == [None] * 4 and venv.env_is_wrapped(gymnasium.Wrapper) == [False] * 4


def test_short_sb3_learn_call():
    torch.set_num_threads(1)
    venv = VecMonitor(StarecSB3VecEnv(num_envs=8, max_cycles=10, **OPTS))
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=64, n_epochs=1, seed=0, verbose=0)
    model.learn(256)
    action, _ = model.predict(venv.reset(), deterministic=True)
    assert action.shape == (8, 20) and model.num_timesteps >= 256


def test_fixed_agents_keep_departed_users_listed():
    env = StarecParallelEnv(n_users=6, max_cycles=30, fixed_agents=True, **OPTS)
    obs, _ = env.reset(seed=0)
    space = env.observation_space(env.possible_agents[0])
    rng = np.random.default_rng(0)
    departed: set[str] = set()
    while env.agents:
        assert env.agents == env.possible_agents
        obs, rewards, terms, truncs, infos = env.step({a: rng.random(20) for a in env.agents})
        assert set(obs) == set(env.possible_agents) and all(space.contains(o) for o in obs.values())
        for agent in departed:
            assert terms[agent] and rewards[agent] == 0.0 and infos[agent] == {} and not obs[agent].any()
        departed |= {a for a in env.possible_agents if terms[a] or truncs[a]}
    assert departed == set(env.possible_agents)


def test_supersuit_vector_env_over_fixed_agents():
    import supersuit

    env = StarecParallelEnv(n_users=5, max_cycles=6, fixed_agents=True, **OPTS)
    vec = supersuit.pettingzoo_env_to_vec_env_v1(env)
    vec.reset(seed=0)
    resets = 0
    for t in range(30):
        obs, rewards, terms, truncs, infos = vec.step(np.random.default_rng(t).random((5, 20)).astype(np.float32))
        assert obs.shape == (5, env.observation_space(env.possible_agents[0]).shape[0])
        resets += int(any("terminal_observation" in i for i in infos))
    assert resets >= 4  # SuperSuit resets the env whenever every user is done


def test_state_lies_in_state_space():
    env = StarecParallelEnv(n_users=10, max_cycles=20, popularity_coupling=1.0, **OPTS)
    env.reset(seed=0)
    space = env.state_space
    rng = np.random.default_rng(0)
    states = [env.state()]
    while env.agents:
        env.step({a: rng.random(20) for a in env.agents})
        states.append(env.state())
    assert all(space.contains(s) for s in states) and len(states) > 5
    assert states[0][: WORLD.n_items].sum() == 0 and states[-1][: WORLD.n_items].max() == 1.0
    assert states[0][-4] == 1.0 and states[-1][-4] == 0.0  # live share
    aec = starec_env.env(n_users=3, **OPTS)
    aec.reset(seed=0)
    assert aec.state_space.contains(aec.state())


def test_render_modes():
    render_test(lambda render_mode=None: starec_env.env(n_users=3, render_mode=render_mode, **OPTS))
    par = StarecParallelEnv(n_users=3, render_mode="ansi", **OPTS)
    par.reset(seed=0)
    assert "no step yet" in par.render()
    par.step({a: np.arange(20.0) for a in par.agents})
    frame = par.render()
    assert "last slate" in frame and "reward" in frame and par.possible_agents[0] in frame
    single = SingleUserEnv(render_mode="ansi", **OPTS)
    single.reset(seed=0)
    single.step(np.zeros(20))
    assert "last slate" in single.render()
    vec = StarecVectorEnv(num_envs=2, render_mode="ansi", **OPTS)
    vec.reset(seed=0)
    assert "slot 0" in vec.render()
    assert StarecParallelEnv(n_users=3, **OPTS).render() is None
