"""The anchored-training stages of ``python -m experiments.run``: distill and RL.

Both take the run's :class:`~experiments.config.RunConfig` and write into
``cfg.out``:

* ``base/`` the untrained student; ``sft/`` (checkpoints, metrics.csv,
  ``curve.csv``, TensorBoard runs, ``model/``); ``rl/`` (GRPO from the SFT
  model) and ``rl-only/`` (GRPO from the base model: the "without SFT
  anchoring" ablation, trained when the ``starec-rl-only`` row is asked for);
* ``distill.json`` / ``rl.json`` / ``rl-only.json`` facts (data fraction
  used, rows per kind, steps, time, first/last reward).

What is trained (:mod:`experiments.train.walks`): SFT distils the oracle's
choice distribution into the judgement slots of the fast ranker and its
taste notes into the reflection; GRPO trains the reflection (slow thinking)
on the steps of warm-up walks, each rewritten note scored by the follow-up
ranking the current policy makes with it. The evaluation rows that use
these folders are built by :func:`trained_rows`.
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from experiments.config import TRAINED_ROWS, ConfigError, RunConfig
from experiments.curves import write_learning_curves
from experiments.memory_probe import memory_probe
from experiments.report import write_json, write_reward_curves
from experiments.train.common import check_model_dir, quiet_terminal, read_csv, save_model_atomic
from experiments.train.dist import is_main_process
from experiments.train.distill.export import teacher_judge_rows
from experiments.train.distill.policy import TeacherPolicy
from experiments.train.grpo import train_grpo
from experiments.train.rollout import MemoryBank
from experiments.train.sft import train_sft
from experiments.train.walks import NOTE_SLOT, VARIANTS, Decisions, RowBuilder, make_decisions, note_prompt_row
from experiments.world import World, load_world
from policies.base import PolicyContext
from policies.llm.agents import LLMAgent, LLMAgentConfig
from policies.llm.backend import LLMBackend
from policies.llm.judge import JudgeConfig, JudgeEncoder, in_candidate_order
from policies.llm.models import load_model, use_bf16
from policies.llm.notes import TasteNotes
from reward.shaping import build_reward_funcs
from starec_env.files import atomic_write
from starec_env.metrics import ndcg_single, rank_of
from starec_env.types import PAD, TrainSplit


@dataclass
class Context:
    """The world, the training data and the prompt machinery of a run.

    ``split`` holds what training may see: every user's interactions before
    the held-out target of *any* evaluation seed (so no seed's targets leak
    into training); ``eval_users`` are the users some seed evaluates.
    """

    cfg: RunConfig
    world: World
    split: TrainSplit
    eval_users: np.ndarray


def prepare(cfg: RunConfig) -> Context:
    world = load_world(cfg)
    ds = world.dataset
    cut = np.full(ds.n_users, np.iinfo(np.int64).max, dtype=np.int64)
    for seed in cfg.seeds:
        protocol = cfg.protocol.leave_one_out(ds, seed)
        np.minimum.at(cut, protocol.users, protocol.target_rows)
    keep = np.arange(len(ds.interactions)) < cut[ds.user_arr]
    eval_users = np.flatnonzero(cut < np.iinfo(np.int64).max)
    split = TrainSplit(ds, ds.interactions[keep].reset_index(drop=True), eval_users)
    return Context(cfg, world, split, eval_users)


def row_builder(ctx: Context, tokenizer: Any) -> RowBuilder:
    """Rows rendered exactly as the agents render their prompts."""
    cfg = ctx.cfg
    prompt, judge = cfg.prompt_config("starec"), cfg.judge_config("starec")  # what the starec rows are evaluated with
    notes = TasteNotes(ctx.world.dataset, ctx.world.simulator.utility, description_words=judge.description_words,
                       noun=judge.noun, seed=cfg.data.seed)
    return RowBuilder(ctx.world, JudgeEncoder(tokenizer, judge), notes, cfg.warmup_config("starec"), max_words=prompt.max_words,
                      reflect_top=prompt.reflect_top, target_temperature=cfg.distill.target_temperature)


def split_users(ctx: Context, rng: np.random.Generator, n_train: int, n_val: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint training and validation users among those with training interactions."""
    users = np.unique(ctx.split.interactions["user"].to_numpy(np.int64))
    picked = rng.permutation(users)
    n_val = min(n_val, max(0, len(users) - 1))
    return np.sort(picked[n_val : n_val + n_train]), np.sort(picked[:n_val])


def decisions_for(ctx: Context, users: np.ndarray, rng: np.random.Generator, per_user: int = 1) -> Decisions:
    cfg = ctx.cfg
    return make_decisions(ctx.world, ctx.split.interactions, users, cfg.protocol, cfg.warmup_config("starec"), rng,
                          walk_seed=cfg.data.seed, per_user=per_user, evidence=cfg.prompt.evidence)


# -------------------------------------------------------------- distillation
def run_distill(cfg: RunConfig) -> dict:
    """Stage 1: teacher targets and notes on training decisions -> SFT."""
    import datasets

    out = Path(cfg.out)
    quiet_terminal(out)
    began = time.perf_counter()
    model, tok = load_model(cfg.model.name, dtype=cfg.model.dtype, threads=cfg.threads or None, seed=cfg.data.seed)
    ctx = prepare(cfg)
    d = cfg.distill
    rng = np.random.default_rng([cfg.data.seed, 1])
    users, val_users = split_users(ctx, rng, d.train_users, d.val_users)
    if not len(users):
        raise ConfigError("distill.train_users: no user with training interactions is left for training")
    builder = row_builder(ctx, tok)
    decisions = decisions_for(ctx, users, rng, per_user=d.decisions_per_user)
    modes = list(rng.choice(np.array(VARIANTS), size=len(decisions), p=[d.memory_share, d.plain_share, d.append_share]))
    judge, teacher_stats = teacher_judge_rows(cfg, builder, decisions, modes)
    notes = [builder.note_sft_row(step) for step in builder.note_steps(decisions) if rng.random() < d.reflect_fraction]
    records = judge + notes
    if not records:
        raise ConfigError(f"the {d.teacher!r} teacher gave no usable training row: {teacher_stats}")
    order = rng.permutation(len(records))
    train_ds = datasets.Dataset.from_list([records[i] for i in order])
    save_model_atomic(model, tok, out / "base")
    split = ctx.split.interactions
    used = split[split["user"].isin(decisions.batch.users)]
    callbacks = []
    if d.eval_steps and len(val_users):
        val = decisions_for(ctx, val_users, np.random.default_rng([cfg.data.seed, 3]))
        callbacks.append(learning_curve(ctx, val, tok, out / "sft" / "curve.csv", d.eval_steps, d.batch_size * d.grad_accum,
                                        reflect=False))
    facts = {
        "teacher": d.teacher,
        "model": cfg.model.name,
        "users": int(len(users)),
        "decisions": int(len(decisions)),
        "val_users": int(len(val_users)),
        "teacher_stats": teacher_stats,
        "examples": len(train_ds),
        "examples_by_format": {"judge": len(judge), "note": len(notes)},
        "judge_variants": {v: int(sum(1 for m in modes if m == v)) for v in VARIANTS},
        "train_tokens": int(sum(len(r["input_ids"]) for r in records)),
        "train_interactions_used": int(len(used)),
        "train_interactions_total": int(len(split)),
        "data_fraction": len(used) / max(1, len(split)),
        # what the prompts show: each decision's shown history, its walk and its target
        "prompt_interactions": int(np.minimum((decisions.batch.history != PAD).sum(axis=1),
                                              builder.encoder.config.history + builder.warmup.steps).sum() + len(decisions)),
        "sft": train_sft(cfg, model, tok, train_ds, out / "sft", answer_ids=builder.encoder.answer_ids, callbacks=callbacks),
    }
    facts["seconds"] = round(time.perf_counter() - began, 2)
    previous = out / "distill.json"
    if facts["sft"].get("resumed_from") == "finished" and previous.exists():  # a no-op rerun: keep what the stage took
        facts["seconds"] = json.loads(previous.read_text()).get("seconds", facts["seconds"])
    if is_main_process():
        write_json(out / "distill.json", facts)
        write_learning_curves(out)
        print(f"distill: {facts['examples']} SFT rows ({len(judge)} judge, {len(notes)} note) from {facts['users']} users "
              f"({100 * facts['data_fraction']:.1f}% of training interactions), {facts['sft']['steps']} steps, {facts['seconds']}s")
    return facts


def live_agent(ctx: Context, model: Any, tokenizer: Any, decisions: Decisions, *, reflect: bool) -> LLMAgent:
    """A judge agent over a model being trained (no kept prefix caches, no
    memory cache on disk), fitted on what precedes ``decisions``: the
    evaluation code path, for learning curves."""
    cfg = ctx.cfg
    options = cfg.policy_options("starec")
    backend = LLMBackend(model, tokenizer, batch_size=cfg.model.batch_size,
                         bf16=use_bf16(cfg.model.precision, next(model.parameters()).device))
    agent = LLMAgent(PolicyContext(ctx.world.dataset, seed=cfg.data.seed, options=options),
                     LLMAgentConfig.from_options({**options, "memory_dir": None}), ranking="judge", reflect=reflect,
                     backend=backend)
    agent.name = "live"
    agent.fit(decisions.split)
    return agent


def ndcg_at_10(scores: np.ndarray, target_pos: np.ndarray) -> float:
    return float(ndcg_single(rank_of(scores, target_pos), 10).mean())


def learning_curve(ctx: Context, decisions: Decisions, tokenizer: Any, path: Path, every: int, per_step: int,
                   *, reflect: bool) -> Any:
    """A trainer callback logging the held-out NDCG@10 of ``decisions`` through
    the evaluation code path every ``every`` optimizer steps (and at the start
    and the end) to ``path`` (step, examples, metric): the judge with no note
    (``reflect=False``, SFT), or the whole agent - warm-up walk with the
    policy's own notes, then the judge reading the final note (GRPO)."""
    import torch
    from transformers import TrainerCallback

    class LearningCurve(TrainerCallback):
        def __init__(self) -> None:
            self.rows: list[dict] = []

        def _log(self, state: Any, model: Any) -> None:
            if not state.is_world_process_zero or any(r["step"] == state.global_step for r in self.rows):
                return
            was_training = model.training
            model.eval()
            with torch.no_grad():
                scores = live_agent(ctx, model, tokenizer, decisions, reflect=reflect).score(decisions.batch)
            self.rows.append({"step": state.global_step, "examples": state.global_step * per_step,
                              "ndcg@10": ndcg_at_10(scores, decisions.target_pos)})
            if was_training:
                model.train()
            write_csv(path, self.rows)

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            self.rows = [r for r in _read_rows(path) if r["step"] <= state.global_step]
            self._log(state, model)

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if state.global_step % every == 0:
                self._log(state, model)

        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            self._log(state, model)

    return LearningCurve()


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(Path(path), lambda fh: fh.write(buf.getvalue().encode()))


def _read_rows(path: Path) -> list[dict]:
    return [{k: float(v) if k != "step" else int(float(v)) for k, v in r.items()} for r in read_csv(path)]


# ------------------------------------------------------------------------ RL
class JudgeFollowupRanker:
    """The :data:`reward.shaping.FollowupRanker` of the judge agents: ranks each
    note row's follow-up decision with the rewritten note, by the current
    policy's judgement slots (one forward pass per prompt)."""

    def __init__(self, judge_config: JudgeConfig) -> None:
        self.judge_config = judge_config
        self.backend: LLMBackend | None = None
        self.encoder: JudgeEncoder | None = None

    def bind(self, trainer: Any) -> None:
        args = trainer.args
        self.backend = LLMBackend(trainer.model, trainer.processing_class, batch_size=8,
                                  bf16=bool(getattr(args, "bf16", False)))
        self.encoder = JudgeEncoder(trainer.processing_class, self.judge_config)

    def __call__(self, rows: list[int], memories: list[str], columns: dict) -> list[list[int]]:
        if self.backend is None:
            raise RuntimeError("JudgeFollowupRanker used before bind(trainer)")

        prompts, orders = [], []
        for i, memory in zip(rows, memories):
            state = json.loads(columns["state"][i])
            messages = [{**m, "content": m["content"].replace(NOTE_SLOT, memory or "(none yet)")} for m in state["messages"]]
            prompts.append(self.encoder.encode(messages))
            orders.append(state["order"])
        scores = self.backend.score_slots(prompts, self.encoder.answer_ids, agent="memory-reward", mode="judge")
        return [list(np.argsort(-in_candidate_order(s, o), kind="stable")) for s, o in zip(scores, orders)]


def prompt_stream(ctx: Context, seed: int, bank: MemoryBank, builder: RowBuilder) -> Iterator[dict]:
    """Endless GRPO rows: the reflection steps of warm-up walks over fresh
    training decisions. A step after the first continues from the best note
    the policy wrote at the step before (the :class:`MemoryBank`), else from
    the oracle's note."""
    rng = np.random.default_rng([seed, 2])
    users, _ = split_users(ctx, np.random.default_rng([ctx.cfg.data.seed, 1]), ctx.cfg.distill.train_users, ctx.cfg.distill.val_users)
    if not len(users):
        raise ConfigError("no training user is left for RL (lower distill.val_users or protocol.users)")
    while True:
        pick = np.sort(rng.choice(users, size=min(16, len(users)), replace=False))
        decisions = decisions_for(ctx, pick, rng)
        for step in builder.note_steps(decisions):
            before = bank.get(f"{step['user']}:{step['decision']}:{step['step'] - 1}") if step["step"] else ""
            yield note_prompt_row(step, note_before=before or None)


def run_rl(cfg: RunConfig) -> dict:
    """Stage 2: GRPO on the notes from the SFT model (``rl/``) and, when the
    ``starec-rl-only`` row is configured, from the base model (``rl-only/``)."""
    out = Path(cfg.out)
    starts = {"rl": out / "sft" / "model"}
    if "starec-rl-only" in cfg.policies:
        starts["rl-only"] = out / "base"
    for name, start in starts.items():
        check_model_dir(start, what=f"start model of {name!r} (run --stage distill first)")
    ctx = prepare(cfg)
    return {name: train_rl(ctx, start, name) for name, start in starts.items()}


def train_rl(ctx: Context, start: Path, name: str) -> dict:
    """One GRPO run from ``start`` into ``cfg.out/name``; every reward term is logged on its own."""
    from datasets import IterableDataset
    from transformers import AutoTokenizer

    cfg, out = ctx.cfg, Path(ctx.cfg.out)
    quiet_terminal(out)
    bank = MemoryBank()
    ranker = JudgeFollowupRanker(cfg.judge_config("starec"))
    tokenizer = AutoTokenizer.from_pretrained(str(start))
    builder = row_builder(ctx, tokenizer)
    try:
        funcs, weights = build_reward_funcs(cfg.reward, followup_ranker=ranker if cfg.reward.memory else None,
                                            record_memory=bank.record, seed=cfg.data.seed)
    except ValueError as err:
        raise ConfigError(f"[reward]: {err}") from None
    stream = IterableDataset.from_generator(_generate, gen_kwargs={"ctx": [ctx], "seed": cfg.data.seed, "bank": [bank],
                                                                   "builder": [builder]})
    callbacks = []
    if cfg.rl.eval_steps and cfg.rl.val_prompts:
        _, val_users = split_users(ctx, np.random.default_rng([cfg.data.seed, 1]), cfg.distill.train_users, cfg.distill.val_users)
        val = decisions_for(ctx, val_users[: cfg.rl.val_prompts], np.random.default_rng([cfg.data.seed, 3]))
        callbacks.append(learning_curve(ctx, val, tokenizer, out / name / "curve.csv", cfg.rl.eval_steps,
                                        cfg.rl.prompts_per_step, reflect=True))
    facts = train_grpo(cfg, start, stream, funcs, weights, out / name, on_trainer=ranker.bind, callbacks=callbacks)
    if facts.get("resumed_from") != "finished":
        facts["memories_written"] = len(bank.memories)
    if is_main_process():
        write_json(out / f"{name}.json", facts)
        write_reward_curves(read_csv(out / name / "metrics.csv"), out / name / "rewards.png", f"GRPO reward terms ({name})")
        write_learning_curves(out)
        print(f"rl ({name}): {facts['steps']} GRPO steps in {facts['seconds']}s, reward {facts['first_reward']} -> {facts['last_reward']}")
    return facts


def _generate(ctx: list, seed: int, bank: list, builder: list):
    # objects come wrapped in one-element lists: datasets treats list kwargs as shards
    yield from prompt_stream(ctx[0], seed, bank[0], builder[0])


# ---------------------------------------------------------------- evaluation
def trained_rows(cfg: RunConfig) -> tuple[RunConfig, dict[str, Callable]]:
    """The run config with each trained row's model folder filled in, and
    factories for the configured rows backed by training outputs.

    ``starec`` (SFT + RL), ``starec-sft``, ``starec-rl-only`` and
    ``starec-base`` (the untrained student) rank with ``[model] ranking``
    and reflect (warm-up walks, then after every online feedback);
    ``starec-noreflect`` is the RL student with the walked items as plain
    history lines instead; ``teacher`` is the distillation teacher. A row
    whose ``[policy.<row>]`` table names a ``model`` uses that model
    instead. Missing or broken folders are reported before any evaluation
    starts. Warm-up memories are cached and logged in ``<out>/memories``.
    """
    out = Path(cfg.out)
    factories: dict[str, Callable] = {}
    tables = {name: dict(table) for name, table in cfg.policy.items()}
    for row in cfg.trained_rows():
        if row == "teacher":
            factories[row] = lambda ctx: TeacherPolicy(ctx, cfg)
            continue
        table = tables.setdefault(row, {})
        if "model" not in table:
            folder = out / TRAINED_ROWS[row] / "model" if TRAINED_ROWS[row] != "base" else out / "base"
            check_model_dir(folder, what=f"model of row {row!r} (run --stage distill and --stage rl first)")
            table["model"] = str(folder)
        table.setdefault("memory_dir", str(out / "memories"))
        factories[row] = _student_factory(cfg.model.ranking, noreflect=row == "starec-noreflect")
    return replace(cfg, policy=tables), factories


def _student_factory(ranking: str, noreflect: bool) -> Callable:
    def make(ctx: PolicyContext) -> LLMAgent:
        return LLMAgent(ctx, LLMAgentConfig.from_options(ctx.options), ranking=ranking, reflect=not noreflect,
                        append_history=noreflect)

    return make


def probe_memory(cfg: RunConfig, factory: Callable) -> dict:
    """The memory probe of :mod:`experiments.memory_probe` for the ``starec`` row,
    on the first seed's first ``cfg.probe_users`` evaluation users."""
    world = load_world(cfg)
    protocol = cfg.protocol.leave_one_out(world.dataset, cfg.seeds[0])
    policy = factory(PolicyContext(world.dataset, seed=cfg.seeds[0], options=cfg.policy_options("starec")))
    policy.name = "starec"
    policy.fit(protocol.split)
    judge = cfg.judge_config("starec")
    notes = TasteNotes(world.dataset, world.simulator.utility, description_words=judge.description_words,
                       noun=judge.noun, seed=cfg.data.seed)
    return memory_probe(policy, protocol, notes, cfg.probe_users, "starec")
