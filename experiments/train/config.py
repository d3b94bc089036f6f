"""Training configuration: dataclasses loadable from TOML presets + overrides.

A preset (``experiments/configs/presets/<name>.toml``) fills the sections;
a user TOML and ``section.key=value`` overrides refine it. Unknown sections
or keys are reported with the file and a close match, so a typo never
silently falls back to a default.
"""
from __future__ import annotations

import difflib
import tomllib
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from reward.shaping import RewardConfig

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "presets"


class ConfigError(ValueError):
    """A training configuration problem: names the source, section and key."""


@dataclass
class ModelConfig:
    """The student. ``name``: "tiny", "smollm2-135m", a local folder or hub id."""

    name: str = "tiny"
    dtype: str | None = None
    threads: int | None = None
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05


@dataclass
class DataConfig:
    """World and protocol. ``options`` go to the dataset loader (e.g. synthetic size)."""

    dataset: str = "synthetic"
    data_dir: str | None = None
    options: dict = field(default_factory=dict)
    n_negatives: int = 19
    history_len: int = 40
    positive_threshold: float = 3.0
    eval_users: int = 200


@dataclass
class PromptSection:
    """Prompt settings shared by distillation, RL and evaluation."""

    evidence: bool = True
    max_history: int = 20
    max_words: int = 60


@dataclass
class DistillConfig:
    """Stage 1: teacher traces -> filter/augment -> TRL SFT."""

    teacher: str = "oracle"
    train_users: int = 1000
    slow_fraction: float = 0.3
    rethink: int = 1
    min_ndcg: float = 0.0
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 5e-5
    max_length: int = 1024
    save_steps: int = 50


@dataclass
class RLConfig:
    """Stage 2: GRPO in the simulator, anchored to the SFT model by ``beta``."""

    steps: int = 100
    prompts_per_step: int = 8
    num_generations: int = 8
    max_completion_length: int = 64
    learning_rate: float = 1e-6
    beta: float = 1e-3
    temperature: float = 1.0
    slow_fraction: float = 0.25
    source: str = "online"
    save_steps: int = 10
    logging_steps: int = 1


@dataclass
class EvalConfig:
    """Stage 3: rows to compare and the seeds to average over."""

    seeds: list = field(default_factory=lambda: [0])
    baselines: list = field(default_factory=lambda: ["pop", "genre"])
    rows: list = field(default_factory=lambda: ["starec", "starec-sft", "starec-rl-only", "starec-noreflect", "teacher"])
    online_users: int = 0
    online_steps: int = 0
    batch_size: int = 16


@dataclass
class TrainConfig:
    """The whole distill -> RL -> eval pipeline."""

    preset: str = "custom"
    seed: int = 0
    device: str = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptSection = field(default_factory=PromptSection)
    distill: DistillConfig = field(default_factory=DistillConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _merge(obj: Any, data: dict, where: str) -> Any:
    """A copy of dataclass ``obj`` updated from ``data``, checking every key."""
    known = {f.name: f for f in fields(obj)}
    updates = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}{_suggest(key, list(known))}; known: {sorted(known)}")
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table, got {type(value).__name__}")
            updates[key] = _merge(current, value, f"{where} [{key}]")
        else:
            updates[key] = _coerce(value, current, f"{where}: {key}")
    return replace(obj, **updates)


def _coerce(value: Any, current: Any, where: str) -> Any:
    """Check a value against the field's current type (None means any)."""
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} expects true/false, got {value!r}")
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return type(current)(value) if isinstance(current, float) or float(value).is_integer() else value
        raise ConfigError(f"{where} expects a number, got {value!r}")
    if isinstance(current, str) and not isinstance(value, str):
        raise ConfigError(f"{where} expects a string, got {value!r}")
    if isinstance(current, (list, dict)) and not isinstance(value, type(current)):
        raise ConfigError(f"{where} expects a {type(current).__name__}, got {value!r}")
    return value


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"rl.beta=0.01"`` -> (["rl", "beta"], 0.01); values parsed as TOML, else kept as strings."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def load_config(
    preset: str | None = "smoke",
    path: str | Path | None = None,
    overrides: dict | list[str] | None = None,
) -> TrainConfig:
    """Preset, then the TOML file at ``path``, then ``overrides`` (nested dict
    or ``section.key=value`` strings), each checked key by key."""
    cfg = TrainConfig()
    if preset is not None:
        file = PRESET_DIR / f"{preset}.toml"
        if not file.exists():
            raise ConfigError(f"unknown preset {preset!r}{_suggest(preset, presets())}; available: {presets()}")
        cfg = _merge(cfg, _read_toml(file), str(file))
        cfg = replace(cfg, preset=preset)
    if path is not None:
        cfg = _merge(cfg, _read_toml(Path(path)), str(path))
    if overrides:
        if isinstance(overrides, list):
            nested: dict = {}
            for item in overrides:
                keys, value = parse_override(item)
                node = nested
                for k in keys[:-1]:
                    node = node.setdefault(k, {})
                node[keys[-1]] = value
            overrides = nested
        cfg = _merge(cfg, overrides, "overrides")
    _validate(cfg)
    return cfg


def as_config(cfg: TrainConfig | dict | str | Path | None) -> TrainConfig:
    """Accept a config object, a nested dict, a preset name or a TOML path."""
    if isinstance(cfg, TrainConfig):
        return cfg
    if cfg is None:
        return load_config()
    if isinstance(cfg, dict):
        data = dict(cfg)
        preset = data.pop("preset", "smoke")
        return load_config(preset, overrides=data)
    text = str(cfg)
    if text.endswith(".toml"):
        return load_config(None, path=text)
    return load_config(text)


def _validate(cfg: TrainConfig) -> None:
    rl = cfg.rl
    if rl.num_generations < 2:
        raise ConfigError(f"rl.num_generations must be >= 2 (GRPO compares completions of one prompt), got {rl.num_generations}")
    if rl.source not in ("online", "offline"):
        raise ConfigError(f"rl.source must be 'online' or 'offline', got {rl.source!r}")
    for name, frac in (("rl.slow_fraction", rl.slow_fraction), ("distill.slow_fraction", cfg.distill.slow_fraction)):
        if not 0.0 <= frac <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {frac}")
    if cfg.reward.memory_metric not in ("tier", "ndcg"):
        raise ConfigError(f"reward.memory_metric must be 'tier' or 'ndcg', got {cfg.reward.memory_metric!r}")
