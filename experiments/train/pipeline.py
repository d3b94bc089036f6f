"""The anchored-training stages of ``python -m experiments.run``: distill and RL.

Both take the run's :class:`~experiments.config.RunConfig` and write into
``cfg.out``:

* ``base/`` the untrained student; ``sft/`` (checkpoints, metrics.csv,
  TensorBoard runs, ``model/``); ``rl/`` (GRPO from the SFT model) and
  ``rl-only/`` (GRPO from the base model: the "without SFT anchoring"
  ablation, trained when the ``starec-rl-only`` row is asked for);
* ``distill.json`` / ``rl.json`` / ``rl-only.json`` facts (data fraction
  used, trace filter statistics, steps, time, first/last reward).

The evaluation rows that use these folders are built by
:func:`trained_factories`. Formats trained: see :mod:`experiments.train.rollout`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from experiments.config import TRAINED_ROWS, ConfigError, RunConfig
from experiments.report import write_json, write_reward_curves
from policies.base import Policy
from experiments.train.common import check_model_dir, read_csv
from experiments.train.dist import is_main_process
from starec_env.types import PAD
from experiments.train.rollout import (
    RANK_PREFIX,
    MemoryBank,
    PromptRenderer,
    States,
    offline_states,
    online_transitions,
    simulator_responder,
    view_from_json,
    view_of,
)


@dataclass
class Context:
    """The world, the training data and the prompt machinery of a run.

    ``split`` holds what training may see: every user's interactions before
    the held-out target of *any* evaluation seed (so no seed's targets leak
    into training); ``eval_users`` are the users some seed evaluates (kept
    out of the online RL sessions too).
    """

    cfg: RunConfig
    world: Any
    split: Any
    eval_users: np.ndarray
    evidence: Any
    renderer: PromptRenderer


def prepare(cfg: RunConfig) -> Context:
    from experiments.evaluate import load_world
    from policies.base import PolicyContext
    from policies.llm.evidence import EvidenceBuilder, EvidenceConfig
    from starec_env.protocol import LeaveOneOut
    from starec_env.types import TrainSplit

    world = load_world(cfg)
    ds, p = world.dataset, cfg.protocol
    cut = np.full(ds.n_users, np.iinfo(np.int64).max, dtype=np.int64)
    for seed in cfg.seeds:
        protocol = LeaveOneOut(ds, n_negatives=p.negatives, n_users=p.users, history_len=p.history_len,
                               positive_threshold=p.positive_threshold, seed=seed)
        np.minimum.at(cut, protocol.users, protocol.target_rows)
    keep = np.arange(len(ds.interactions)) < cut[ds.user_arr]
    eval_users = np.flatnonzero(cut < np.iinfo(np.int64).max)
    split = TrainSplit(ds, ds.interactions[keep].reset_index(drop=True), eval_users)
    evidence = None
    if cfg.prompt.evidence:
        evidence = EvidenceBuilder(PolicyContext(ds, seed=cfg.data.seed), EvidenceConfig())
        evidence.fit(split)
    return Context(cfg, world, split, eval_users, evidence, PromptRenderer(ds, cfg, evidence))


def teacher_samples(dataset: Any, evidence: Any, states: States) -> list:
    """Teacher tasks for ranking states (view, evidence with its signals, truth)."""
    from policies.llm.evidence import render_lines
    from policies.llm.teachers import TeacherSample

    table = evidence.table(states.batch) if evidence is not None else None
    lines = render_lines(table) if table is not None else None
    c = states.batch.candidates.shape[1]
    return [
        TeacherSample(
            view=view_of(dataset, states.batch, r),
            key=int(states.batch.users[r]),
            evidence=lines[r] if lines is not None else None,
            signals=[table.signals(r, j) for j in range(c)] if table is not None else None,
            utilities=states.utilities[r],
            target=int(states.target_pos[r]),
            rating=float(states.target_rating[r]) if states.target_rating is not None else None,
            user=int(states.batch.users[r]),
            items=tuple(int(i) for i in states.batch.candidates[r]),
        )
        for r in range(len(states))
    ]


def _share(items: list, rng: np.random.Generator, share: float) -> list:
    """Each item kept with probability ``share`` (one draw per item, in order)."""
    return [x for x in items if rng.random() < share]


def _fast_records(ctx: Context, traces: list) -> list[dict]:
    """The bare-ranking form of think-first traces: same prompt content, the
    teacher's order as one ``Ranking:`` line."""
    from policies.llm.parsing import parse_ranking

    out = []
    for t in traces:
        s = t.sample
        order = parse_ranking(t.completion, s.ids).order
        prompt = ctx.renderer.rank_prompt(s.view, s.memory, s.evidence, "fast")
        out.append({"prompt": prompt, "completion": [{"role": "assistant", "content": RANK_PREFIX + " " + " > ".join(s.ids[i] for i in order)}]})
    return out


def run_distill(cfg: RunConfig) -> dict:
    """Stage 1: teacher traces on training users -> filter/rethink -> SFT."""
    import datasets

    from experiments.train.common import save_model_atomic
    from experiments.train.sft import train_sft
    from policies.llm.models import load_model
    from policies.llm.teachers import DistillConfig, FilterConfig, distill, make_teacher, reflect_samples, to_records

    out = Path(cfg.out)
    began = time.perf_counter()
    model, tok = load_model(cfg.model.name, dtype=cfg.model.dtype, threads=cfg.threads or None, seed=cfg.data.seed)
    teacher = make_teacher(cfg.distill.teacher, seed=cfg.data.seed)
    ctx = prepare(cfg)
    rng = np.random.default_rng([cfg.data.seed, 1])
    split = ctx.split.interactions
    all_users = np.unique(split["user"].to_numpy(np.int64))
    users = np.sort(rng.choice(all_users, size=min(cfg.distill.train_users, len(all_users)), replace=False))
    states = offline_states(ctx.world.dataset, ctx.world.simulator, split, users, cfg.protocol, rng)
    samples = teacher_samples(ctx.world.dataset, ctx.evidence, states)
    tcfg = DistillConfig(max_rethinks=cfg.distill.rethink, filter=FilterConfig(min_ndcg=cfg.distill.min_ndcg), prompt=ctx.renderer.prompt_cfg)
    ranked = distill(teacher, samples, "rank", tcfg)
    n_reflect = int(round(cfg.distill.reflect_fraction * len(samples)))
    reflected = None
    if n_reflect:
        # the agent's own prediction before feedback: the genre agent's order (a plausible, imperfect guess)
        guess = ctx.evidence.table(states.batch).scores["genre"] if ctx.evidence is not None else rng.random(states.utilities.shape)
        predicted = np.argsort(-guess[:n_reflect], axis=1, kind="stable")
        reflected = distill(teacher, reflect_samples(samples[:n_reflect], predicted), "reflect", tcfg)
    reflect = reflected.traces if reflected else []
    if not ranked.traces + reflect:
        raise ConfigError(f"the {cfg.distill.teacher!r} teacher produced no trace that passed the filter: {ranked.stats}")
    think = _share(ranked.traces, rng, cfg.distill.think_fraction)
    fast = _fast_records(ctx, _share(ranked.traces, rng, cfg.distill.fast_fraction))
    records = [{"prompt": r["prompt"], "completion": r["completion"]} for r in to_records(think + reflect)] + fast
    order = rng.permutation(len(records))
    train_ds = datasets.Dataset.from_list([records[i] for i in order])
    used = split[split["user"].isin(users)]
    save_model_atomic(model, tok, out / "base")
    facts = {
        "teacher": cfg.distill.teacher,
        "model": cfg.model.name,
        "users": int(len(users)),
        "states": int(len(states)),
        "rank": ranked.stats,
        "reflect": reflected.stats if reflected else None,
        "examples": len(train_ds),
        "examples_by_format": {"think": len(think), "reflect": len(reflect), "fast": len(fast)},
        "train_interactions_used": int(len(used)),
        "train_interactions_total": int(len(split)),
        "data_fraction": len(used) / max(1, len(split)),
        # what the prompts actually show: each state's target plus its last max_history items
        "prompt_interactions": int(np.minimum((states.batch.history != PAD).sum(axis=1), cfg.prompt.max_history).sum() + len(states)),
        "sft": train_sft(cfg, model, tok, train_ds, out / "sft"),
    }
    facts["seconds"] = round(time.perf_counter() - began, 2)
    if is_main_process():
        write_json(out / "distill.json", facts)
        print(f"distill: {facts['examples']} SFT examples from {facts['users']} users "
              f"({100 * facts['data_fraction']:.1f}% of training interactions), {facts['sft']['steps']} steps, {facts['seconds']}s")
    return facts


class FollowupRanker:
    """Ranks each reflect row's follow-up decision with the new description, by
    the current policy's scoring path (one forward pass per prompt), and
    keeps the best descriptions in a :class:`MemoryBank`."""

    def __init__(self, renderer: PromptRenderer, bank: MemoryBank) -> None:
        self.renderer = renderer
        self.bank = bank
        self.backend = None

    def bind(self, trainer: Any) -> None:
        from policies.llm.backend import LLMBackend

        self.backend = LLMBackend(trainer.model, trainer.processing_class, batch_size=8)

    def __call__(self, rows: list[int], memories: list[str], columns: dict) -> list[list[int]]:
        if self.backend is None:
            raise RuntimeError("FollowupRanker used before bind(trainer)")
        chats, options = [], []
        for i, memory in zip(rows, memories):
            state = json.loads(columns["state"][i])
            chats.append(self.renderer.rank_prompt(view_from_json(state["view"]), memory, state["evidence"]))
            options.append([" " + cid for cid in columns["candidate_ids"][i]])
        logp = self.backend.score_options(chats, options, prefix=RANK_PREFIX, agent="memory-reward", mode="score")
        return [list(np.argsort(-s, kind="stable")) for s in logp]


def prompt_stream(ctx: Context, seed: int, bank: MemoryBank) -> Iterator[dict]:
    """Endless RL rows from the live simulation (or the training split), formats mixed."""
    from experiments.evaluate import make_env
    from policies.base import PolicyContext
    from policies.registry import make_policy

    rl = ctx.cfg.rl
    rng = np.random.default_rng([seed, 2])
    ds = ctx.world.dataset

    def modes(n: int, allow_reflect: bool) -> np.ndarray:
        u = rng.random(n)
        reflect = allow_reflect & (u < rl.reflect_fraction)
        fast = ~reflect & (u < rl.reflect_fraction + rl.fast_fraction)
        return np.where(reflect, "reflect", np.where(fast, "fast", "think"))

    if rl.source == "online":
        env = make_env(ctx.cfg, ctx.world)
        pool = np.setdiff1d(np.arange(ds.n_users), ctx.eval_users)
        if not len(pool):
            raise ConfigError("every user is an evaluation user: no one is left for online RL (lower protocol.users)")
        agents = np.sort(rng.choice(pool, size=min(env.n_agents, len(pool)), replace=False))
        behaviour = make_policy("genre", PolicyContext(ds, seed=seed))
        behaviour.fit(ctx.split)
        for before, predicted, (chosen, rating), after in online_transitions(env, behaviour, seed, agents):
            mode = modes(len(before), True)
            memories = [bank.get(u) for u in before.batch.users]
            rank = np.flatnonzero(mode != "reflect")
            refl = np.flatnonzero(mode == "reflect")
            rows = ctx.renderer.rank_rows(before.take(rank), [memories[i] for i in rank], list(mode[rank]))
            rows += ctx.renderer.reflect_rows(
                before.take(refl), predicted[refl], chosen[refl], rating[refl], after.take(refl), [memories[i] for i in refl]
            )
            yield from rows
    else:
        interactions = ctx.split.interactions
        users = np.unique(interactions["user"].to_numpy(np.int64))
        while True:
            pick = np.sort(rng.choice(users, size=min(32, len(users)), replace=False))
            states = offline_states(ds, ctx.world.simulator, interactions, pick, ctx.cfg.protocol, rng)
            yield from ctx.renderer.rank_rows(states, [bank.get(u) for u in states.batch.users], list(modes(len(states), False)))


def run_rl(cfg: RunConfig) -> dict:
    """Stage 2: GRPO on live prompts from the SFT model (``rl/``) and, when the
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

    from experiments.train.grpo import train_grpo
    from reward.shaping import build_reward_funcs

    cfg, out = ctx.cfg, Path(ctx.cfg.out)
    bank = MemoryBank()
    ranker = FollowupRanker(ctx.renderer, bank)
    try:
        funcs, weights = build_reward_funcs(
            cfg.reward,
            followup_ranker=ranker if cfg.reward.memory else None,
            respond=simulator_responder(ctx.world.simulator),
            record_memory=bank.record,
            seed=cfg.data.seed,
        )
    except ValueError as err:
        raise ConfigError(f"[reward]: {err}") from None
    stream = IterableDataset.from_generator(_generate, gen_kwargs={"ctx": [ctx], "seed": cfg.data.seed, "bank": [bank]})
    facts = train_grpo(cfg, start, stream, funcs, weights, out / name, on_trainer=ranker.bind)
    if facts.get("resumed_from") != "finished":
        facts["memories_written"] = len(bank.memories)
    if is_main_process():
        write_json(out / f"{name}.json", facts)
        write_reward_curves(read_csv(out / name / "metrics.csv"), out / name / "rewards.png", f"GRPO reward terms ({name})")
        print(f"rl ({name}): {facts['steps']} GRPO steps in {facts['seconds']}s, reward {facts['first_reward']} -> {facts['last_reward']}")
    return facts


def _generate(ctx: list, seed: int, bank: list):
    # objects come wrapped in one-element lists: datasets treats list kwargs as shards
    yield from prompt_stream(ctx[0], seed, bank[0])


# ---------------------------------------------------------------- evaluation
def trained_rows(cfg: RunConfig) -> tuple[RunConfig, dict[str, Callable]]:
    """The run config with each trained row's model folder filled in, and
    factories for the configured rows backed by training outputs.

    ``starec`` (SFT + RL), ``starec-sft``, ``starec-rl-only`` rank with
    ``[model] ranking`` and reflect after feedback; ``starec-noreflect`` is
    the RL student with plain history appending; ``teacher`` is the
    distillation teacher ranking through its own interface. A row whose
    ``[policy.<row>]`` table names a ``model`` uses that model instead.
    Missing or broken folders are reported before any evaluation starts.
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
            folder = out / TRAINED_ROWS[row] / "model"
            check_model_dir(folder, what=f"model of row {row!r} (run --stage distill and --stage rl first)")
            table["model"] = str(folder)
        factories[row] = _student_factory(cfg.model.ranking, reflect=row != "starec-noreflect")
    return replace(cfg, policy=tables), factories


def _student_factory(ranking: str, reflect: bool) -> Callable:
    def make(ctx: Any) -> Any:
        from policies.llm.agents import LLMAgent, LLMAgentConfig

        return LLMAgent(ctx, LLMAgentConfig.from_options(ctx.options), ranking=ranking, reflect=reflect)

    return make


class TeacherPolicy(Policy):
    """The distillation teacher as a policy: it answers the student's
    think-first ranking prompt for each user, and its parsed order is the
    ranking. Privileged (the oracle teacher reads true utilities), so it is
    an upper bound when the teacher is the oracle."""

    def __init__(self, ctx: Any, cfg: RunConfig) -> None:
        from policies.llm.evidence import EvidenceBuilder, EvidenceConfig
        from policies.llm.teachers import make_teacher

        self.name = "teacher"
        self.upper_bound = cfg.distill.teacher == "oracle"
        self.ctx = ctx
        self.cfg = cfg
        self.teacher = make_teacher(cfg.distill.teacher, seed=ctx.seed)
        self.evidence = EvidenceBuilder(ctx, EvidenceConfig(enabled=cfg.prompt.evidence))
        self.renderer = PromptRenderer(ctx.dataset, cfg, self.evidence if cfg.prompt.evidence else None)
        self.calls = 0

    def fit(self, split: Any) -> None:
        self.evidence.fit(split)

    def score(self, batch: Any) -> np.ndarray:
        from policies.llm.parsing import parse_ranking

        util = np.asarray(self.ctx.simulator.utility(batch.users, batch.candidates), dtype=np.float64)
        states = States(batch, util.argmax(axis=1), util)
        samples = teacher_samples(self.ctx.dataset, self.evidence if self.cfg.prompt.evidence else None, states)
        chats = [s.prompt("rank", self.renderer.prompt_cfg) for s in samples]
        texts = self.teacher.generate("rank", samples, chats, [None] * len(samples))
        self.calls += len(texts)
        return np.stack([parse_ranking(t, s.ids, expect_think=True).scores() for t, s in zip(texts, samples)])

    def stats(self) -> dict:
        return {"teacher": self.cfg.distill.teacher, "teacher_calls": self.calls}
