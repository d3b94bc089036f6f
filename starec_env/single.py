"""Single-user Gymnasium environment (registered as ``"STARec/SingleUser-v0"``).

Each episode picks one servable user of the world (uniformly with the env's
seeded generator, or ``options={"user": index}``) and runs the same
simulation as the multi-agent env with the same observation/action spaces
(``observation="features"`` for the flat feature vector), so standard
single-agent RL tooling (and ``gymnasium.utils.env_checker.check_env``) works.
``n_users`` sizes the synthetic world here, not a number of agents.
"""
from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from starec_env.batched import BatchedEnv, as_scores
from starec_env.config import EnvConfig
from starec_env.errors import EnvError, check_int
from starec_env.parallel import ObservationBuilder
from starec_env.render import RENDER_MODES, check_render_mode, render


def one_user_options(config: dict[str, Any]) -> dict[str, Any]:
    """Options of the envs that draw their own users: ``n_users`` only sizes a synthetic
    world there, so with any other dataset it defaults to every user (None), not 100 agents."""
    if "n_users" not in config and config.get("dataset", "synthetic") != "synthetic":
        config["n_users"] = None
    return config


class SingleUserEnv(gymnasium.Env):
    """One simulated user; keyword options are EnvConfig fields (``n_users`` sizes the world)."""

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 1}

    def __init__(self, render_mode: str | None = None, cfg: EnvConfig | None = None, **config: Any) -> None:
        self.render_mode = check_render_mode(render_mode)
        self.batched = BatchedEnv(cfg, **(config if cfg is not None else one_user_options(config)))
        if self.batched.offline:
            raise EnvError("mode: SingleUserEnv runs online episodes only, got mode='offline'")
        if self.batched.cfg.fixed_agents:
            raise EnvError("fixed_agents: only the parallel env lists agents; SingleUserEnv has one user")
        self._obs = ObservationBuilder(self.batched.dataset, self.batched.n_candidates, self.batched.history_len)
        self.features_obs = self.batched.cfg.observation == "features"
        self.observation_space = (self.batched.feature_builder.observation_space if self.features_obs
                                  else self._obs.observation_space)
        self.action_space = self._obs.action_space
        self.user: int | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            check_int("reset(seed)", seed, minimum=0)
        super().reset(seed=seed)
        options = dict(options or {})
        user = options.pop("user", None)
        if options:
            raise EnvError(f"reset(options): unknown option(s) {sorted(options)}; expected 'user'")
        eligible = self.batched.eligible_users
        if user is None:
            user = int(eligible[self.np_random.integers(len(eligible))])
        else:
            n_users = self.batched.dataset.n_users
            user = check_int("options['user']", user, minimum=0)
            if user >= n_users or not np.isin(user, eligible):
                raise EnvError(f"options['user']={user} is not a servable user index in [0, {n_users})")
        self.user = user
        episode_seed = int(self.np_random.integers(2**63 - 1))
        self.batched.reset(seed=episode_seed, users=np.array([self.user]))
        return self._observe(), {"user": self.user}

    def step(self, action: np.ndarray):
        if self.batched.state is None:
            raise EnvError("call reset() before step()")
        scores = as_scores(action, "action")
        n_cand = self.batched.n_candidates
        if scores.shape != (n_cand,):
            raise EnvError(f"action has shape {scores.shape}; expected ({n_cand},) scores, one per candidate")
        res = self.batched.step(scores[None, :])
        info = {"clicked": int(res.feedback.clicked[0]), "rating": float(res.feedback.rating[0])}
        return self._observe(), float(res.rewards[0]), bool(res.terminated[0]), bool(res.truncated[0]), info

    def render(self) -> str | None:
        """A text frame of the user's last slate, click and rating ("ansi": returned; "human": printed)."""
        return render(self.render_mode, self.batched, 0, f"user index {self.user}")

    def text_view(self):
        """Profile, history and candidates of the current user as text-ready fields."""
        return self.batched.text_view(0)

    def _observe(self):
        if self.features_obs:
            return self.batched.features()[0]
        return self._obs.single(self.batched.batch, 0)
