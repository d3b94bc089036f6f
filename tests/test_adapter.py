"""A Policy driven through the PettingZoo dict API (policies.adapter) and the batched loop (policies.loop)."""
from __future__ import annotations

import numpy as np
import pytest

import starec_env
from policies import Policy, PolicyContext, make_policy
from policies.adapter import PolicyAgents
from policies.loop import play
from starec_env.batched import BatchedEnv
from starec_env.errors import EnvError
from starec_env.protocol import LeaveOneOut
from starec_env.types import Feedback, RankingBatch

CONFIG = {"world": {"n_users": 100, "n_items": 200}, "n_users": 12, "max_cycles": 25, "seed": 0}


class Recorder(Policy):
    """The genre baseline, minus what each user was already shown (so the
    trajectory depends on what observe() received); records every call."""

    def __init__(self, dataset) -> None:
        self.inner = make_policy("genre", PolicyContext(dataset, seed=0))
        self.inner.fit(LeaveOneOut(dataset, n_users=50, seed=0).split)
        self.shown: set[tuple[int, int]] = set()
        self.calls: list[tuple[str, tuple[np.ndarray, ...]]] = []

    def score(self, batch: RankingBatch) -> np.ndarray:
        seen = np.array([[(u, i) in self.shown for i in row] for u, row in zip(batch.users.tolist(), batch.candidates.tolist())])
        scores = self.inner.score(batch) - seen.reshape(batch.candidates.shape)
        self.calls.append(("score", (*_fields(batch), scores)))
        return scores

    def observe(self, batch: RankingBatch, feedback: Feedback) -> None:
        self.shown.update((u, i) for u, row in zip(feedback.users.tolist(), feedback.shown.tolist()) for i in row)
        self.calls.append(("observe", (*_fields(batch), *_fields(feedback))))


def _fields(obj) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(v) for v in vars(obj).values())


def _run_adapter(**options) -> tuple[Recorder, list[np.ndarray]]:
    env = starec_env.parallel_env(**CONFIG, **options)
    policy = Recorder(env.dataset)
    agents = PolicyAgents(policy, env)
    obs, _ = env.reset(seed=3)
    rewards = []
    while env.agents:
        obs, reward, _, _, infos = env.step(agents.act(obs))
        agents.observe(infos)
        acted = policy.calls[-1][1][0]  # the users observe() just got, in the order they acted
        by_user = {int(env.batched.users[env.agent_row(a)]): r for a, r in reward.items()}
        rewards.append(np.array([by_user[int(u)] for u in acted]))
    return policy, rewards


@pytest.fixture(scope="module")
def batched_run() -> tuple[Recorder, list[np.ndarray]]:
    env = BatchedEnv(**CONFIG)
    policy = Recorder(env.dataset)
    rewards = [step.result.rewards[step.rows] for step in play(env, policy, seed=3)]
    return policy, rewards


@pytest.mark.parametrize("fixed_agents", [False, True])
def test_the_dict_api_gives_the_batched_trajectory(batched_run, fixed_agents) -> None:
    """Same seed: the same batches scored, scores, slates, clicks, ratings and rewards, step by step."""
    expected, expected_rewards = batched_run
    got, rewards = _run_adapter(fixed_agents=fixed_agents)
    assert len(expected_rewards) >= 10 and sum(len(r) for r in expected_rewards) >= 100  # a long trajectory
    assert [kind for kind, _ in got.calls] == [kind for kind, _ in expected.calls]
    for (_, a), (_, b) in zip(got.calls, expected.calls):
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(np.array_equal(x, y) for x, y in zip(rewards, expected_rewards))
    clicks = [call[1][6] for call in got.calls if call[0] == "observe"]  # Feedback.clicked
    assert any((c >= 0).any() for c in clicks) and any((c < 0).any() for c in clicks)


class Flat(Policy):
    name = "flat"

    def score(self, batch: RankingBatch) -> np.ndarray:
        return np.zeros(batch.candidates.shape[1])  # one row for everyone: would broadcast silently


def test_misuse_is_a_clear_error() -> None:
    env = starec_env.parallel_env(**CONFIG)
    policy = Recorder(env.dataset)
    with pytest.raises(TypeError, match="STARec ParallelEnv"):
        PolicyAgents(policy, BatchedEnv(**CONFIG))
    with pytest.raises(ValueError, match="observation='features'"):
        PolicyAgents(policy, starec_env.parallel_env(**CONFIG, observation="features"))
    agents = PolicyAgents(policy, env)
    obs, _ = env.reset(seed=0)
    with pytest.raises(RuntimeError, match="act"):
        agents.observe({})
    first = env.agents[0]
    with pytest.raises(EnvError, match="unknown agent 'bob'"):
        agents.act({"bob": obs[first]})
    with pytest.raises(ValueError, match=f"observation of {first!r}"):
        agents.act({first: {"candidates": obs[first]["candidates"]}})
    with pytest.raises(ValueError, match=r"policy 'flat' returned scores of shape \(20,\)"):
        PolicyAgents(Flat(), env).act(obs)
    with pytest.raises(ValueError, match=r"policy 'flat' returned scores of shape"):
        next(play(BatchedEnv(**CONFIG), Flat(), seed=0))
    env.step(agents.act(obs))
    with pytest.raises(ValueError, match="no click/rating info"):
        agents.observe({})
