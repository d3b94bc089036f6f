"""The run's world: the dataset and simulator every stage shares, and the envs built over it.

The world is built once per run from ``data.seed`` (so seeds vary the
evaluation and training draws, not the world); :func:`make_env` sizes a
batched env over it for LLM or cheap agents from the run's ``[online.*]``
tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from experiments.config import ConfigError, RunConfig
from starec_env.batched import BatchedEnv
from starec_env.config import EnvConfig
from starec_env.data import PreprocessConfig, load_dataset
from starec_env.data.errors import DataOptionError
from starec_env.data.model import Dataset
from starec_env.simulator import SimulatorConfig, build_simulator


@dataclass
class World:
    """The dataset every policy is judged on and the simulator answering it."""

    dataset: Dataset
    simulator: Any


def load_world(cfg: RunConfig) -> World:
    """Load and preprocess the dataset, then fit/build its simulator."""
    data = cfg.data
    try:
        pre = PreprocessConfig.from_dict(data.preprocess) if data.preprocess else None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[data.preprocess]: {err}") from None
    try:
        dataset = load_dataset(data.dataset, data.data_dir, preprocess=pre, seed=data.seed, **data.options)
    except DataOptionError as err:  # an option the loader does not take, or a value it cannot use
        raise ConfigError(f"[data.options]: {err}") from None
    return World(dataset, build_simulator(dataset, _simulator_config(cfg), data.seed))


def _simulator_config(cfg: RunConfig) -> SimulatorConfig:
    """The simulator settings; on real data the fit holds out what the run's
    protocol holds out (each user's last positive by the protocol's threshold)."""
    try:
        return SimulatorConfig.from_dict({"holdout_threshold": cfg.protocol.positive_threshold, **cfg.simulator})
    except ValueError as err:
        raise ConfigError(f"[simulator]: {err}") from None


def env_config(cfg: RunConfig, world: World, llm: bool = True) -> EnvConfig:
    """EnvConfig of the online sessions: the run's world and ``[online.env]``
    options, sized for LLM agents (``online.llm_users`` agents, ``[online.llm_env]``
    on top) or, with ``llm=False``, for cheap agents (``online.users``)."""
    online = cfg.online
    users, extra = (online.llm_users, online.llm_env) if llm else (online.users, {})
    values = {"n_users": min(users, world.dataset.n_users), "history_len": cfg.protocol.history_len, **online.env, **extra}
    values.update(dataset=world.dataset, seed=cfg.data.seed, simulator=_simulator_config(cfg))
    source = "[online.llm_env]" if llm and extra else "[online.env]"
    try:
        return EnvConfig.from_dict(values, source=source)
    except ValueError as err:  # unknown keys name the table already; bad values name the field
        raise ConfigError(str(err) if str(err).startswith(source) else f"{source}: {err}") from None


def make_env(cfg: RunConfig, world: World, llm: bool = True) -> BatchedEnv:
    """The batched env over the run's world (same item indices as the protocol),
    sized for LLM agents unless ``llm=False`` (see :func:`env_config`)."""
    return BatchedEnv(env_config(cfg, world, llm), simulator=world.simulator)
