"""STARec environment: a multi-agent recommender simulation where every user is an agent.

PettingZoo layout: :func:`parallel_env` (ParallelEnv), :func:`env` (AEC,
order-enforced) and :func:`raw_env` (AEC, unwrapped), all defaulting to the
synthetic world and taking :class:`~starec_env.config.EnvConfig` fields as
keywords (``dataset=``, ``n_users=``, ``n_candidates=``, ``slate_size=``,
``max_cycles=``, ``seed=``, ...). :class:`~starec_env.batched.BatchedEnv` is
the arrays-in/arrays-out fast path. A single-user ``gymnasium.Env`` is
registered as ``"STARec/SingleUser-v0"`` (``max_episode_steps`` 50, the
default ``max_cycles``); ``gymnasium.make_vec`` on it builds
:class:`~starec_env.vector.StarecVectorEnv`, one sub-environment per
concurrent user. ``"starec_env:STARec/SingleUser-v0"`` works from a fresh
interpreter (Gymnasium imports the package first).

The heavy modules load on first use, so ``import starec_env.data`` stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

import gymnasium

SINGLE_USER_ENV_ID = "STARec/SingleUser-v0"
if SINGLE_USER_ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=SINGLE_USER_ENV_ID,
        entry_point="starec_env.single:SingleUserEnv",
        vector_entry_point="starec_env.vector:StarecVectorEnv",
        max_episode_steps=50,  # EnvConfig.max_cycles' default; pass max_episode_steps= with another max_cycles
    )

_LAZY = {
    "parallel_env": "starec_env.parallel",
    "env": "starec_env.parallel",
    "raw_env": "starec_env.parallel",
    "StarecParallelEnv": "starec_env.parallel",
    "BatchedEnv": "starec_env.batched",
    "StepResult": "starec_env.batched",
    "EnvConfig": "starec_env.config",
    "EnvError": "starec_env.errors",
    "FeatureBuilder": "starec_env.features",
    "SingleUserEnv": "starec_env.single",
    "StarecVectorEnv": "starec_env.vector",
    "AgentTextView": "starec_env.text",
    "text_view": "starec_env.text",
}

__all__ = ["SINGLE_USER_ENV_ID", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'starec_env' has no attribute {name!r}")
