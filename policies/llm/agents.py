"""LLM user agents: the zero-shot ranker and the STARec agent family.

All agents are batched :class:`~policies.base.Policy` objects, so the offline
protocol, the online environment loop and user code drive them like any
other policy. What differs is how they think:

==================  ===========================================================
``llmrank``         zero-shot LLMRank-style ranker: history + candidates, one
                    generated ranking, no memory, no evidence.
``starec``          fast thinking as judgement slots (one forward pass scores
                    every candidate, :mod:`policies.llm.judge`) + slow
                    thinking: a reflection rewrites the preference memory
                    after feedback, and warms it up over the user's last
                    interactions before the first ranking.
``starec-noreflect`` the paper's "without self-reflection" ablation: the
                    walked interactions become plain history lines.
``starec-fast``     judgement slots only, no memory updates.
``starec-think``    chain-of-thought ranking every step (the ``think`` answer
                    format) + reflection.
``starec-adaptive`` judgement slots, and think-first ranking only where the fast
                    scores are unsure (small probability margin between the
                    top two), within a budget (share of decisions) + reflection.
==================  ===========================================================

``[model] ranking`` may also select the older generated ranking
(``generate``) or the first-identifier likelihood of a fast ``Ranking:``
answer (``score``), e.g. to compare formulations. The answer formats, and
which ranking generates which, live in :mod:`policies.llm.formats`.

Options come from ``PolicyContext.options`` (see :class:`LLMAgentConfig`);
the factories declare it with :func:`~policies.options.takes`, so the run
refuses a ``[policy.NAME]`` key no config reads before any model loads.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from policies.base import Policy, PolicyContext
from policies.llm.backend import LLMBackend, get_backend
from policies.llm.evidence import EvidenceBuilder, EvidenceConfig
from policies.llm.formats import FAST, REFLECT, THINK, AnswerFormat, generated_format, rankings
from policies.llm.judge import (
    HistoryMode,
    JudgeConfig,
    JudgeEncoder,
    display_order,
    evidence_text,
    in_candidate_order,
    shown_history,
)
from policies.llm.memory import MemoryConfig, MemoryStore
from policies.llm.models import TINY
from policies.llm.parsing import ParsedRanking, parse_ranking, parse_reflection
from policies.llm.prompts import PromptConfig, candidate_ids, render_llmrank_prompt, render_rank_prompt, render_reflect_prompt
from policies.llm.warmup import MemoryCache, Walk, WarmupConfig, cache_settings, plan_walk, step_batch
from policies.options import read, takes
from starec_env.text import AgentTextView, text_view
from starec_env.types import Feedback, RankingBatch, TrainSplit

_INSTANCES = itertools.count()  # numbers agent instances for cost accounting

#: Prompts averaged for the calibration prior, and the seed stream they draw from.
CALIBRATION_PROMPTS = 8
CALIBRATION_STREAM = 7


@dataclass(frozen=True)
class LLMAgentConfig:
    """Settings of an LLM agent, read from ``PolicyContext.options``.

    ``margin``: the adaptive agent ranks think-first when the fast path's
    top-two probability gap is below it; ``think_budget``: the most it may rank
    think-first, as a share of all its decisions so far
    (``max_new_tokens_think`` bounds think-first answers). ``calibrate``
    subtracts each identifier's log-likelihood under a content-free prompt
    (small models prefer "A" regardless of content). ``temperature`` 0 is greedy; sampling
    draws from a ``torch.Generator`` seeded with the context seed.
    ``threads``: torch CPU threads (the CLI's ``--threads``; applied even when
    the model was loaded earlier), ``None`` = automatic. ``prompt`` holds the
    prompt contents: the fast/scoring prompt is compact by default, the
    think-first one gets the full context (see :class:`~policies.llm.prompts.PromptConfig`).
    ``judge`` shapes the judgement-slot prompt of ``ranking="judge"``
    (:mod:`policies.llm.judge`), ``warmup`` the memory warm-up before a
    user's first ranking (:mod:`policies.llm.warmup`), whose memories are
    cached and logged in ``memory_dir`` when given (walks drawn with
    ``walk_seed``, the world's seed). ``precision``: "auto"
    computes in bf16 where the hardware does so natively, else fp32.
    """

    model: str = "smollm2-135m"
    evidence: bool = True
    calibrate: bool = True
    batch_size: int = 16
    max_new_tokens: int = 64
    max_new_tokens_think: int = 384
    max_new_tokens_reflect: int = 160
    temperature: float = 0.0
    margin: float = 0.1
    think_budget: float = 0.25
    dtype: str | None = None
    threads: int | None = None
    precision: str = "auto"
    memory_dir: str | None = None
    walk_seed: int = 0
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)

    def __post_init__(self) -> None:
        """Nested tables (``prompt``, ``judge``...) arrive as dicts from TOML:
        built here, strictly, so that checking a ``[policy.NAME]`` table
        (:func:`policies.options.check`) also catches a typo inside them."""
        for key, kind in (("memory", MemoryConfig), ("prompt", PromptConfig), ("judge", JudgeConfig), ("warmup", WarmupConfig)):
            value = getattr(self, key)
            if isinstance(value, dict):
                object.__setattr__(self, key, kind.from_dict(value))
        if not 0.0 <= self.think_budget <= 1.0:
            raise ValueError(f"think_budget must be a share in [0, 1], got {self.think_budget}")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "LLMAgentConfig":
        """Its own keys of a policy's options (see :func:`policies.options.read`)."""
        return read(cls, options)


@dataclass
class _Counters:
    """Decision and parsing counts an agent reports beside the backend's costs."""

    decisions: int = 0
    think_decisions: int = 0
    parsed: int = 0
    format_score_sum: float = 0.0
    format_failures: int = 0
    repairs: dict[str, int] = field(default_factory=dict)
    reflections: int = 0
    reflect_format_failures: int = 0
    warmed_users: int = 0
    warm_cache_hits: int = 0

    def add_parse(self, parsed: ParsedRanking) -> None:
        self.parsed += 1
        self.format_score_sum += parsed.format_score
        self.format_failures += int(parsed.n_valid == 0)
        for key, value in parsed.repairs.items():
            self.repairs[key] = self.repairs.get(key, 0) + value

    def as_dict(self) -> dict[str, float]:
        out = {
            "decisions": self.decisions,
            "think_decisions": self.think_decisions,
            "format_score_mean": self.format_score_sum / self.parsed if self.parsed else float("nan"),
            "format_failures": self.format_failures,
            "reflections": self.reflections,
            "reflect_format_failures": self.reflect_format_failures,
            "warmed_users": self.warmed_users,
            "warm_cache_hits": self.warm_cache_hits,
        }
        out.update({f"repairs_{k}": v for k, v in sorted(self.repairs.items())})
        return out


class LLMAgent(Policy):
    """Shared machinery: text views, evidence, batched ranking, accounting.

    ``ranking`` picks how candidates are ranked; ``reflect`` turns on slow
    memory updates in :meth:`observe` (and, for ``judge`` ranking, the memory
    warm-up before a user's first ranking); ``use_memory=False`` (the
    zero-shot ranker) means no memory, no profile and no evidence in its
    prompts. ``append_history`` is the paper's "without self-reflection"
    ablation: the items a reflecting agent would have walked are shown as
    plain history lines instead, so both see the same information.
    """

    def __init__(
        self,
        ctx: PolicyContext,
        config: LLMAgentConfig,
        *,
        ranking: str,
        reflect: bool,
        use_memory: bool = True,
        append_history: bool = False,
        backend: LLMBackend | None = None,
    ) -> None:
        if ranking not in rankings():
            raise ValueError(f"ranking must be one of {rankings()}, got {ranking!r}")
        self.ctx = ctx
        self.dataset = ctx.dataset
        self.config = config
        self.ranking = ranking
        self.reflect = reflect
        self.use_memory = use_memory
        self.append_history = append_history
        self.backend = backend or get_backend(
            config.model, dtype=config.dtype, threads=config.threads, batch_size=config.batch_size, seed=ctx.seed,
            precision=config.precision,
        )
        self.judge = JudgeEncoder(self.backend.tokenizer, config.judge) if ranking in ("judge", "adaptive") else None
        self._descriptions = ctx.dataset.items["description"].to_numpy()
        self._cache: MemoryCache | None = None
        self.memory = MemoryStore(config.memory)
        self.evidence = EvidenceBuilder(ctx, EvidenceConfig(enabled=config.evidence and use_memory))
        self.counters = _Counters()
        self._generator = torch.Generator(device=self.backend.device).manual_seed(ctx.seed)
        self._last_order: dict[int, tuple[tuple[int, ...], list[int]]] = {}
        self._prior: dict[int, np.ndarray] = {}
        self._instance = next(_INSTANCES)

    @property
    def account(self) -> str:
        """Key of this agent's costs in the (shared, per-process) backend: one
        per instance, so a fresh policy per seed reports its own costs, not a
        running total over every earlier instance of the same name."""
        return f"{self.name}#{self._instance}"

    # ----------------------------------------------------------- policy API
    def fit(self, split: TrainSplit) -> None:
        """Only the evidence scorers learn (from training interactions)."""
        self.evidence.fit(split)

    def score(self, batch: RankingBatch) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros(batch.candidates.shape, dtype=np.float64)
        if self.judge is not None:
            if self.reflect and self.use_memory and self.config.warmup.steps:
                self._warm_up(batch)
            views = self._views(batch)
            scores = self._judge_scores(batch, views, "judge")
            if self.ranking == "adaptive":
                scores = self._think_when_unsure(scores, views, self.evidence.lines(batch))
            self.counters.decisions += len(batch)
            self._remember_orders(batch, scores)
            return scores
        views = self._views(batch)
        evidence = self.evidence.lines(batch) if self.use_memory else None
        if self.ranking == "score":
            scores = self._score_path(views, evidence)
        else:
            scores = self._generate_path(views, evidence, generated_format(self.ranking))
        self.counters.decisions += len(batch)
        self._remember_orders(batch, scores)
        return scores

    def _remember_orders(self, batch: RankingBatch, scores: np.ndarray) -> None:
        for user, cands, row in zip(batch.users, batch.candidates, scores):
            self._last_order[int(user)] = (tuple(int(c) for c in cands), list(np.argsort(-row, kind="stable")))

    def observe(self, batch: RankingBatch, feedback: Feedback) -> None:
        """Slow thinking after feedback: reflect on prediction vs. actual choice
        and rewrite each user's preference description (bounded)."""
        if not (self.reflect and self.use_memory and len(batch)):
            return
        if self.ranking == "judge":
            self._observe_notes(batch, feedback)
            return
        chats, users, fallbacks = [], [], []
        for row, view in enumerate(self._views(batch)):
            user = int(batch.users[row])
            last = self._last_order.get(user)
            if last is None or last[0] != tuple(int(c) for c in batch.candidates[row]):
                continue  # no prediction of ours for these candidates: nothing to reflect on
            clicked = int(feedback.clicked[row])
            where = np.flatnonzero(batch.candidates[row] == clicked) if clicked >= 0 else np.array([], dtype=int)
            chosen = int(where[0]) if len(where) else None
            rating = float(feedback.rating[row]) if chosen is not None else None
            memory = self.memory.get(user)
            chats.append(
                render_reflect_prompt(
                    view, memory, predicted=last[1], chosen=chosen, rating=rating, config=self.config.prompt
                )
            )
            users.append(user)
            fallbacks.append(memory.preference)
        if not chats:
            return
        texts, _ = self._generate(chats, self.config.max_new_tokens_reflect, REFLECT.name)
        # the parser only extracts (loosely capped); the memory enforces its own bound
        cap = 4 * self.config.memory.max_preference_chars
        for user, text, fallback in zip(users, texts, fallbacks):
            parsed = parse_reflection(text, max_chars=cap, fallback=fallback)
            self.counters.reflections += 1
            self.counters.reflect_format_failures += int(parsed.source == "fallback")
            self.memory.set_preference(user, parsed.preference)

    def stats(self) -> dict:
        out = {"model": self.config.model}
        out.update(self.backend.stats(agent=self.account))
        out.update(self.counters.as_dict())
        if self.use_memory:
            out.update(self.memory.stats())
        return out

    # -------------------------------------------------------------- helpers
    def _views(self, batch: RankingBatch) -> list[AgentTextView]:
        """Text views; with memory, the history shown is the agent's bounded
        memory of the user (synced from the environment's history)."""
        views = []
        for row in range(len(batch)):
            view = text_view(
                self.dataset, int(batch.users[row]), batch.history[row], batch.history_ratings[row], batch.candidates[row]
            )
            if self.use_memory:
                memory = self.memory.sync_history(view.user, view.history, view.profile)
                view = dataclasses.replace(view, history=list(memory.history))
            views.append(view)
        return views

    # ------------------------------------------------ judgement slots (judge)
    @property
    def history_mode(self) -> HistoryMode:
        if self.append_history:
            return "append"
        return "memory" if self.reflect and self.use_memory else "plain"

    def _shown_history(self, view: AgentTextView) -> tuple[list, list[str]]:
        """The history lines of a judge prompt and their descriptions (see
        :func:`policies.llm.judge.shown_history`)."""
        rows = list(view.history)
        items = list(view.history_items)[-len(rows):] if rows else []
        take = shown_history(len(rows), self.history_mode, self.config.judge.history, self.config.warmup.steps)
        descriptions = [str(d) for d in self._descriptions[items[take]]] if len(items) == len(rows) else []
        return rows[take], descriptions

    def _judge_scores(self, batch: RankingBatch, views: list[AgentTextView], mode: str) -> np.ndarray:
        """One forward pass per user: every candidate's judgement-slot score."""
        table = self.evidence.table(batch) if self.evidence.config.enabled else None
        order = display_order(self.config.judge.order, table.scores if table else None, batch.candidates.shape)
        prompts = []
        for row, view in enumerate(views):
            rows, descriptions = self._shown_history(view)
            preference = self.memory.get(view.user).preference if (self.use_memory and not self.append_history) else ""
            evidence = evidence_text(table.ranks, row) if table else None
            messages = self.judge.messages(view, preference, evidence, rows, descriptions, order=order[row])
            prompts.append(self.judge.encode(messages))
        scores = self.backend.score_slots(prompts, self.judge.answer_ids, agent=self.account, mode=mode)
        return np.stack([in_candidate_order(s, o) for s, o in zip(scores, order)])

    def _reflect_notes(
        self, views: list[AgentTextView], orders: list[list[int]], chosen: list[int | None], ratings: list[float | None], mode: str
    ) -> list[str]:
        """Slow thinking: one short reflection per user, batched; each user's
        memory is rewritten (a malformed answer keeps the old memory, counted)."""
        cfg = self.config
        chats, fallbacks = [], []
        for view, order, pick, rating in zip(views, orders, chosen, ratings):
            memory = self.memory.get(view.user)
            chats.append(self.judge.note_messages(
                view, memory.preference, predicted=order, chosen=pick, rating=rating,
                max_words=cfg.prompt.max_words, top=cfg.prompt.reflect_top,
            ))
            fallbacks.append(memory.preference)
        texts, _ = self._generate(chats, cfg.warmup.max_new_tokens, mode)
        cap = 4 * cfg.memory.max_preference_chars
        out = []
        for view, text, fallback in zip(views, texts, fallbacks):
            parsed = parse_reflection(text, max_chars=cap, fallback=fallback)
            self.counters.reflections += 1
            self.counters.reflect_format_failures += int(parsed.source == "fallback")
            self.memory.set_preference(view.user, parsed.preference)
            out.append(self.memory.get(view.user).preference)
        return out

    def _observe_notes(self, batch: RankingBatch, feedback: Feedback) -> None:
        """Online slow thinking of judge agents: reflect on each decision of ours."""
        rows, orders, chosen, ratings = [], [], [], []
        for row in range(len(batch)):
            last = self._last_order.get(int(batch.users[row]))
            if last is None or last[0] != tuple(int(c) for c in batch.candidates[row]):
                continue
            clicked = int(feedback.clicked[row])
            where = np.flatnonzero(batch.candidates[row] == clicked) if clicked >= 0 else np.array([], dtype=int)
            rows.append(row)
            orders.append([int(i) for i in last[1]])
            chosen.append(int(where[0]) if len(where) else None)
            ratings.append(float(feedback.rating[row]) if len(where) else None)
        if rows:
            views = self._views(batch.take(np.array(rows)))
            self._reflect_notes(views, orders, chosen, ratings, REFLECT.name)

    def score_with_notes(self, batch: RankingBatch, notes: list[str]) -> np.ndarray:
        """Judge scores with the given note in each user's prompt instead of
        the agent's own memory (the memory probe: does the ranking read it?)."""
        if self.judge is None:
            raise ValueError(f"score_with_notes needs judge ranking, not {self.ranking!r}")
        views = self._views(batch)
        saved = [self.memory.get(v.user).preference for v in views]
        try:
            for view, note in zip(views, notes):
                self.memory.get(view.user).preference = note
            return self._judge_scores(batch, views, "probe")
        finally:
            for view, note in zip(views, saved):
                self.memory.get(view.user).preference = note

    def memory_cache(self) -> MemoryCache:
        """The warm-up memories of this agent's checkpoint and settings (in
        ``memory_dir`` when configured, else in this process only)."""
        if self._cache is None:
            cfg = self.config
            settings = cache_settings(
                cfg.model, self.ctx.seed if cfg.model == TINY else 0, cfg.warmup, cfg.walk_seed,
                {"judge": dataclasses.asdict(cfg.judge), "max_words": cfg.prompt.max_words,
                 "reflect_top": cfg.prompt.reflect_top, "temperature": cfg.temperature,
                 "evidence": self.evidence.config.enabled, "max_preference_chars": cfg.memory.max_preference_chars},
            )
            self._cache = MemoryCache(cfg.memory_dir, settings)
        return self._cache

    def _warm_up(self, batch: RankingBatch) -> None:
        """Walk each new user's last ``warmup.steps`` interactions before the
        first ranking (see :mod:`policies.llm.warmup`); cached memories are reused."""
        cache = self.memory_cache()
        walks: list[Walk] = []
        for row in range(len(batch)):
            user = int(batch.users[row])
            walk = plan_walk(self.dataset, user, batch.history[row], batch.history_ratings[row], self.config.warmup,
                             self.config.walk_seed)
            memory = self.memory.get(user)
            if memory.warm_key == walk.key or not walk.items:
                continue
            cached = cache.get(walk)
            if cached is not None:
                self.memory.set_preference(user, cached["memory"])
                memory.warm_key = walk.key
                self.counters.warm_cache_hits += 1
                continue
            memory.preference = ""  # a walk starts from an empty memory
            walks.append(walk)
        if not walks:
            return
        logs: dict[int, list[dict]] = {w.user: [] for w in walks}
        for step in range(max(len(w.candidates) for w in walks)):
            active = [w for w in walks if step < len(w.candidates)]
            sub = step_batch(active, step, batch.history.shape[1])
            views = self._views(sub)
            scores = self._judge_scores(sub, views, "warm_judge")
            orders = [[int(i) for i in np.argsort(-row, kind="stable")] for row in scores]
            chosen = [w.chosen[step] for w in active]
            ratings = [w.ratings[step] for w in active]
            notes = self._reflect_notes(views, orders, chosen, ratings, "warm_reflect")
            for w, order, pick, note in zip(active, orders, chosen, notes):
                logs[w.user].append({"item": int(w.candidates[step][pick]), "chosen_rank": order.index(pick) + 1,
                                     "rating": w.ratings[step], "memory": note})
        for w in walks:
            memory = self.memory.get(w.user)
            memory.warm_key = w.key
            cache.put(w, logs[w.user], memory.preference)
        self.counters.warmed_users += len(walks)

    def _rank_prompt(self, view: AgentTextView, evidence: list[str] | None, mode: str):
        """The ranking prompt asking for answer format ``mode``."""
        if not self.use_memory:
            return render_llmrank_prompt(view, config=self.config.prompt)
        memory = self.memory.get(view.user)
        return render_rank_prompt(view, memory, mode=mode, evidence=evidence, config=self.config.prompt)

    def _generate(
        self, chats: list, max_new_tokens: int, mode: str, options: list[list[str]] | None = None, prefix: str = ""
    ) -> tuple[list[str], list[np.ndarray] | None]:
        cfg = self.config
        return self.backend.generate_scored(
            chats,
            options,
            max_new_tokens=max_new_tokens,
            temperature=cfg.temperature,
            generator=self._generator if cfg.temperature > 0 else None,
            prefix=prefix,
            agent=self.account,
            mode=mode,
        )

    def _generate_path(
        self,
        views: list[AgentTextView],
        evidence: list[list[str]] | None,
        fmt: AnswerFormat,
        *,
        fallback: np.ndarray | None = None,
    ) -> np.ndarray:
        """Rankings generated in answer format ``fmt`` (fast: bare list; think:
        think + list with reasons), parsed with repairs. Candidates an answer
        leaves out are ordered by ``fallback`` scores or, for answers forced to
        start with the format's prefix ("Ranking:"), by the free first-step id
        log-likelihoods of the scoring path."""
        chats = [self._rank_prompt(v, evidence[i] if evidence else None, fmt.name) for i, v in enumerate(views)]
        n = len(views[0].candidates)
        budget = self.config.max_new_tokens_think if fmt.expect_think else self.config.max_new_tokens
        if fmt.prefix:
            options = [[" " + cid for cid in candidate_ids(n)]] * len(views)
            texts, first = self._generate(chats, budget, fmt.name, options, prefix=fmt.prefix)
            fallback = fallback if fallback is not None else self._calibrated(np.stack(first), n)
        else:
            texts, _ = self._generate(chats, budget, fmt.name)
        scores = np.zeros((len(views), n), dtype=np.float64)
        for i, (view, text) in enumerate(zip(views, texts)):
            parsed = parse_ranking(
                text,
                candidate_ids(n),
                fallback_scores=None if fallback is None else fallback[i],
                titles=[c[0] for c in view.candidates],
                expect_think=fmt.expect_think,
            )
            self.counters.add_parse(parsed)
            scores[i] = parsed.scores()
        self.counters.think_decisions += len(views) if fmt.expect_think else 0
        return scores

    def _score_path(self, views: list[AgentTextView], evidence: list[list[str]] | None) -> np.ndarray:
        """Log-likelihood of each candidate id as the first ranked one, from one
        batched forward pass (optionally calibrated against a content-free prompt)."""
        chats = [self._rank_prompt(v, evidence[i] if evidence else None, FAST.name) for i, v in enumerate(views)]
        options = [[" " + cid for cid in candidate_ids(len(v.candidates))] for v in views]
        logp = self.backend.score_options(chats, options, prefix=FAST.prefix, agent=self.account, mode="score")
        return self._calibrated(np.stack(logp), len(views[0].candidates))

    def _calibrated(self, logp: np.ndarray, n: int) -> np.ndarray:
        return logp - self._content_free_prior(n) if self.config.calibrate else logp

    def _content_free_prior(self, n: int) -> np.ndarray:
        """Per-identifier log-likelihood when the candidates say nothing about
        the user ("contextual calibration"): removes the model's bias for some
        letters. Averaged over :data:`CALIBRATION_PROMPTS` prompts of random
        catalogue items with no user context, so no letter is favoured by the
        content itself (a placeholder title such as "N/A" favours "N")."""
        if n not in self._prior:
            rng = np.random.default_rng([self.ctx.seed, CALIBRATION_STREAM])
            items = self.dataset.n_items
            chats = []
            for _ in range(CALIBRATION_PROMPTS):
                view = text_view(self.dataset, 0, np.empty(0, np.int64), np.empty(0), rng.choice(items, n, replace=items < n))
                view = dataclasses.replace(view, user=-1, profile={})
                chats.append(render_rank_prompt(view, None, mode=FAST.name, evidence=None, config=self.config.prompt))
            options = [[" " + cid for cid in candidate_ids(n)]] * len(chats)
            logp = self.backend.score_options(chats, options, prefix=FAST.prefix, agent=self.account, mode="calibrate")
            self._prior[n] = np.mean(np.stack(logp), axis=0)
        return self._prior[n]

    def _think_when_unsure(
        self, scores: np.ndarray, views: list[AgentTextView], evidence: list[list[str]] | None
    ) -> np.ndarray:
        """Think-first ranking where the fast scores' top-two probability margin
        is below ``margin``, least sure first, within ``think_budget``."""
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        top2 = -np.sort(-probs, axis=1)[:, :2]
        margin = top2[:, 0] - (top2[:, 1] if probs.shape[1] > 1 else 0.0)
        allowed = int(self.config.think_budget * (self.counters.decisions + len(views))) - self.counters.think_decisions
        unsure = np.flatnonzero(margin < self.config.margin)
        chosen = unsure[np.argsort(margin[unsure], kind="stable")][: max(0, allowed)]
        if len(chosen):
            scores = scores.copy()
            sub_evidence = [evidence[i] for i in chosen] if evidence else None
            scores[chosen] = self._generate_path([views[i] for i in chosen], sub_evidence, THINK, fallback=scores[chosen])
        return scores


def _make(ctx: PolicyContext, ranking: str, reflect: bool, use_memory: bool = True, append_history: bool = False) -> LLMAgent:
    return LLMAgent(ctx, LLMAgentConfig.from_options(ctx.options), ranking=ranking, reflect=reflect,
                    use_memory=use_memory, append_history=append_history)


@takes(LLMAgentConfig)
def make_llmrank(ctx: PolicyContext) -> Policy:
    """Zero-shot LLMRank-style baseline: same model, no memory, no evidence."""
    return _make(ctx, "generate", reflect=False, use_memory=False)


@takes(LLMAgentConfig)
def make_starec(ctx: PolicyContext) -> Policy:
    """STARec: judgement-slot ranking (fast) and reflection that rewrites the
    memory (slow), warmed up over each user's recent history."""
    return _make(ctx, "judge", reflect=True)


@takes(LLMAgentConfig)
def make_starec_noreflect(ctx: PolicyContext) -> Policy:
    """The "without self-reflection" ablation: what STARec would walk is shown as plain history lines."""
    return _make(ctx, "judge", reflect=False, append_history=True)


@takes(LLMAgentConfig)
def make_starec_fast(ctx: PolicyContext) -> Policy:
    """Fast thinking only: judgement slots, no memory updates."""
    return _make(ctx, "judge", reflect=False)


@takes(LLMAgentConfig)
def make_starec_think(ctx: PolicyContext) -> Policy:
    """Chain-of-thought ranking every step, plus reflection."""
    return _make(ctx, "think", reflect=True)


@takes(LLMAgentConfig)
def make_starec_adaptive(ctx: PolicyContext) -> Policy:
    """Judgement slots, think-first ranking only when unsure (budgeted), plus reflection."""
    return _make(ctx, "adaptive", reflect=True)
