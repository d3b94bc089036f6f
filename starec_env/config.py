"""Environment configuration: one dataclass, built from keywords or a dict (e.g. a TOML table)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from starec_env.configtools import config_from_dict
from starec_env.data.model import Dataset
from starec_env.errors import EnvError, check_choice, check_float, check_int
from starec_env.simulator.config import SimulatorConfig

MODES = ("online", "offline")
#: Observation layouts: the raw dict of ids/genres/ratings, or a flat float32 feature vector
#: (see :mod:`starec_env.features`).
OBSERVATIONS = ("dict", "features")


@dataclass
class EnvConfig:
    """Everything that defines a STARec environment.

    ``dataset`` is a loader name ("synthetic", "ml-100k", ...) or a ready
    :class:`~starec_env.data.model.Dataset`. ``n_users`` is the number of
    agents (for the synthetic world also its number of users unless
    ``world`` says otherwise; None = every user of a real dataset).
    ``seed`` is the *world seed*: it fixes the synthetic world, the simulator
    fit and which users are the agents (0 when None), and seeds the first
    episode when ``reset()`` gets no seed; ``reset(seed=...)`` reseeds only the
    episode stream (candidates, clicks, ratings) in the same world.
    ``observation`` picks the observation layout (:data:`OBSERVATIONS`);
    ``fixed_agents`` keeps departed users listed in the parallel env
    (terminated, zero observation and reward) until everyone is done, which
    is what shared-policy tools such as SuperSuit expect. ``world`` holds :class:`~starec_env.data.synthetic.SyntheticConfig`
    options, ``data_options`` keyword options for other loaders. ``reward``
    is an entry-point name of the ``starec.rewards`` group or a callable;
    None means "click_rating" online and "ndcg" (of the held-out target) offline.
    """

    dataset: Any = "synthetic"
    data_dir: str | None = None
    n_users: int | None = 100
    n_candidates: int = 20
    slate_size: int = 5
    max_cycles: int = 50
    seed: int | None = None
    history_len: int = 40
    popularity_coupling: float = 0.0
    reward: str | Callable | None = None
    mode: str = "online"
    #: Share of popularity-weighted (vs. uniform) draws among online candidates.
    candidate_pop_mix: float = 0.5
    #: Offline mode: ratings above this make a positive (paper: > 3).
    positive_threshold: float = 3.0
    world: dict = field(default_factory=dict)
    data_options: dict = field(default_factory=dict)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    observation: str = "dict"
    fixed_agents: bool = False

    def __post_init__(self) -> None:
        """Check every option by name: a wrong type or value must not reach numpy."""
        if isinstance(self.simulator, dict):
            self.simulator = SimulatorConfig.from_dict(self.simulator)
        if not isinstance(self.simulator, SimulatorConfig):
            raise EnvError(f"EnvConfig.simulator: expected a SimulatorConfig or a dict, got {type(self.simulator).__name__}")
        check_choice("EnvConfig.mode", self.mode, MODES)
        check_choice("EnvConfig.observation", self.observation, OBSERVATIONS)
        for name in ("n_candidates", "slate_size", "max_cycles", "history_len"):
            setattr(self, name, check_int(f"EnvConfig.{name}", getattr(self, name), minimum=1))
        if self.slate_size > self.n_candidates:
            raise EnvError(f"EnvConfig.slate_size ({self.slate_size}) cannot exceed n_candidates ({self.n_candidates})")
        self.n_users = check_int("EnvConfig.n_users", self.n_users, minimum=1, allow_none=True)
        self.seed = check_int("EnvConfig.seed", self.seed, minimum=0, allow_none=True)
        self.popularity_coupling = check_float("EnvConfig.popularity_coupling", self.popularity_coupling, low=0.0)
        self.candidate_pop_mix = check_float("EnvConfig.candidate_pop_mix", self.candidate_pop_mix, 0.0, 1.0)
        self.positive_threshold = check_float("EnvConfig.positive_threshold", self.positive_threshold)
        if not isinstance(self.fixed_agents, bool):
            raise EnvError(f"EnvConfig.fixed_agents: expected True or False, got {self.fixed_agents!r}")
        if not (self.reward is None or isinstance(self.reward, str) or callable(self.reward)):
            raise EnvError(f"EnvConfig.reward: expected a reward name or a callable, got {self.reward!r}")
        if not (self.data_dir is None or isinstance(self.data_dir, (str, os.PathLike))):
            raise EnvError(f"EnvConfig.data_dir: expected a path or None, got {self.data_dir!r}")
        for name in ("world", "data_options"):
            if not isinstance(getattr(self, name), Mapping):
                raise EnvError(f"EnvConfig.{name}: expected a table of options, got {getattr(self, name)!r}")
        if not isinstance(self.dataset, str):
            if not isinstance(self.dataset, Dataset):
                raise EnvError(f"EnvConfig.dataset: expected a loader name or a Dataset, got {type(self.dataset).__name__}")

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "EnvConfig":
        """Build from plain values (e.g. a TOML table); unknown keys are an error."""
        return config_from_dict(cls, values, "environment", source)

    def replace(self, **overrides: Any) -> "EnvConfig":
        """A copy with some options changed (validated like the constructor)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(overrides)
        return type(self).from_dict(values)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["simulator"] = asdict(self.simulator)
        if not isinstance(self.dataset, str):
            out["dataset"] = getattr(self.dataset, "name", "custom")
        if callable(self.reward):
            out["reward"] = getattr(self.reward, "__name__", "custom")
        return out
