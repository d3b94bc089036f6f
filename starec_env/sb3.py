"""Stable-Baselines3 ``VecEnv`` adapter of :class:`~starec_env.vector.StarecVectorEnv` (extra ``rl``).

SB3 drives vectorised environments through its own ``VecEnv`` interface
(auto-reset with ``infos[i]["terminal_observation"]``, list-of-dict infos,
``seed()`` before ``reset()``); this adapter maps the Gymnasium vector env
onto it, so one SB3 policy is shared by all concurrent users at array speed:

    from stable_baselines3 import PPO
    from starec_env.sb3 import StarecSB3VecEnv

    venv = StarecSB3VecEnv(num_envs=64, observation="features", seed=0)
    PPO("MlpPolicy", venv).learn(100_000)

Importing this module needs ``stable-baselines3`` (``pip install "starec[rl]"``).
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from starec_env.vector import StarecVectorEnv


class StarecSB3VecEnv(VecEnv):
    """SB3 view of a :class:`StarecVectorEnv`; keywords build one (``num_envs=``, EnvConfig fields)."""

    def __init__(self, venv: StarecVectorEnv | None = None, **kwargs: Any) -> None:
        self.venv = venv if venv is not None else StarecVectorEnv(**kwargs)
        self._actions: np.ndarray | None = None
        super().__init__(self.venv.num_envs, self.venv.single_observation_space, self.venv.single_action_space)

    def reset(self):
        """Reset every slot; a seed set by ``seed()`` (SB3 sets one per slot) seeds the whole batch."""
        obs, info = self.venv.reset(seed=self._seeds[0])
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{"user": int(u)} for u in info["user"]]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [
            {"clicked": int(c), "rating": float(r)} for c, r in zip(info["clicked"].tolist(), info["rating"].tolist())
        ]
        for i in np.flatnonzero(dones).tolist():
            infos[i]["terminal_observation"] = info["final_obs"][i]
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def render(self, mode: str | None = None) -> str | None:
        return self.venv.render()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """One shared env behind every slot: the same attribute value for each index."""
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        out = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [out for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else indices
