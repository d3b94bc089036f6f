"""``python -m experiments.run``: benchmark agents offline and in the simulator.

With no arguments it benchmarks every rule-based and classic agent on the
synthetic world and writes results.json / results.csv / results.png /
config.json into ``runs/latest``. ``--stage`` picks what to run; other stages
(distillation, RL) plug in through :data:`STAGES`.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Callable

from experiments.config import ConfigError, RunConfig, load_run_config, parse_seeds
from starec_env.data.errors import DataFormatError, DatasetNotFoundError, PreprocessError
from starec_env.protocol import ProtocolError

#: Problems with the user's input: reported in one line, without a traceback.
USER_ERRORS = (ConfigError, DataFormatError, DatasetNotFoundError, PreprocessError, ProtocolError)

StageFn = Callable[[RunConfig], int]
#: Stage name -> function(config) -> exit code, or its "module:function" path
#: (imported only when that stage runs, so `eval` never imports trl).
#: Training stages (distill, rl, all) plug in here.
STAGES: dict[str, StageFn | str] = {}


def stage(name: str) -> Callable[[StageFn], StageFn]:
    """Decorator registering a stage under ``name``."""

    def register(fn: StageFn) -> StageFn:
        STAGES[name] = fn
        return fn

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


@stage("eval")
def run_eval(cfg: RunConfig) -> int:
    """Offline protocol + online sessions for every policy; table and files."""
    from experiments.evaluate import benchmark
    from experiments.report import format_table, write_report

    _set_threads(cfg)
    rows, facts = benchmark(cfg)
    print(format_table(rows))
    p = facts["protocol"][0]
    print(
        f"\n{facts['dataset']['name']}: {p['users']} evaluation users ({p['eligible']} eligible), "
        f"{p['candidates']} candidates, seeds {cfg.seeds}; '(upper bound)' rows read the simulator's truth."
    )
    if facts["simulator"].get("source") == "fitted" and any(r["upper_bound"] for r in rows):
        print(
            "note: this simulator is fitted to ratings, so upper-bound rows bound the simulated users "
            "(online columns), not the logged choices of the offline protocol."
        )
    paths = write_report(rows, cfg.out, {"config": cfg.to_dict(), "facts": facts})
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


@stage("fidelity")
def run_fidelity(cfg: RunConfig) -> int:
    """How closely the simulator reproduces the data (ratings, popularity curve)."""
    import json

    from experiments.evaluate import load_world
    from experiments.report import atomic_write
    from starec_env.simulator import fidelity_report

    world = load_world(cfg)
    report = fidelity_report(world.dataset, world.simulator, seed=cfg.seeds[0])
    text = report if isinstance(report, str) else json.dumps(report, indent=2, default=str)
    print(text)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "fidelity.json", lambda fh: fh.write(json.dumps(report, indent=2, default=str).encode()))
    return 0


def _set_threads(cfg: RunConfig) -> None:
    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", help=f"what to run: {', '.join(sorted(STAGES))} (default eval)")
    p.add_argument("--config", help="TOML file with run settings (flags override it)")
    p.add_argument("--dataset", help="synthetic, ml-100k, ml-1m, amazon-cds or recbole")
    p.add_argument("--data-dir", help="folder holding the dataset's files")
    p.add_argument("--policies", help="comma-separated policy names, e.g. pop,bpr,oracle")
    p.add_argument("--users", type=int, help="evaluation users sampled by the offline protocol")
    p.add_argument("--seeds", help="'0,1,2' or a count such as '3'")
    p.add_argument("--out", help="folder that receives results.json etc. (default runs/latest)")
    p.add_argument("--model", help="model name handed to LLM policies")
    p.add_argument("--threads", type=int, help="torch intra-op threads (0 = torch default)")
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
        ("policies",): [p.strip() for p in args.policies.split(",") if p.strip()] if args.policies else None,
        ("protocol", "users"): args.users,
        ("seeds",): parse_seeds(args.seeds) if args.seeds is not None else None,
        ("out",): args.out,
        ("model",): args.model,
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_run_config(args.config, _overrides(args), args.sets)
        return resolve_stage(cfg.stage)(cfg)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
