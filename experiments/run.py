"""``python -m experiments.run``: STARec's whole loop, or any stage of it.

With no arguments it runs the ``default`` preset: distillation from the
oracle teacher -> GRPO in the simulator -> evaluation of the trained
students beside the teacher, the zero-shot LLM ranker and every rule-based
/ classic agent (offline protocol + online sessions), ending with the
comparison table and results.json / results.csv / results.png /
config.json in ``runs/latest``. ``--stage`` runs one stage (distill, rl,
eval, fidelity) or ``all``; ``--preset`` picks smoke / cpu / gpu / default.
The classic benchmark alone: ``--stage eval --policies random,pop,genre,itemknn,bpr,oracle``.
Multi-process training: ``accelerate launch --num_processes 2 --cpu -m experiments.run --stage distill ...``.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

from experiments.config import TRAINED_ROWS, ConfigError, RunConfig, load_run_config, parse_seed_count, parse_seeds, presets
from experiments.evaluate import benchmark
from experiments.report import OutputError, check_out_dir, format_table, online_sizes, write_json, write_report
from experiments.train.dist import is_main_process
from experiments.usage import USAGE
from experiments.world import load_world
from policies.llm.clients import http_teacher_record
from starec_env.data.errors import DataFormatError, DataOptionError, DatasetNotFoundError, PreprocessError
from starec_env.protocol import ProtocolError
from starec_env.simulator import fidelity_report
from starec_env.simulator.fidelity import format_fidelity

#: Problems with the user's input: reported in one line, without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, DataFormatError, DataOptionError, DatasetNotFoundError, PreprocessError, ProtocolError, OutputError,
)  # fmt: skip

StageFn = Callable[[RunConfig], int]
#: Stage name -> function(config) -> exit code, or its "module:function" path
#: (imported only when that stage runs, so `eval` never imports trl).
STAGES: dict[str, StageFn | str] = {}


def stage(name: str) -> Callable[[StageFn], StageFn]:
    """Decorator registering a stage under ``name``; each run of it is
    measured (wall seconds, peak RSS) into :data:`experiments.usage.USAGE`."""

    def register(fn: StageFn) -> StageFn:
        @functools.wraps(fn)
        def measured(cfg: RunConfig) -> int:
            with USAGE.stage(name):
                code = fn(cfg)
            if is_main_process():
                print(USAGE.describe(USAGE.stages[-1]))
            return code

        STAGES[name] = measured
        return measured

    return register


def resolve_stage(name: str) -> StageFn:
    """The function of stage ``name``, importing it if registered by path."""
    if name not in STAGES:
        raise ConfigError(f"unknown stage {name!r}; known: {', '.join(sorted(STAGES))}")
    target = STAGES[name]
    if isinstance(target, str):
        module, attr = target.split(":")
        target = getattr(importlib.import_module(module), attr)
    return target


@stage("distill")
def run_distill(cfg: RunConfig) -> int:
    """Teacher traces -> filter / rethink -> SFT of the student."""
    from experiments.train.pipeline import run_distill as distill

    _set_threads(cfg)
    distill(cfg)
    return 0


@stage("rl")
def run_rl(cfg: RunConfig) -> int:
    """GRPO in the simulator from the SFT model (and from the base model for ``starec-rl-only``)."""
    from experiments.train.pipeline import run_rl as rl

    _set_threads(cfg)
    rl(cfg)
    return 0


@stage("eval")
def run_eval(cfg: RunConfig) -> int:
    """Offline protocol + online sessions for every policy; table and files."""
    if not is_main_process():  # under `accelerate launch` only rank 0 evaluates
        return 0

    _set_threads(cfg)
    factories = {}
    if cfg.trained_rows():
        from experiments.train.common import quiet_terminal
        from experiments.train.pipeline import trained_rows

        quiet_terminal(Path(cfg.out))
        cfg, factories = trained_rows(cfg)
    rows, facts = benchmark(cfg, factories=factories)
    facts["training"] = _training_facts(Path(cfg.out)) if cfg.trained_rows() else {}
    if cfg.probe_users and "starec" in factories:
        from experiments.train.pipeline import probe_memory

        facts["memory_probe"] = probe_memory(cfg, factories["starec"])
    if cfg.distill.teacher == "http":  # the endpoint lives in the environment: record which one (redacted)

        facts["teacher"] = http_teacher_record()
    print(format_table(rows))
    p = facts["protocol"][0]
    print(
        f"\n{facts['dataset']['name']}: {p['users']} evaluation users ({p['eligible']} eligible), "
        f"{p['candidates']} candidates, seeds {cfg.seeds}; '(upper bound)' rows read the simulator's truth."
    )
    if online_sizes(rows):
        print(online_sizes(rows))
    if facts["simulator"].get("source") == "fitted" and any(r["upper_bound"] for r in rows):
        print(
            "note: on real data the simulator is a choice model fitted without the protocol's held-out rows; "
            "upper-bound rows rank by that fitted model, not by what the held-out users really prefer."
        )
    facts["usage"] = USAGE.summary()  # this process's stages; the evaluation's figures up to the report
    paths = write_report(rows, cfg.out, {"config": cfg.to_dict(), "facts": facts})
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _training_facts(out: Path) -> dict:
    """distill.json / rl.json / rl-only.json of the run, reported beside the results."""
    return {f.stem: json.loads(f.read_text()) for name in ("distill", "rl", "rl-only") if (f := out / f"{name}.json").exists()}


@stage("all")
def run_all(cfg: RunConfig) -> int:
    """distill -> rl -> eval, each training stage only when a configured row
    needs what it makes (``starec-sft`` alone: no GRPO)."""
    folders = {TRAINED_ROWS[row] for row in cfg.trained_rows()} - {None}
    if folders:
        run_distill(cfg)
    if folders & {"rl", "rl-only"}:
        run_rl(cfg)
    return run_eval(cfg)


@stage("fidelity")
def run_fidelity(cfg: RunConfig) -> int:
    """How closely the simulator reproduces the data (ratings, popularity curve) and
    predicts held-out choices under the run's protocol (first seed; at least the
    paper's 1,000 users, as the oracle costs nothing to score)."""
    world = load_world(cfg)
    users = None if cfg.protocol.users is None else max(cfg.protocol.users, 1000)
    protocol = replace(cfg.protocol, users=users).leave_one_out(world.dataset, cfg.seeds[0])
    report = fidelity_report(world.dataset, world.simulator, seed=cfg.seeds[0], protocol=protocol)
    path = Path(cfg.out) / "fidelity.json"
    write_json(path, report)
    print(format_fidelity(report))
    print(f"wrote {path}")
    return 0


def _set_threads(cfg: RunConfig) -> None:
    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", help=f"what to run: {', '.join(sorted(STAGES))} (default: the preset's)")
    p.add_argument("--preset", help=f"built-in settings to start from: {', '.join(presets())} "
                   "(default: 'default' unless --config is given; a config file may name its own)")
    p.add_argument("--config", help="TOML file with run settings (flags override it)")
    p.add_argument("--dataset", help="synthetic, ml-100k, ml-1m, amazon-cds or recbole")
    p.add_argument("--data-dir", help="folder holding the dataset's files")
    p.add_argument("--policies", help="comma-separated policy names, e.g. pop,bpr,oracle")
    p.add_argument("--users", type=int, help="evaluation users sampled by the offline protocol")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", help="the seeds to run, e.g. '0,1,2' ('42' is the one seed 42)")
    seeds.add_argument("--n-seeds", help="run this many seeds, 0..N-1 (e.g. '3' = seeds 0,1,2)")
    p.add_argument("--out", help="folder that receives results.json etc. (default runs/latest)")
    p.add_argument("--model", help="student / LLM policy model: smollm2-135m, tiny, a local folder or a hub id")
    p.add_argument("--teacher", help="distillation teacher: oracle (default), http or local:<model>")
    p.add_argument("--threads", type=int, help="torch intra-op threads (0 = automatic: the cores not already busy)")
    p.add_argument("--no-online", action="store_true", help="skip the online simulated sessions")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set online.env.max_cycles=20 (repeatable)")
    return p


def _overrides(args: argparse.Namespace) -> dict:
    """The flags that were given, as a nested config dict."""
    out: dict = {}
    flat = {
        ("stage",): args.stage,
        ("data", "dataset"): args.dataset,
        ("data", "data_dir"): args.data_dir,
        ("policies",): _names(args.policies) if args.policies is not None else None,
        ("protocol", "users"): args.users,
        ("seeds",): parse_seeds(args.seeds) if args.seeds is not None else (
            parse_seed_count(args.n_seeds) if args.n_seeds is not None else None),
        ("out",): args.out,
        ("model", "name"): args.model,
        ("distill", "teacher"): args.teacher,
        ("threads",): args.threads,
        ("online", "enabled"): False if args.no_online else None,
        ("progress",): False if args.no_progress else None,
    }
    for keys, value in flat.items():
        if value is None:
            continue
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return out


def _names(text: str) -> list[str]:
    """``--policies pop,bpr`` -> ["pop", "bpr"]; empty names are refused, not skipped."""
    names = [p.strip() for p in text.split(",")]
    if len(names) > 1 and not names[-1]:
        names.pop()  # "pop,bpr," is the list [pop, bpr]
    if not all(names):
        raise ConfigError(f"--policies expects comma-separated policy names like 'pop,bpr', got {text!r}")
    return names


def _load(args: argparse.Namespace, preset: str) -> RunConfig:
    """The run's config; a section's own check (a ValueError or TypeError from
    its dataclass, naming the setting) is a config error like any other."""
    try:
        return load_run_config(args.config, _overrides(args), args.sets, preset=preset)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad setting: {err}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preset = args.preset if args.preset is not None or args.config is not None else "default"
    USAGE.restart()
    try:
        cfg = _load(args, preset)
        run = resolve_stage(cfg.stage)
        check_out_dir(cfg.out)  # before any work: a bad --out must not cost a whole evaluation
        return run(cfg)
    except USER_ERRORS + _training_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _training_errors() -> tuple[type[BaseException], ...]:
    """Bad checkpoints, model names and teachers, once their modules are loaded
    (so that the classic benchmark never imports torch / transformers)."""
    errors: list[type[BaseException]] = []
    for module, name in (("experiments.train.common", "CheckpointError"), ("policies.llm.models", "ModelLoadError"),
                         ("policies.llm.clients", "TeacherError")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


if __name__ == "__main__":
    sys.exit(main())
