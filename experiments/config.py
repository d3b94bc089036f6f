"""Benchmark run configuration: dataclasses, filled from TOML then the CLI.

A TOML file mirrors the dataclasses (top-level keys plus ``[data]``,
``[protocol]``, ``[online]`` and ``[policy.<name>]`` tables). Every key is
checked, so a typo names the key and the file instead of silently running
with a default. The checking machinery is shared with the training config.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from experiments.train.config import ConfigError, _merge, _read_toml, parse_override
from policies.registry import DEFAULT_POLICIES, available
from starec_env.data import DATASETS

__all__ = ["ConfigError", "DataSection", "ProtocolSection", "OnlineSection", "RunConfig", "load_run_config", "parse_seeds"]


@dataclass
class DataSection:
    """Which world. ``seed`` fixes the world itself (synthetic generation,
    preprocessing) so that run seeds vary only the evaluation; ``options`` go
    to the loader (e.g. synthetic size), ``preprocess`` to PreprocessConfig."""

    dataset: str = "synthetic"
    data_dir: str | None = None
    seed: int = 0
    options: dict = field(default_factory=dict)
    preprocess: dict = field(default_factory=dict)


@dataclass
class ProtocolSection:
    """The paper's leave-one-out protocol (1 positive + ``negatives``)."""

    users: int = 1000
    negatives: int = 19
    history_len: int = 40
    positive_threshold: float = 3.0
    batch_size: int = 256


@dataclass
class OnlineSection:
    """Simulated sessions through the batched env; ``env`` overrides EnvConfig fields."""

    enabled: bool = True
    users: int = 500
    env: dict = field(default_factory=dict)


@dataclass
class RunConfig:
    """One benchmark run. ``policy`` maps a policy name to its options table;
    ``privileged`` names the policies handed the simulator (upper bounds,
    teachers); ``simulator`` holds SimulatorConfig options (offline world and
    online env alike); ``threads`` sets torch's intra-op threads (0 = torch's
    default; 1 is fastest for these small models on a shared machine)."""

    stage: str = "eval"
    policies: list = field(default_factory=lambda: list(DEFAULT_POLICIES))
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    out: str = "runs/latest"
    model: str | None = None
    threads: int = 1
    progress: bool = True
    privileged: list = field(default_factory=lambda: ["oracle"])
    policy: dict = field(default_factory=dict)
    simulator: dict = field(default_factory=dict)
    data: DataSection = field(default_factory=DataSection)
    protocol: ProtocolSection = field(default_factory=ProtocolSection)
    online: OnlineSection = field(default_factory=OnlineSection)

    def to_dict(self) -> dict:
        return asdict(self)

    def policy_options(self, name: str) -> dict:
        """Options for policy ``name`` (its table, plus ``model`` when set)."""
        opts = dict(self.policy.get(name, {}))
        if self.model is not None:
            opts.setdefault("model", self.model)
        return opts


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; a single number ``"3"`` means three seeds 0..2."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--seeds expects integers like '0,1,2' or a count like '3', got {text!r}") from None
    if not values:
        raise ConfigError("--seeds is empty")
    if len(values) == 1 and "," not in str(text):
        if values[0] < 1:
            raise ConfigError(f"--seeds count must be >= 1, got {values[0]}")
        return list(range(values[0]))
    return values


def load_run_config(path: str | Path | None = None, overrides: dict | None = None, sets: list[str] | None = None) -> RunConfig:
    """Defaults, then the TOML at ``path``, then ``overrides`` (nested dict
    from CLI flags), then ``sets`` (``section.key=value`` strings)."""
    cfg = RunConfig()
    if path is not None:
        cfg = _apply(cfg, _read_toml(Path(path)), str(path))
    if overrides:
        cfg = _apply(cfg, overrides, "command line")
    for item in sets or []:
        keys, value = parse_override(item)
        nested: dict = {}
        node = nested
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
        cfg = _apply(cfg, nested, f"--set {item}")
    _validate(cfg)
    return cfg


def _apply(cfg: RunConfig, data: dict, where: str) -> RunConfig:
    """Checked merge in which free-form tables (``policy``, ``options``, ``env``)
    are merged key by key, so ``--set policy.bpr.epochs=5`` keeps the other
    options the TOML gave instead of replacing the whole table."""
    return _merge(cfg, _fill_tables(cfg, data), where)


def _fill_tables(obj: object, data: dict) -> dict:
    out = {}
    for key, value in data.items():
        current = getattr(obj, key, None)
        if isinstance(value, dict) and isinstance(current, dict):
            value = _deep_merge(current, value)
        elif isinstance(value, dict) and hasattr(current, "__dataclass_fields__"):
            value = _fill_tables(current, value)
        out[key] = value
    return out


def _deep_merge(base: dict, new: dict) -> dict:
    merged = dict(base)
    for key, value in new.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _validate(cfg: RunConfig) -> None:
    if not cfg.policies:
        raise ConfigError("no policies selected: expected a list such as ['pop', 'bpr']")
    if cfg.data.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg.data.dataset!r}; known: {', '.join(DATASETS)}")
    unknown = [p for p in cfg.policies if p not in available()]
    if unknown:
        raise ConfigError(f"unknown policies {unknown}; known: {', '.join(available())}")
    if not cfg.seeds or not all(isinstance(s, int) for s in cfg.seeds):
        raise ConfigError(f"seeds must be a non-empty list of integers, got {cfg.seeds!r}")
    for name, table in cfg.policy.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[policy.{name}] must be a table of options, got {table!r}")
    if cfg.protocol.users < 1 or cfg.protocol.negatives < 1:
        raise ConfigError("protocol.users and protocol.negatives must be >= 1")
