"""The anchored-training pipeline: distill -> RL -> eval, as stage functions.

``run_distill(cfg, out_dir)``, ``run_rl(cfg, out_dir)``, ``run_eval(cfg,
out_dir)`` and ``run_all(cfg, out_dir)`` each accept a
:class:`~experiments.train.config.TrainConfig` (or a preset name / TOML path
/ dict) and write into ``out_dir``:

* ``base/`` the untrained student, ``sft/`` (checkpoints, metrics.csv,
  TensorBoard runs, ``model/``), ``rl/`` (SFT + GRPO), ``rl-only/`` (GRPO
  from the base model, the "without SFT anchoring" ablation);
* ``distill.json`` / ``rl.json`` facts (data fraction used, steps, time);
* ``results.json`` rows ``starec``, ``starec-sft``, ``starec-rl-only``,
  ``starec-noreflect``, ``teacher`` beside the configured baselines.

Standalone: ``python -m experiments.train.pipeline --preset smoke --stage all --out runs/train``.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.train.common import check_model_dir, write_json
from experiments.train.config import ConfigError, TrainConfig, as_config, load_config
from experiments.train.rollout import (
    RANK_PREFIX,
    PromptRenderer,
    States,
    offline_states,
    online_transitions,
    view_from_json,
    view_of,
)


@dataclass
class Context:
    """The world, the evaluation protocol and the prompt machinery of a run."""

    cfg: TrainConfig
    run_cfg: Any
    world: Any
    protocol: Any
    evidence: Any
    renderer: PromptRenderer


def run_config(cfg: TrainConfig, out_dir: Path | None = None) -> Any:
    """The benchmark RunConfig matching the training config (same world and protocol)."""
    from experiments.config import load_run_config

    return load_run_config(
        overrides={
            "data": {"dataset": cfg.data.dataset, "data_dir": cfg.data.data_dir, "seed": cfg.seed, "options": dict(cfg.data.options)},
            "protocol": {
                "users": cfg.data.eval_users,
                "negatives": cfg.data.n_negatives,
                "history_len": cfg.data.history_len,
                "positive_threshold": cfg.data.positive_threshold,
                "batch_size": cfg.eval.batch_size,
            },
            "seeds": list(cfg.eval.seeds),
            "policies": list(cfg.eval.baselines),
            "online": {"enabled": cfg.eval.online_users > 0, "users": max(1, cfg.eval.online_users)},
            "out": str(out_dir or "runs/train"),
        }
    )


def prepare(cfg: TrainConfig) -> Context:
    from experiments.evaluate import load_world
    from policies.base import PolicyContext
    from policies.llm.evidence import EvidenceBuilder, EvidenceConfig
    from starec_env.protocol import LeaveOneOut

    run_cfg = run_config(cfg)
    world = load_world(run_cfg)
    protocol = LeaveOneOut(
        world.dataset,
        n_negatives=cfg.data.n_negatives,
        n_users=cfg.data.eval_users,
        history_len=cfg.data.history_len,
        positive_threshold=cfg.data.positive_threshold,
        seed=cfg.seed,
    )
    evidence = None
    if cfg.prompt.evidence:
        evidence = EvidenceBuilder(PolicyContext(world.dataset, seed=cfg.seed), EvidenceConfig())
        evidence.fit(protocol.split)
    return Context(cfg, run_cfg, world, protocol, evidence, PromptRenderer(world.dataset, cfg, evidence))


def _train_users(ctx: Context, n: int, rng: np.random.Generator) -> np.ndarray:
    users = np.unique(ctx.protocol.split.interactions["user"].to_numpy(np.int64))
    return np.sort(rng.choice(users, size=min(n, len(users)), replace=False))


def teacher_samples(ctx: Context, states: States) -> list:
    """Teacher tasks for ranking states (view, evidence with its signals, truth)."""
    from policies.llm.evidence import render_lines
    from policies.llm.teachers import TeacherSample

    table = ctx.evidence.table(states.batch) if ctx.evidence is not None else None
    lines = render_lines(table) if table is not None else None
    c = states.batch.candidates.shape[1]
    out = []
    for r in range(len(states)):
        out.append(
            TeacherSample(
                view=view_of(ctx.world.dataset, states.batch, r),
                key=int(states.batch.users[r]),
                evidence=lines[r] if lines is not None else None,
                signals=[table.signals(r, j) for j in range(c)] if table is not None else None,
                utilities=states.utilities[r],
                target=int(states.target_pos[r]),
                rating=5.0,
                user=int(states.batch.users[r]),
                items=tuple(int(i) for i in states.batch.candidates[r]),
            )
        )
    return out


def run_distill(cfg: TrainConfig | Any, out_dir: str | Path) -> dict:
    """Stage 1: teacher traces on training users -> filter/rethink -> SFT."""
    from policies.llm.models import load_model
    from policies.llm.teachers import DistillConfig as TeacherDistill
    from policies.llm.teachers import FilterConfig, distill, make_teacher, reflect_samples, to_hf_dataset
    from experiments.train.common import save_model_atomic
    from experiments.train.sft import train_sft

    cfg, out = as_config(cfg), Path(out_dir)
    began = time.perf_counter()
    ctx = prepare(cfg)
    rng = np.random.default_rng([cfg.seed, 1])
    users = _train_users(ctx, cfg.distill.train_users, rng)
    states = offline_states(ctx.world.dataset, ctx.world.simulator, ctx.protocol.split.interactions, users, cfg, rng)
    samples = teacher_samples(ctx, states)
    teacher = make_teacher(cfg.distill.teacher, seed=cfg.seed)
    tcfg = TeacherDistill(max_rethinks=cfg.distill.rethink, filter=FilterConfig(min_ndcg=cfg.distill.min_ndcg))
    ranked = distill(teacher, samples, "rank", tcfg)
    n_slow = int(round(cfg.distill.slow_fraction * len(samples)))
    predicted = [np.argsort(-ctx.evidence.table(states.batch.take(np.array([r]))).scores["genre"][0], kind="stable") if ctx.evidence is not None else rng.permutation(states.batch.candidates.shape[1]) for r in range(n_slow)]
    reflected = distill(teacher, reflect_samples(samples[:n_slow], predicted), "reflect", tcfg) if n_slow else None
    traces = ranked.traces + (reflected.traces if reflected else [])
    if not traces:
        raise ConfigError(f"the {cfg.distill.teacher!r} teacher produced no trace that passed the filter: {ranked.stats}")
    ds = to_hf_dataset(traces).select_columns(["prompt", "completion"])
    split = ctx.protocol.split.interactions
    used = split[split["user"].isin(users)]
    model, tok = load_model(cfg.model.name, dtype=cfg.model.dtype, threads=cfg.model.threads, seed=cfg.seed)
    save_model_atomic(model, tok, out / "base")
    facts = {
        "teacher": cfg.distill.teacher,
        "users": int(len(users)),
        "states": int(len(states)),
        "rank": ranked.stats,
        "reflect": reflected.stats if reflected else None,
        "examples": len(ds),
        "train_interactions_used": int(len(used)),
        "train_interactions_total": int(len(split)),
        "data_fraction": len(used) / max(1, len(split)),
        "sft": train_sft(cfg, model, tok, ds, out / "sft"),
    }
    facts["seconds"] = round(time.perf_counter() - began, 2)
    write_json(out / "distill.json", facts)
    return facts


class FollowupRanker:
    """Ranks each slow row's follow-up decision with the new description, by
    the current policy's scoring path (one forward pass per prompt)."""

    def __init__(self, renderer: PromptRenderer) -> None:
        self.renderer = renderer
        self.backend = None

    def bind(self, trainer: Any) -> None:
        from policies.llm.backend import LLMBackend

        self.backend = LLMBackend(trainer.model, trainer.processing_class, batch_size=8)

    def __call__(self, rows: list[int], memories: list[str], columns: dict) -> list[list[int]]:
        import json

        if self.backend is None:
            raise RuntimeError("FollowupRanker used before bind(trainer)")
        chats, options = [], []
        for i, memory in zip(rows, memories):
            state = json.loads(columns["state"][i])
            chats.append(self.renderer.rank_prompt(view_from_json(state["view"]), memory, state["evidence"]))
            options.append([" " + cid for cid in columns["candidate_ids"][i]])
        logp = self.backend.score_options(chats, options, prefix=RANK_PREFIX, agent="memory-reward", mode="score")
        return [list(np.argsort(-s, kind="stable")) for s in logp]


def prompt_stream(ctx: Context, seed: int):
    """Endless RL rows from the live simulation (fast and slow, mixed)."""
    from policies.base import PolicyContext
    from policies.registry import make_policy
    from experiments.evaluate import make_env
    from starec_env.types import TrainSplit

    cfg = ctx.cfg
    rng = np.random.default_rng([seed, 2])
    ds = ctx.world.dataset
    if cfg.rl.source == "online":
        env = make_env(ctx.run_cfg, ctx.world)
        behaviour = make_policy("genre", PolicyContext(ds, seed=seed))
        behaviour.fit(TrainSplit(ds, ds.interactions, np.arange(ds.n_users)))
        for before, predicted, (chosen, rating), after in online_transitions(env, behaviour, seed):
            slow = rng.random(len(before)) < cfg.rl.slow_fraction
            fast_idx, slow_idx = np.flatnonzero(~slow), np.flatnonzero(slow)
            rows = []
            if len(fast_idx):
                rows += ctx.renderer.fast_rows(_take(before, fast_idx), [""] * len(fast_idx))
            if len(slow_idx):
                rows += ctx.renderer.slow_rows(
                    _take(before, slow_idx), predicted[slow_idx], chosen[slow_idx], rating[slow_idx], _take(after, slow_idx), [""] * len(slow_idx)
                )
            yield from rows
    else:
        interactions = ctx.protocol.split.interactions
        users = np.unique(interactions["user"].to_numpy(np.int64))
        while True:
            pick = np.sort(rng.choice(users, size=min(32, len(users)), replace=False))
            states = offline_states(ds, ctx.world.simulator, interactions, pick, cfg, rng)
            yield from ctx.renderer.fast_rows(states, [""] * len(states))


def _take(states: States, rows: np.ndarray) -> States:
    return States(states.batch.take(rows), states.target_pos[rows], states.utilities[rows])


def run_rl(cfg: TrainConfig | Any, out_dir: str | Path, start: str | Path | None = None, name: str = "rl") -> dict:
    """Stage 2: GRPO from ``start`` (default: the SFT model) on live prompts."""
    from datasets import IterableDataset

    from experiments.train.grpo import train_grpo
    from reward.shaping import build_reward_funcs

    cfg, out = as_config(cfg), Path(out_dir)
    start = Path(start) if start is not None else out / "sft" / "model"
    check_model_dir(start, what="GRPO start model")
    ctx = prepare(cfg)
    ranker = FollowupRanker(ctx.renderer)
    funcs, weights = build_reward_funcs(cfg.reward, followup_ranker=ranker if cfg.reward.memory else None, seed=cfg.seed)
    stream = IterableDataset.from_generator(_generate, gen_kwargs={"ctx": [ctx], "seed": cfg.seed})
    facts = train_grpo(cfg, start, stream, funcs, weights, out / name, on_trainer=ranker.bind)
    write_json(out / f"{name}.json", facts)
    return facts


def _generate(ctx: list, seed: int):
    # ``ctx`` comes wrapped in a list: datasets treats list kwargs as shards.
    yield from prompt_stream(ctx[0], seed)


def run_eval(cfg: TrainConfig | Any, out_dir: str | Path) -> list[dict]:
    """Stage 3: the trained students beside the teacher and the baselines."""
    from dataclasses import replace as dc_replace

    from experiments.evaluate import benchmark
    from experiments.report import write_report
    from policies.registry import register

    cfg, out = as_config(cfg), Path(out_dir)
    models = {"starec": out / "rl" / "model", "starec-sft": out / "sft" / "model", "starec-rl-only": out / "rl-only" / "model", "starec-noreflect": out / "rl" / "model"}
    rows = [r for r in cfg.eval.rows if r != "teacher"]
    for row in rows:
        check_model_dir(models[row], what=f"model of row {row!r}")
    from policies.llm.agents import make_starec

    register("starec-sft", make_starec)
    register("starec-rl-only", make_starec)
    register("starec-noreflect", _make_noreflect)
    run_cfg = run_config(cfg, out)
    policies = list(cfg.eval.baselines) + rows + (["teacher"] if "teacher" in cfg.eval.rows else [])
    options = {r: {"model": str(models[r]), "threads": cfg.model.threads, "batch_size": cfg.eval.batch_size} for r in rows}
    if "teacher" in policies:
        register("teacher", _make_teacher_policy)
    run_cfg = dc_replace(run_cfg, policies=policies, policy={**run_cfg.policy, **options}, privileged=list(run_cfg.privileged) + ["teacher"])
    results, facts = benchmark(run_cfg)
    write_report(results, out, {"config": cfg.to_dict(), "facts": facts})
    return results


def _make_noreflect(ctx: Any) -> Any:
    """STARec without self-reflection: memory is plain history appending."""
    from policies.llm.agents import LLMAgent, LLMAgentConfig

    return LLMAgent(ctx, LLMAgentConfig.from_options(ctx.options), ranking="generate", reflect=False)


def _make_teacher_policy(ctx: Any) -> Any:
    """The oracle teacher as a ranking policy (its rankings follow true utilities)."""
    from policies.oracle import make_oracle

    return make_oracle(ctx)


def run_all(cfg: TrainConfig | Any, out_dir: str | Path) -> list[dict]:
    cfg = as_config(cfg)
    run_distill(cfg, out_dir)
    run_rl(cfg, out_dir)
    if "starec-rl-only" in cfg.eval.rows:
        run_rl(cfg, out_dir, start=Path(out_dir) / "base", name="rl-only")
    return run_eval(cfg, out_dir)


STAGES = {"distill": run_distill, "rl": run_rl, "eval": run_eval, "all": run_all}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.train.pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="smoke")
    p.add_argument("--config", help="TOML file refining the preset")
    p.add_argument("--stage", default="all", choices=sorted(STAGES))
    p.add_argument("--out", default="runs/train")
    p.add_argument("--model", help="student model name")
    p.add_argument("--teacher", help="oracle, http or local:<model>")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = p.parse_args(argv)
    sets = list(args.sets)
    if args.model:
        sets.append(f'model.name="{args.model}"')
    if args.teacher:
        sets.append(f'distill.teacher="{args.teacher}"')
    try:
        cfg = load_config(args.preset, args.config, sets)
        STAGES[args.stage](cfg, args.out)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
