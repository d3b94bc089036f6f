"""Environment configuration: one dataclass, loadable from a TOML table or dict."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from starec_env.configtools import config_from_dict, read_toml
from starec_env.simulator.config import SimulatorConfig

MODES = ("online", "offline")


@dataclass
class EnvConfig:
    """Everything that defines a STARec environment.

    ``dataset`` is a loader name ("synthetic", "ml-100k", ...) or a ready
    :class:`~starec_env.data.model.Dataset`. ``n_users`` is the number of
    agents (for the synthetic world also its number of users unless
    ``world`` says otherwise; None = every user of a real dataset).
    ``seed`` fixes the world/simulator fit (0 when None) and seeds the first
    episode; ``world`` holds :class:`~starec_env.data.synthetic.SyntheticConfig`
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

    def __post_init__(self) -> None:
        if isinstance(self.simulator, dict):
            self.simulator = SimulatorConfig.from_dict(self.simulator)
        if self.mode not in MODES:
            raise ValueError(f"EnvConfig.mode: expected one of {MODES}, got {self.mode!r}")
        for name in ("n_candidates", "slate_size", "max_cycles", "history_len"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"EnvConfig.{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.slate_size > self.n_candidates:
            raise ValueError(
                f"EnvConfig.slate_size ({self.slate_size}) cannot exceed n_candidates ({self.n_candidates})"
            )
        if self.n_users is not None and self.n_users < 1:
            raise ValueError(f"EnvConfig.n_users: expected >= 1 or None, got {self.n_users}")
        if not 0.0 <= self.candidate_pop_mix <= 1.0:
            raise ValueError(f"EnvConfig.candidate_pop_mix: expected a value in [0, 1], got {self.candidate_pop_mix}")

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "EnvConfig":
        """Build from plain values (e.g. a TOML table); unknown keys are an error."""
        return config_from_dict(cls, values, "environment", source)

    @classmethod
    def from_toml(cls, path: str | Path, table: str | None = "env") -> "EnvConfig":
        """Load from a TOML file; options live in ``[env]`` (or the top level when absent)."""
        data = read_toml(path)
        if table and table in data:
            data = data[table]
        return cls.from_dict(data, source=str(path))

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
