"""One run configuration for every stage of ``python -m experiments.run``.

A run is one :class:`RunConfig`: top-level keys plus the tables ``[data]``,
``[protocol]``, ``[online]``, ``[simulator]``, ``[policy.<name>]`` (the
benchmark) and ``[model]``, ``[prompt]``, ``[distill]``, ``[rl]``,
``[reward]`` (the anchored training). Layers, each checked key by key:

1. the dataclass defaults (the classic benchmark of rule-based agents);
2. a preset ``experiments/configs/presets/<name>.toml`` (``--preset``, or
   ``preset = "..."`` at the top of a config file; ``default`` when neither
   ``--preset`` nor ``--config`` is given);
3. the ``--config`` TOML file;
4. command-line flags, then ``--set section.key=value`` overrides.

A typo names the key, the file (or flag) and the closest known key instead
of silently running with a default.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import tomllib

from policies.llm.formats import rankings
from policies.llm.judge import JudgeConfig
from policies.llm.prompts import PromptConfig
from policies.llm.warmup import WarmupConfig
from policies.options import PolicyOptionError, check_types
from policies.registry import DEFAULT_POLICIES, available, check_policy_options, is_llm_policy, load_factory
from reward.shaping import RewardConfig
from starec_env.configtools import read_toml, suggest
from starec_env.data import DATASETS, Dataset
from starec_env.protocol import LeaveOneOut

__all__ = [
    "ConfigError", "RunConfig", "DataSection", "ProtocolSection", "OnlineSection", "ModelSection", "PromptSection",
    "DistillSection", "RLSection", "TRAINED_ROWS", "PRESET_DIR", "presets", "load_run_config", "parse_seeds",
    "parse_seed_count",
    "parse_override", "merge_checked",
]

PRESET_DIR = Path(__file__).resolve().parent / "configs" / "presets"
#: Result rows backed by the training stages: row name -> model folder under ``out``
#: (``teacher`` is the distillation teacher itself, no folder).
TRAINED_ROWS = {"starec": "rl", "starec-sft": "sft", "starec-rl-only": "rl-only", "starec-noreflect": "rl",
                "starec-base": "base", "teacher": None}
#: What a finished training stage keeps of its resume checkpoints (``RunConfig.keep_checkpoints``).
KEEP_CHECKPOINTS = ("all", "last", "none")


class ConfigError(ValueError):
    """A configuration problem: names the source (file, flag), the table and the key."""


@dataclass
class DataSection:
    """Which world. ``seed`` fixes the world itself (synthetic generation,
    preprocessing) and the training draws, so that run seeds vary only the
    evaluation; ``options`` go to the loader (e.g. synthetic size),
    ``preprocess`` to PreprocessConfig."""

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

    def leave_one_out(self, dataset: Dataset, seed: int) -> LeaveOneOut:
        """The held-out draw of ``seed`` on ``dataset``: every stage and
        benchmark builds it here, so each holds out exactly what the
        evaluation does."""
        return LeaveOneOut(dataset, n_negatives=self.negatives, n_users=self.users, history_len=self.history_len,
                           positive_threshold=self.positive_threshold, seed=seed)


@dataclass
class OnlineSection:
    """Simulated sessions through the batched env, sized per policy kind.

    Cheap agents (rule-based, classic, the oracle, user factories) play
    ``users`` sessions of the env's full length; language-model agents and
    trained rows play ``llm_users`` sessions, with ``llm_env`` on top of
    ``env`` (EnvConfig overrides, e.g. a shorter ``max_cycles``; the training
    stages' simulator uses the LLM sizing too). Each metric comes with its
    standard error over the simulated users.
    """

    enabled: bool = True
    users: int = 500
    env: dict = field(default_factory=dict)
    llm_users: int = 20
    llm_env: dict = field(default_factory=dict)


@dataclass
class ModelSection:
    """The student: ``name`` is "smollm2-135m", "tiny", a local folder or a hub id.

    ``ranking`` is how trained students rank when evaluated (``judge``: the
    judgement slots they are trained on; ``score``, ``generate``, ``think``,
    ``adaptive``: see :mod:`policies.llm.agents` and :mod:`policies.llm.formats`); ``batch_size`` bounds LLM
    inference batches;
    ``max_new_tokens*`` (None = the agents' defaults) bound generated
    rankings and reflections of every LLM row. ``precision`` is the
    training arithmetic: "bf16" autocast, "fp32", or "auto" (bf16 on a GPU
    and on CPUs with native bf16, else fp32; see
    :func:`experiments.train.common.mixed_bf16`).
    """

    name: str = "smollm2-135m"
    dtype: str | None = None
    batch_size: int = 16
    ranking: str = "judge"
    max_new_tokens: int | None = None
    max_new_tokens_reflect: int | None = None
    precision: str = "auto"
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05

    def __post_init__(self) -> None:
        if self.ranking not in rankings():
            raise ValueError(f"model.ranking must be one of {rankings()}, got {self.ranking!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"model.precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")


@dataclass(frozen=True)
class PromptSection(PromptConfig):
    """Prompt settings shared by distillation, RL and evaluation (same prompts
    everywhere): the agents' :class:`~policies.llm.prompts.PromptConfig`, and
    whether the prompts show the evidence scorers' ranks."""

    evidence: bool = True


@dataclass
class DistillSection:
    """Stage 1: teacher targets and notes -> TRL SFT (see :mod:`experiments.train.walks`).

    ``teacher``: "oracle", "http" or "local:<model>". Each of
    ``train_users`` users gives ``decisions_per_user`` training decisions
    (their last positives, as the protocol draws held-out ones; the fraction
    of training data used is reported), each with one judge row, whose prompt
    shows the teacher's note after the warm-up walk, no note, or the walked
    items as plain lines, in the proportions ``memory_share`` /
    ``plain_share`` / ``append_share``; ``reflect_fraction`` of the walk
    steps also give a note (reflection) row. ``judge_weight`` weighs the
    listwise judge loss against the notes' NLL; ``target_temperature``
    softens the teacher's choice distribution. An LLM teacher's answers
    pass the paper's filter (``min_ndcg``) with up to ``rethink`` retries.
    Every ``eval_steps`` SFT steps the held-out NDCG@10 of ``val_users``
    decisions of users outside the training set is logged (the learning curve).
    """

    teacher: str = "oracle"
    train_users: int = 1000
    decisions_per_user: int = 1
    reflect_fraction: float = 0.3
    memory_share: float = 0.5
    plain_share: float = 0.25
    append_share: float = 0.25
    judge_weight: float = 1.0
    target_temperature: float = 1.0
    val_users: int = 100
    eval_steps: int = 0
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
class RLSection:
    """Stage 2: GRPO on the slow thinking, anchored to the SFT model by ``beta``.

    The prompts are the reflection steps of warm-up walks over training
    decisions (the same walks evaluation runs); each rewritten note is scored
    by the follow-up ranking it leads to (``[reward] memory``). Each step =
    ``prompts_per_step`` prompts x ``num_generations`` completions;
    ``micro_batch`` completions go through each forward/backward pass (0 =
    ``num_generations``); smaller values trade speed for peak memory. Every
    ``eval_steps`` steps the mean memory reward of greedy notes on
    ``val_prompts`` held-out prompts is logged (the learning curve; 0: off).
    """

    steps: int = 100
    prompts_per_step: int = 8
    num_generations: int = 8
    max_completion_length: int = 64
    learning_rate: float = 1e-6
    beta: float = 1e-3
    temperature: float = 1.0
    save_steps: int = 10
    micro_batch: int = 0
    val_prompts: int = 32
    eval_steps: int = 0


@dataclass
class RunConfig:
    """One run. ``policy`` maps a policy name to its options table;
    ``privileged`` names the policies handed the simulator (upper bounds,
    the teacher); ``simulator`` holds SimulatorConfig options (offline world
    and online env alike); ``threads`` sets torch's intra-op threads (0 =
    automatic; 1 is fastest for these small models on a shared machine);
    ``device`` is "auto", "cpu" or "cuda" for training; ``probe_users``
    evaluated users of the first seed are ranked again by the trained
    ``starec`` row with other notes in its memory (:mod:`experiments.memory_probe`; 0: off).
    ``keep_checkpoints`` says which resume checkpoints (weights plus the
    optimizer state, ~3x the model) a finished training stage keeps: "all"
    the trainer's last two, "last" the newest one (more steps later resume
    from it), "none" only the final model."""

    stage: str = "eval"
    preset: str = "none"
    policies: list = field(default_factory=lambda: list(DEFAULT_POLICIES))
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    out: str = "runs/latest"
    threads: int = 1
    device: str = "auto"
    progress: bool = True
    probe_users: int = 0
    keep_checkpoints: str = "last"
    privileged: list = field(default_factory=lambda: ["oracle", "teacher"])
    policy: dict = field(default_factory=dict)
    simulator: dict = field(default_factory=dict)
    data: DataSection = field(default_factory=DataSection)
    protocol: ProtocolSection = field(default_factory=ProtocolSection)
    online: OnlineSection = field(default_factory=OnlineSection)
    model: ModelSection = field(default_factory=ModelSection)
    prompt: PromptSection = field(default_factory=PromptSection)
    distill: DistillSection = field(default_factory=DistillSection)
    rl: RLSection = field(default_factory=RLSection)
    reward: RewardConfig = field(default_factory=RewardConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)

    def __post_init__(self) -> None:
        if self.keep_checkpoints not in KEEP_CHECKPOINTS:
            raise ValueError(f"keep_checkpoints must be one of {list(KEEP_CHECKPOINTS)}, got {self.keep_checkpoints!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def policy_options(self, name: str) -> dict:
        """Options for policy ``name``: the run's thread count, the run's LLM
        settings for language-model agents only (so an LLM ``batch_size``
        never replaces BPR's), then its own ``[policy.<name>]`` table, merged
        key by key into nested tables (``[policy.starec.prompt] max_words``
        keeps the rest of ``[prompt]``)."""
        base: dict = {"threads": self.threads or None}
        if is_llm_policy(name) or name in TRAINED_ROWS:
            base |= {
                "model": self.model.name,
                "dtype": self.model.dtype,
                "batch_size": self.model.batch_size,
                "precision": self.model.precision,
                "evidence": self.prompt.evidence,
                "prompt": {f.name: getattr(self.prompt, f.name) for f in fields(PromptConfig)},
                "judge": asdict(self.judge),
                "warmup": asdict(self.warmup),
                "walk_seed": self.data.seed,
            }
            for key in ("max_new_tokens", "max_new_tokens_reflect"):
                if getattr(self.model, key) is not None:
                    base[key] = getattr(self.model, key)
        return _deep_merge(base, self.policy.get(name, {}))

    def prompt_config(self, name: str = "starec") -> PromptConfig:
        """The prompt settings LLM policy ``name`` is evaluated with. Training
        renders its rows with them too, so the student learns on exactly the
        prompts it is evaluated on (an agent builds the same from the same
        :meth:`policy_options`)."""
        return PromptConfig.from_dict(self.policy_options(name)["prompt"])

    def judge_config(self, name: str = "starec") -> JudgeConfig:
        """The judge prompt settings LLM policy ``name`` is evaluated with (see :meth:`prompt_config`)."""
        return JudgeConfig.from_dict(self.policy_options(name)["judge"])

    def warmup_config(self, name: str = "starec") -> WarmupConfig:
        """The memory warm-up LLM policy ``name`` is evaluated with; training walks the same way."""
        return WarmupConfig.from_dict(self.policy_options(name)["warmup"])

    def trained_rows(self) -> list[str]:
        """The configured rows that need the training stages' outputs."""
        return [p for p in self.policies if p in TRAINED_ROWS]


# ------------------------------------------------------------ checked merge
def merge_checked(obj: Any, data: dict, where: str) -> Any:
    """A copy of dataclass ``obj`` updated from ``data``, checking every key and type.

    Nested dataclasses are merged table by table; free-form dict fields
    (``policy``, ``options``, ``env``) are merged key by key, so ``--set
    policy.bpr.epochs=5`` keeps the other options a TOML gave. A section's
    own check (its ``__post_init__``) is reported with ``where``.
    """
    known = {f.name for f in fields(obj)}
    updates = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}{suggest(key, sorted(known))}; known: {sorted(known)}")
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table, got {type(value).__name__}")
            updates[key] = merge_checked(current, value, f"{where} [{key}]")
        elif isinstance(current, dict) and isinstance(value, dict):
            updates[key] = _deep_merge(current, value)
        else:
            updates[key] = _coerce(value, current, f"{where}: {key}")
    try:
        return replace(obj, **updates)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def _deep_merge(base: dict, new: dict) -> dict:
    merged = dict(base)
    for key, value in new.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _coerce(value: Any, current: Any, where: str) -> Any:
    """Check a value against the field's current type (None means any)."""
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} expects true/false, got {value!r}")
    if isinstance(current, (int, float)):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(current, float):
                return float(value)
            if float(value).is_integer():
                return int(value)
            raise ConfigError(f"{where} expects an integer, got {value!r}")
        raise ConfigError(f"{where} expects a number, got {value!r}")
    if isinstance(current, str) and not isinstance(value, str):
        raise ConfigError(f"{where} expects a string, got {value!r}")
    if isinstance(current, (list, dict)) and not isinstance(value, type(current)):
        raise ConfigError(f"{where} expects a {type(current).__name__}, got {value!r}")
    return value


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


def _nested(keys: list[str], value: Any) -> dict:
    out: dict = {}
    node = out
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return out


# -------------------------------------------------------------- loading
def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _read(path: Path) -> dict:
    try:
        return read_toml(path)
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text (TOML files are UTF-8)") from None
    except (FileNotFoundError, ValueError) as err:  # read_toml's messages name the file
        raise ConfigError(str(err)) from None
    except OSError as err:  # a folder, no permission
        raise ConfigError(f"config file {path}: cannot read it ({err.strerror}); expected a TOML file") from None


def _preset_file(name: str, where: str) -> Path:
    file = PRESET_DIR / f"{name}.toml"
    if not file.exists():
        raise ConfigError(f"{where}: unknown preset {name!r}{suggest(name, presets())}; available: {presets()}")
    return file


def _layer(cfg: RunConfig, values: dict, where: str) -> RunConfig:
    """Merge one config layer. Loader options belong to the dataset they were
    written for: a layer that switches dataset without giving options drops
    the earlier ones (a preset's synthetic world size must not reach ml-100k)."""
    new_data = values.get("data", {})
    if new_data.get("dataset") not in (None, cfg.data.dataset) and "options" not in new_data:
        cfg = replace(cfg, data=replace(cfg.data, options={}))
    return merge_checked(cfg, values, where)


def load_run_config(
    path: str | Path | None = None,
    overrides: dict | None = None,
    sets: list[str] | None = None,
    preset: str | None = None,
) -> RunConfig:
    """Defaults, then the preset, then the TOML at ``path``, then ``overrides``
    (nested dict from CLI flags), then ``sets`` (``section.key=value`` strings).

    The preset is ``preset``, else the file's top-level ``preset`` key, else
    none; callers that want the built-in default pass ``preset="default"``.
    """
    cfg = RunConfig()
    data = _read(Path(path)) if path is not None else {}
    name = preset if preset is not None else data.get("preset")
    if name is not None and name != "none":
        file = _preset_file(str(name), str(path) if preset is None else "--preset")
        cfg = _layer(cfg, {k: v for k, v in _read(file).items() if k != "preset"}, str(file))
        cfg = replace(cfg, preset=str(name))
    if data:
        cfg = _layer(cfg, {k: v for k, v in data.items() if k != "preset"}, str(path))
    if overrides:
        cfg = _layer(cfg, overrides, "command line")
    for item in sets or []:
        keys, value = parse_override(item)
        cfg = _layer(cfg, _nested(keys, value), f"--set {item}")
    _validate(cfg)
    return cfg


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """The seed list ``"0,1,2"`` -> [0, 1, 2]; ``"42"`` is the one seed 42
    (a count of seeds is ``--n-seeds``: a seed never means "that many")."""
    parts = [p.strip() for p in str(text).split(",")]
    if parts and not parts[-1]:
        parts.pop()  # "5," is the list [5]
    if not parts or not all(parts):
        raise ConfigError(f"{flag} expects a comma-separated list of seeds like '0,1,2', got {text!r}")
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{flag} expects integers like '0,1,2', got {text!r}") from None


def parse_seed_count(text: str) -> list[int]:
    """``--n-seeds 3`` -> the seeds [0, 1, 2]."""
    try:
        count = int(text)
    except ValueError:
        raise ConfigError(f"--n-seeds expects a number of seeds like '3', got {text!r}") from None
    if count < 1:
        raise ConfigError(f"--n-seeds must be >= 1, got {count}")
    return list(range(count))


def _validate(cfg: RunConfig) -> None:
    _validate_types(cfg)
    _validate_run(cfg)
    _validate_policy_tables(cfg)
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {cfg.device!r}")
    rl = cfg.rl
    if rl.num_generations < 2:
        raise ConfigError(f"rl.num_generations must be >= 2 (GRPO compares completions of one prompt), got {rl.num_generations}")
    if rl.micro_batch < 0 or (rl.micro_batch and (rl.prompts_per_step * rl.num_generations) % rl.micro_batch):
        raise ConfigError(f"rl.micro_batch must divide prompts_per_step x num_generations "
                          f"({rl.prompts_per_step * rl.num_generations}), got {rl.micro_batch}")
    d = cfg.distill
    for name in ("reflect_fraction", "memory_share", "plain_share", "append_share"):
        value = getattr(d, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"distill.{name} must be in [0, 1], got {value}")
    if abs(d.memory_share + d.plain_share + d.append_share - 1.0) > 1e-6:
        raise ConfigError(f"distill.memory_share + plain_share + append_share must be 1, got "
                          f"{d.memory_share} + {d.plain_share} + {d.append_share}")
    if d.target_temperature <= 0 or d.judge_weight < 0:
        raise ConfigError(f"distill.target_temperature must be > 0 and judge_weight >= 0, got {d.target_temperature}, {d.judge_weight}")
    if cfg.probe_users < 0:
        raise ConfigError(f"probe_users must be >= 0 (0: no memory probe), got {cfg.probe_users}")
    if d.decisions_per_user < 1:
        raise ConfigError(f"distill.decisions_per_user must be >= 1, got {d.decisions_per_user}")
    if d.val_users < 0 or d.eval_steps < 0 or rl.val_prompts < 0 or rl.eval_steps < 0:
        raise ConfigError(f"distill.val_users / eval_steps and rl.val_prompts / eval_steps must be >= 0, got "
                          f"{d.val_users} / {d.eval_steps} and {rl.val_prompts} / {rl.eval_steps}")
    teacher = cfg.distill.teacher
    if teacher not in ("oracle", "http") and not (teacher.startswith("local:") and len(teacher) > 6):
        raise ConfigError(f"distill.teacher must be 'oracle', 'http' or 'local:<model>', got {teacher!r}")


def _validate_types(cfg: RunConfig) -> None:
    """Each setting's type against its annotation, including the ``None``-default
    ones that the merge cannot type (``--set data.data_dir=5`` must not reach Path())."""
    sections = [cfg, cfg.data, cfg.protocol, cfg.online, cfg.model, cfg.prompt, cfg.distill, cfg.rl]
    names = ["", "data.", "protocol.", "online.", "model.", "prompt.", "distill.", "rl."]
    for section, prefix in zip(sections, names):
        try:
            check_types(section)
        except ValueError as err:
            raise ConfigError(f"{prefix}{err}") from None


def _validate_run(cfg: RunConfig) -> None:
    """The benchmark settings: names and seeds (no duplicates), sizes, the dataset."""
    if not cfg.policies:
        raise ConfigError("no policies selected: expected a list such as ['pop', 'bpr']")
    if not all(isinstance(p, str) and p.strip() for p in cfg.policies):
        raise ConfigError(f"policies must be non-empty names, got {cfg.policies!r}")
    repeated = sorted({p for p in cfg.policies if cfg.policies.count(p) > 1})
    if repeated:
        raise ConfigError(f"policies lists {repeated} more than once: each row is evaluated once")
    if cfg.data.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg.data.dataset!r}; known: {', '.join(DATASETS)}")
    unknown = [p for p in cfg.policies if p not in available() and p not in TRAINED_ROWS and ":" not in p]
    if unknown:
        raise ConfigError(
            f"unknown policies {unknown}{suggest(unknown[0], sorted({*available(), *TRAINED_ROWS}))}; "
            f"known: {', '.join(sorted({*available(), *TRAINED_ROWS}))} (or 'module:factory' for your own)"
        )
    for name in cfg.policies:
        if ":" in name and name not in available():
            try:
                load_factory(name)
            except PolicyOptionError as err:
                raise ConfigError(f"policies: {err}") from None
    if not cfg.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in cfg.seeds):
        raise ConfigError(f"seeds must be a non-empty list of integers, got {cfg.seeds!r}")
    if min(cfg.seeds) < 0:
        raise ConfigError(f"seeds must be >= 0, got {cfg.seeds!r}")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"seeds lists a seed more than once ({cfg.seeds!r}): a repeated seed repeats the same run")
    if not all(isinstance(p, str) for p in cfg.privileged):
        raise ConfigError(f"privileged must be a list of policy names, got {cfg.privileged!r}")
    if not cfg.out.strip():
        raise ConfigError("out (--out) is empty: expected a folder for the results")
    checks = [
        ("data.seed", cfg.data.seed, 0), ("threads", cfg.threads, 0), ("protocol.users", cfg.protocol.users, 1),
        ("protocol.negatives", cfg.protocol.negatives, 1), ("protocol.history_len", cfg.protocol.history_len, 1),
        ("protocol.batch_size", cfg.protocol.batch_size, 1), ("online.users", cfg.online.users, 1),
        ("online.llm_users", cfg.online.llm_users, 1), ("model.batch_size", cfg.model.batch_size, 1),
        ("model.max_new_tokens", cfg.model.max_new_tokens, 1), ("model.max_new_tokens_reflect", cfg.model.max_new_tokens_reflect, 1),
        ("prompt.max_history", cfg.prompt.max_history, 1), ("prompt.max_words", cfg.prompt.max_words, 1),
    ]  # fmt: skip
    for key, value, minimum in checks:
        if value is not None and value < minimum:
            raise ConfigError(f"{key} must be >= {minimum}, got {value!r}")


def _validate_policy_tables(cfg: RunConfig) -> None:
    """Every ``[policy.NAME]`` table: a table, of a policy that exists, with options it takes."""
    known = sorted({*available(), *TRAINED_ROWS, *cfg.policies})
    for name, table in cfg.policy.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[policy.{name}] must be a table of options, got {table!r}")
        if name not in known and ":" not in name:
            raise ConfigError(f"[policy.{name}]: no policy is called {name!r}{suggest(name, known)}")
        if name in available() or ":" in name:
            try:
                check_policy_options(name, table)
            except PolicyOptionError as err:
                raise ConfigError(str(err)) from None
