"""Bad input to the environment layer: every misuse is an EnvError that names the setting or agent.

Options of every constructor, actions of every env form, and calls out of
order. Each case asserts the error type (EnvError, a ValueError) and that
the message names what was wrong.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import starec_env
from starec_env.batched import BatchedEnv
from starec_env.config import EnvConfig
from starec_env.data.synthetic import SyntheticConfig, generate_world
from starec_env.errors import EnvError
from starec_env.parallel import StarecParallelEnv
from starec_env.single import SingleUserEnv
from starec_env.vector import StarecVectorEnv

WORLD = generate_world(SyntheticConfig(n_users=40, n_items=150), seed=0)
OPTS = {"dataset": WORLD, "seed": 0}


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


BAD_OPTIONS = [
    ({"n_users": 0}, "n_users"),
    ({"n_users": 1.5}, "n_users"),
    ({"n_users": "10"}, "n_users"),
    ({"n_users": True}, "n_users"),
    ({"n_candidates": 2.0}, "n_candidates"),
    ({"n_candidates": "20"}, "n_candidates"),
    ({"slate_size": True}, "slate_size"),
    ({"slate_size": 0}, "slate_size"),
    ({"slate_size": 30}, "slate_size"),
    ({"max_cycles": 1.5}, "max_cycles"),
    ({"max_cycles": 0}, "max_cycles"),
    ({"history_len": -3}, "history_len"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.0}, "seed"),
    ({"seed": "0"}, "seed"),
    ({"popularity_coupling": float("nan")}, "popularity_coupling"),
    ({"popularity_coupling": -0.5}, "popularity_coupling"),
    ({"popularity_coupling": float("inf")}, "popularity_coupling"),
    ({"popularity_coupling": "high"}, "popularity_coupling"),
    ({"candidate_pop_mix": 1.5}, "candidate_pop_mix"),
    ({"candidate_pop_mix": float("nan")}, "candidate_pop_mix"),
    ({"positive_threshold": float("nan")}, "positive_threshold"),
    ({"mode": "replay"}, "mode"),
    ({"observation": "pixels"}, "observation"),
    ({"fixed_agents": "yes"}, "fixed_agents"),
    ({"reward": 3}, "reward"),
    ({"world": 5}, "world"),
    ({"data_options": [1]}, "data_options"),
    ({"dataset": 7}, "dataset"),
    ({"data_dir": 3}, "data_dir"),
    ({"simulator": 1}, "simulator"),
    ({"n_user": 3}, "n_user"),
]


@pytest.mark.parametrize(("options", "name"), BAD_OPTIONS, ids=[str(o) for o, _ in BAD_OPTIONS])
def test_bad_options_name_the_setting(options, name):
    with pytest.raises(ValueError, match=name) as err:
        EnvConfig.from_dict(options)
    assert isinstance(err.value, EnvError) or "unknown environment option" in str(err.value)


@pytest.mark.parametrize("make", [
    lambda **kw: starec_env.parallel_env(**kw),
    lambda **kw: starec_env.env(**kw),
    lambda **kw: SingleUserEnv(**kw),
    lambda **kw: StarecVectorEnv(num_envs=2, **kw),
    lambda **kw: BatchedEnv(**kw),
], ids=["parallel", "aec", "single", "vector", "batched"])
def test_every_constructor_checks_its_options(make):
    with pytest.raises(EnvError, match="popularity_coupling"):
        make(popularity_coupling=float("nan"), **OPTS)
    with pytest.raises(EnvError, match="slate_size"):
        make(slate_size=True, **OPTS)


@pytest.mark.parametrize("make", [
    lambda **kw: StarecParallelEnv(**kw),
    lambda **kw: SingleUserEnv(**kw),
    lambda **kw: StarecVectorEnv(num_envs=2, **kw),
], ids=["parallel", "single", "vector"])
def test_render_mode_is_checked(make):
    with pytest.raises(EnvError, match="render_mode"):
        make(render_mode="rgb", **OPTS)


def test_small_worlds_still_have_agents():
    """n_users=1 used to build a one-user world with nothing left to recommend (0 agents)."""
    for n in (1, 2, 3):
        env = starec_env.parallel_env(n_users=n, seed=0)
        env.reset(seed=0)
        assert len(env.agents) == n


def test_too_many_agents_names_n_users():
    with pytest.raises(EnvError, match="n_users=500"):
        BatchedEnv(n_users=500, **OPTS)


def test_vector_options():
    with pytest.raises(EnvError, match="num_envs"):
        StarecVectorEnv(num_envs=0, **OPTS)
    with pytest.raises(EnvError, match="num_envs"):
        StarecVectorEnv(num_envs=2.5, **OPTS)
    with pytest.raises(EnvError, match="max_episode_steps"):
        StarecVectorEnv(num_envs=2, max_episode_steps=0, **OPTS)
    with pytest.raises(EnvError, match="offline"):
        StarecVectorEnv(num_envs=2, mode="offline", **OPTS)
    with pytest.raises(EnvError, match="fixed_agents"):
        StarecVectorEnv(num_envs=2, fixed_agents=True, **OPTS)
    with pytest.raises(EnvError, match="fixed_agents"):
        SingleUserEnv(fixed_agents=True, **OPTS)
    with pytest.raises(EnvError, match="mode.*offline"):
        SingleUserEnv(mode="offline", **OPTS)


# -- actions and call order: parallel env --------------------------------------------


@pytest.fixture()
def par():
    env = StarecParallelEnv(n_users=4, max_cycles=3, **OPTS)
    env.reset(seed=0)
    return env


def _zeros(env):
    return {a: np.zeros(20, np.float32) for a in env.agents}


def test_parallel_step_before_reset():
    env = StarecParallelEnv(n_users=4, **OPTS)
    with pytest.raises(EnvError, match=r"reset\(\)"):
        env.step({})
    with pytest.raises(EnvError, match=r"reset\(\)"):
        env.state()


@pytest.mark.parametrize(("bad", "pattern"), [
    ("abc", "action of 'user_"),
    (np.array(["1"] * 20), "action of 'user_"),
    (None, "action of 'user_"),
    (np.zeros((4, 5)), r"shape \(4, 5\)"),
    (np.zeros(3), r"expected \(20,\)"),
    (np.full(20, np.nan), "NaN"),
    (np.full(20, np.inf), "NaN/inf"),
    ([[1, 2], [3]], "action of 'user_"),
    ({"a": 1}, "action of 'user_"),
])
def test_parallel_bad_action_names_the_agent(par, bad, pattern):
    actions = _zeros(par)
    actions[par.agents[1]] = bad
    with pytest.raises(EnvError, match=pattern) as err:
        par.step(actions)
    assert par.agents[1] in str(err.value) or "shape" in pattern


def test_parallel_missing_unknown_and_departed_agents(par):
    actions = _zeros(par)
    with pytest.raises(EnvError, match="no action"):
        par.step(dict(list(actions.items())[1:]))
    with pytest.raises(EnvError, match="unknown agent 'user_nobody'"):
        par.step({**actions, "user_nobody": np.zeros(20)})
    with pytest.raises(EnvError, match="unknown agent"):
        par.step({**actions, 3: np.zeros(20)})
    with pytest.raises(EnvError, match="expected a dict"):
        par.step([np.zeros(20)] * 4)
    # A departed agent: run until somebody has left, then send it an action (even NaN).
    rng = np.random.default_rng(0)
    gone = None
    while par.agents and gone is None:
        before = list(par.agents)
        par.step({a: rng.random(20) for a in par.agents})
        left = [a for a in before if a not in par.agents]
        gone = left[0] if left and par.agents else None
    if gone is not None:
        with pytest.raises(EnvError, match=f"{gone}.*left the episode"):
            par.step({**_zeros(par), gone: np.full(20, np.nan)})


def test_parallel_step_after_the_end(par):
    while par.agents:
        par.step(_zeros(par))
    with pytest.raises(EnvError, match="episode is over"):
        par.step({})


def test_reset_seed_is_checked(par):
    with pytest.raises(EnvError, match="seed"):
        par.reset(seed=-1)
    with pytest.raises(EnvError, match="seed"):
        par.reset(seed=1.5)
    with pytest.raises(EnvError, match="max_cycles"):
        par.max_cycles = 0


# -- single-user env -------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "pattern"), [
    (np.zeros((4, 5)), r"action has shape \(4, 5\)"),
    (np.zeros((1, 20)), r"action has shape \(1, 20\)"),
    (np.zeros(19), r"action has shape \(19,\)"),
    ("abc", "action: expected numeric"),
    (np.full(20, np.nan), "NaN"),
    (None, "action: expected numeric"),
])
def test_single_user_bad_actions(bad, pattern):
    env = SingleUserEnv(**OPTS)
    env.reset(seed=0)
    with pytest.raises(EnvError, match=pattern):
        env.step(bad)


def test_single_user_call_order_and_options():
    env = SingleUserEnv(max_cycles=2, **OPTS)
    with pytest.raises(EnvError, match=r"reset\(\)"):
        env.step(np.zeros(20))
    with pytest.raises(EnvError, match=r"options\['user'\]"):
        env.reset(seed=0, options={"user": 10**6})
    with pytest.raises(EnvError, match=r"options\['user'\]"):
        env.reset(seed=0, options={"user": 1.5})
    with pytest.raises(EnvError, match="unknown option"):
        env.reset(seed=0, options={"usr": 1})
    with pytest.raises(EnvError, match="seed"):
        env.reset(seed=-1)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(np.zeros(20))
        done = term or trunc
    with pytest.raises(EnvError, match="every user is done"):
        env.step(np.zeros(20))


# -- vector env and batched path ----------------------------------------------------------


def test_vector_bad_actions_and_order():
    env = StarecVectorEnv(num_envs=3, **OPTS)
    with pytest.raises(EnvError, match=r"reset\(\)"):
        env.step(np.zeros((3, 20)))
    env.reset(seed=0)
    with pytest.raises(EnvError, match=r"actions have shape \(20,\)"):
        env.step(np.zeros(20))
    with pytest.raises(EnvError, match="actions: expected numeric"):
        env.step(np.full((3, 20), "x"))
    with pytest.raises(EnvError, match="NaN"):
        env.step(np.full((3, 20), np.nan))
    with pytest.raises(EnvError, match="options"):
        env.reset(seed=0, options={"users": [1]})


def test_batched_bad_input():
    env = BatchedEnv(n_users=4, **OPTS)
    with pytest.raises(EnvError, match=r"reset\(\)"):
        env.step(np.zeros((4, 20)))
    with pytest.raises(EnvError, match=r"reset\(\)"):
        env.features()
    with pytest.raises(EnvError, match="users must be"):
        env.reset(seed=0, users=np.array([0.5]))
    with pytest.raises(EnvError, match="users must be"):
        env.reset(seed=0, users=np.array([10**6]))
    env.reset(seed=0)
    with pytest.raises(EnvError, match="scores: expected numeric"):
        env.step(np.full((4, 20), "a"))
    with pytest.raises(EnvError, match="rows must be"):
        env.replace(np.array([9]), np.array([1]))
