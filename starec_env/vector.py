"""Gymnasium ``VectorEnv`` over the batched path: one sub-environment per concurrent user.

The users are homogeneous, so one policy shared by all of them is the natural
learner, and the batched path already steps all of them at array speed.
Sub-environment ``i`` is a slot holding one user's episode; when that user
leaves (terminated) or hits ``max_cycles`` (truncated), a fresh user drawn
uniformly from the world's servable users takes the slot in the same step
(Gymnasium's "same-step" autoreset): the returned observation is the new
user's first one, and ``infos["final_obs"][i]`` / ``infos["final_info"]``
hold the departed user's last. All slots share one world, so popularity
coupling acts across them.

``gymnasium.make_vec("starec_env:STARec/SingleUser-v0", num_envs=64,
observation="features")`` builds it; the SB3 adapter is
:class:`starec_env.sb3.StarecSB3VecEnv`. As for the single-user env,
``n_users`` sizes the synthetic world and ``num_envs`` is the number of
concurrent users.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from starec_env.batched import BatchedEnv, as_scores
from starec_env.config import EnvConfig
from starec_env.errors import EnvError, check_int
from starec_env.parallel import OBS_KEYS, ObservationBuilder
from starec_env.render import RENDER_MODES, check_render_mode, render
from starec_env.single import one_user_options

_USER_STREAM = 0x05E7  # which users fill the slots, independent of the episode draws


class StarecVectorEnv(VectorEnv):
    """``num_envs`` concurrent single-user episodes with autoreset (see module doc)."""

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 1, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 8,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        cfg: EnvConfig | None = None,
        **config: Any,
    ) -> None:
        self.render_mode = check_render_mode(render_mode)
        self.num_envs = check_int("num_envs", num_envs, minimum=1)
        if max_episode_steps is not None and "max_cycles" not in config:
            # make_vec passes the spec's limit; an explicit max_cycles wins.
            config["max_cycles"] = check_int("max_episode_steps", max_episode_steps, minimum=1)
        self.batched = BatchedEnv(cfg, **(config if cfg is not None else one_user_options(config)))
        if self.batched.offline:
            raise EnvError("mode: StarecVectorEnv runs online episodes only, got mode='offline'")
        if self.batched.cfg.fixed_agents:
            raise EnvError("fixed_agents: only the parallel env lists agents; the vector env refills its slots")
        b = self.batched
        self._obs = ObservationBuilder(b.dataset, b.n_candidates, b.history_len)
        self.features_obs = b.cfg.observation == "features"
        self.single_observation_space = b.feature_builder.observation_space if self.features_obs else self._obs.observation_space
        self.single_action_space = self._obs.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._user_rng: np.random.Generator | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Fill every slot with a fresh user; ``seed`` reseeds the episode and user streams."""
        if seed is not None:
            check_int("reset(seed)", seed, minimum=0)
            self._user_rng = np.random.default_rng([seed, _USER_STREAM])
        elif self._user_rng is None:
            base = self.batched.cfg.seed
            self._user_rng = np.random.default_rng(None if base is None else [base, _USER_STREAM])
        if options:
            raise EnvError(f"reset(options): the vector env takes no options, got {sorted(options)}")
        self.batched.reset(seed=seed, users=self._draw(self.num_envs))
        return self._observe(), {"user": self.batched.users.copy()}

    def step(self, actions: np.ndarray):
        """Step every slot; finished slots are refilled at once (same-step autoreset)."""
        if self.batched.state is None:
            raise EnvError("call reset() before step()")
        scores = as_scores(actions, "actions")
        expected = (self.num_envs, self.batched.n_candidates)
        if scores.shape != expected:
            raise EnvError(f"actions have shape {scores.shape}; expected {expected} (num_envs x candidates)")
        res = self.batched.step(scores)
        done = res.terminated | res.truncated
        step_info = {"clicked": res.feedback.clicked.copy(), "rating": res.feedback.rating.astype(np.float64)}
        infos: dict[str, Any] = {**step_info, "user": self.batched.users.copy()}
        if done.any():
            rows = np.flatnonzero(done)
            final = np.full(self.num_envs, None, dtype=object)
            final_obs = self._observe(rows)
            for k, row in enumerate(rows.tolist()):
                final[row] = final_obs[k] if self.features_obs else {key: v[k] for key, v in final_obs.items()}
            infos.update(final_obs=final, _final_obs=done,
                         final_info={**step_info, **{f"_{k}": done for k in step_info}}, _final_info=done)
            self.batched.replace(rows, self._draw(len(rows)))
            infos["user"] = self.batched.users.copy()
        return self._observe(), res.rewards.copy(), res.terminated.copy(), res.truncated.copy(), infos

    def render(self) -> str | None:
        """A text frame of slot 0's last slate, click and rating ("ansi": returned; "human": printed)."""
        return render(self.render_mode, self.batched, 0, "slot 0")

    def close(self, **kwargs: Any) -> None:
        self.closed = True

    def _draw(self, n: int) -> np.ndarray:
        eligible = self.batched.eligible_users
        return eligible[self._user_rng.integers(len(eligible), size=n)]

    def _observe(self, rows: np.ndarray | None = None):
        if self.features_obs:
            return self.batched.features(rows)
        batch = self.batched.batch if rows is None else self.batched.batch.take(rows)
        return dict(zip(OBS_KEYS, self._obs.arrays(batch)))

