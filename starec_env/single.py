"""Single-user Gymnasium environment (registered as ``"STARec/SingleUser-v0"``).

Each episode picks one user of the world (uniformly with the env's seeded
generator, or ``options={"user": index}``) and runs the same simulation as
the multi-agent env with the same observation/action spaces, so standard
single-agent RL tooling (and ``gymnasium.utils.env_checker.check_env``) works.
"""
from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from starec_env.batched import BatchedEnv, EnvError
from starec_env.config import EnvConfig
from starec_env.parallel import ObservationBuilder


class SingleUserEnv(gymnasium.Env):
    """One simulated user; keyword options are EnvConfig fields (``n_users`` sizes the world)."""

    metadata = {"render_modes": []}

    def __init__(self, render_mode: str | None = None, cfg: EnvConfig | None = None, **config: Any) -> None:
        if render_mode is not None:
            raise EnvError(f"SingleUserEnv has no render modes, got render_mode={render_mode!r}")
        self.batched = BatchedEnv(cfg, **config)
        if self.batched.offline:
            raise EnvError("SingleUserEnv runs online episodes; use mode='online'")
        self._obs = ObservationBuilder(self.batched.dataset, self.batched.n_candidates, self.batched.history_len)
        self.observation_space = self._obs.observation_space
        self.action_space = self._obs.action_space
        self.user: int | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        n_users = self.batched.dataset.n_users
        user = (options or {}).get("user")
        if user is None:
            user = int(self.np_random.integers(n_users))
        elif not 0 <= int(user) < n_users:
            raise EnvError(f"options['user']={user} is not a user index in [0, {n_users})")
        self.user = int(user)
        episode_seed = int(self.np_random.integers(2**63 - 1))
        batch = self.batched.reset(seed=episode_seed, users=np.array([self.user]))
        return self._obs.single(batch, 0), {"user": self.user}

    def step(self, action: np.ndarray):
        scores = np.asarray(action, dtype=np.float64).reshape(1, -1)
        res = self.batched.step(scores)
        obs = self._obs.single(res.batch, 0)
        info = {"clicked": int(res.feedback.clicked[0]), "rating": float(res.feedback.rating[0])}
        return obs, float(res.rewards[0]), bool(res.terminated[0]), bool(res.truncated[0]), info

    def text_view(self):
        """Profile, history and candidates of the current user as text-ready fields."""
        return self.batched.text_view(0)
