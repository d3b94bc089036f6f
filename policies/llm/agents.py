"""LLM user agents: the zero-shot ranker and the STARec agent family.

All agents are batched :class:`~policies.base.Policy` objects, so the offline
protocol, the online environment loop and user code drive them like any
other policy. What differs is how they think:

==================  ===========================================================
``llmrank``         zero-shot LLMRank-style ranker: history + candidates, one
                    generated ranking, no memory, no evidence.
``starec``          fast thinking (generated ranking without reasoning) each
                    step + slow thinking after feedback (reflection rewrites
                    the preference description in memory).
``starec-fast``     the no-generation scoring path only: one batched forward
                    pass ranks by the log-likelihood of each candidate id.
``starec-slow``     chain-of-thought ranking every step + reflection.
``starec-adaptive`` scoring path, and slow CoT ranking only where the fast
                    path is unsure (small probability margin between its top
                    two), within a budget (share of decisions) + reflection.
==================  ===========================================================

Options come from ``PolicyContext.options`` (see :class:`LLMAgentConfig`);
unknown keys are ignored because the CLI hands one option table to every
policy.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch

from policies.base import Policy, PolicyContext
from policies.llm.backend import LLMBackend, get_backend
from policies.llm.evidence import EvidenceBuilder, EvidenceConfig
from policies.llm.memory import MemoryConfig, MemoryStore
from policies.llm.parsing import ParsedRanking, parse_ranking, parse_reflection
from policies.llm.prompts import PromptConfig, candidate_ids, render_llmrank_prompt, render_rank_prompt, render_reflect_prompt
from starec_env.text import AgentTextView, text_view
from starec_env.types import Feedback, RankingBatch, TrainSplit

_INSTANCES = itertools.count()  # numbers agent instances for cost accounting

Ranking = Literal["generate", "score", "slow", "adaptive"]
#: Prompts averaged for the calibration prior, and the seed stream they draw from.
CALIBRATION_PROMPTS = 8
CALIBRATION_STREAM = 7
#: The scoring path reads the next token after this answer prefix (the fast
#: prompt asks for "Ranking: A > B > ...").
SCORE_PREFIX = "Ranking:"


@dataclass(frozen=True)
class LLMAgentConfig:
    """Settings of an LLM agent, read from ``PolicyContext.options``.

    ``margin``: the adaptive agent thinks slowly when the fast path's top-two
    probability gap is below it; ``slow_budget``: the most it may think slowly,
    as a share of all its decisions so far. ``calibrate`` subtracts each
    identifier's log-likelihood under a content-free prompt (small models
    prefer "A" regardless of content). ``temperature`` 0 is greedy; sampling
    draws from a ``torch.Generator`` seeded with the context seed.
    ``threads``: torch CPU threads (the CLI's ``--threads``; applied even when
    the model was loaded earlier), ``None`` = automatic. ``prompt`` holds the
    prompt contents: the fast/scoring prompt is compact by default, slow
    thinking gets the full context (see :class:`~policies.llm.prompts.PromptConfig`).
    """

    model: str = "smollm2-135m"
    evidence: bool = True
    calibrate: bool = True
    batch_size: int = 16
    max_new_tokens: int = 64
    max_new_tokens_slow: int = 384
    max_new_tokens_reflect: int = 160
    temperature: float = 0.0
    margin: float = 0.1
    slow_budget: float = 0.25
    dtype: str | None = None
    threads: int | None = None
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "LLMAgentConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in options.items() if k in known}
        if isinstance(values.get("memory"), dict):
            values["memory"] = MemoryConfig.from_dict(values["memory"])
        if isinstance(values.get("prompt"), dict):
            values["prompt"] = PromptConfig.from_dict(values["prompt"])
        config = cls(**values)
        if not 0.0 <= config.slow_budget <= 1.0:
            raise ValueError(f"slow_budget must be a share in [0, 1], got {config.slow_budget}")
        return config


@dataclass
class _Counters:
    """Decision and parsing counts an agent reports beside the backend's costs."""

    decisions: int = 0
    slow_decisions: int = 0
    parsed: int = 0
    format_score_sum: float = 0.0
    format_failures: int = 0
    repairs: dict[str, int] = field(default_factory=dict)
    reflections: int = 0
    reflect_format_failures: int = 0

    def add_parse(self, parsed: ParsedRanking) -> None:
        self.parsed += 1
        self.format_score_sum += parsed.format_score
        self.format_failures += int(parsed.n_valid == 0)
        for key, value in parsed.repairs.items():
            self.repairs[key] = self.repairs.get(key, 0) + value

    def as_dict(self) -> dict[str, float]:
        out = {
            "decisions": self.decisions,
            "slow_decisions": self.slow_decisions,
            "format_score_mean": self.format_score_sum / self.parsed if self.parsed else float("nan"),
            "format_failures": self.format_failures,
            "reflections": self.reflections,
            "reflect_format_failures": self.reflect_format_failures,
        }
        out.update({f"repairs_{k}": v for k, v in sorted(self.repairs.items())})
        return out


class LLMAgent(Policy):
    """Shared machinery: text views, evidence, batched ranking, accounting.

    ``ranking`` picks how candidates are ranked; ``reflect`` turns on slow
    memory updates in :meth:`observe`; ``use_memory=False`` (the zero-shot
    ranker) means no memory, no profile and no evidence in its prompts.
    """

    def __init__(
        self,
        ctx: PolicyContext,
        config: LLMAgentConfig,
        *,
        ranking: Ranking,
        reflect: bool,
        use_memory: bool = True,
        backend: LLMBackend | None = None,
    ) -> None:
        self.ctx = ctx
        self.dataset = ctx.dataset
        self.config = config
        self.ranking = ranking
        self.reflect = reflect
        self.use_memory = use_memory
        self.backend = backend or get_backend(
            config.model, dtype=config.dtype, threads=config.threads, batch_size=config.batch_size, seed=ctx.seed
        )
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
        views = self._views(batch)
        evidence = self.evidence.lines(batch) if self.use_memory else None
        if self.ranking == "score":
            scores = self._score_path(views, evidence)
        elif self.ranking == "adaptive":
            scores = self._adaptive(views, evidence)
        else:
            scores = self._generate_path(views, evidence, slow=self.ranking == "slow")
        self.counters.decisions += len(batch)
        for user, cands, row in zip(batch.users, batch.candidates, scores):
            self._last_order[int(user)] = (tuple(int(c) for c in cands), list(np.argsort(-row, kind="stable")))
        return scores

    def observe(self, batch: RankingBatch, feedback: Feedback) -> None:
        """Slow thinking after feedback: reflect on prediction vs. actual choice
        and rewrite each user's preference description (bounded)."""
        if not (self.reflect and self.use_memory and len(batch)):
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
        texts, _ = self._generate(chats, self.config.max_new_tokens_reflect, "reflect")
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

    def _rank_prompt(self, view: AgentTextView, evidence: list[str] | None, mode: str):
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
        *,
        slow: bool,
        fallback: np.ndarray | None = None,
    ) -> np.ndarray:
        """Generated rankings (fast: bare list; slow: think + list with reasons),
        parsed with repairs. Candidates an answer leaves out are ordered by
        ``fallback`` scores or, for fast answers (forced to start with
        "Ranking:"), by the free first-step id log-likelihoods of the scoring path."""
        mode = "slow" if slow else "fast"
        chats = [self._rank_prompt(v, evidence[i] if evidence else None, mode) for i, v in enumerate(views)]
        n = len(views[0].candidates)
        if slow:
            texts, _ = self._generate(chats, self.config.max_new_tokens_slow, mode)
        else:
            options = [[" " + cid for cid in candidate_ids(n)]] * len(views)
            texts, first = self._generate(chats, self.config.max_new_tokens, mode, options, prefix=SCORE_PREFIX)
            fallback = fallback if fallback is not None else self._calibrated(np.stack(first), n)
        scores = np.zeros((len(views), n), dtype=np.float64)
        for i, (view, text) in enumerate(zip(views, texts)):
            parsed = parse_ranking(
                text,
                candidate_ids(n),
                fallback_scores=None if fallback is None else fallback[i],
                titles=[c[0] for c in view.candidates],
                expect_think=slow,
            )
            self.counters.add_parse(parsed)
            scores[i] = parsed.scores()
        self.counters.slow_decisions += len(views) if slow else 0
        return scores

    def _score_path(self, views: list[AgentTextView], evidence: list[list[str]] | None) -> np.ndarray:
        """Log-likelihood of each candidate id as the first ranked one, from one
        batched forward pass (optionally calibrated against a content-free prompt)."""
        chats = [self._rank_prompt(v, evidence[i] if evidence else None, "fast") for i, v in enumerate(views)]
        options = [[" " + cid for cid in candidate_ids(len(v.candidates))] for v in views]
        logp = self.backend.score_options(chats, options, prefix=SCORE_PREFIX, agent=self.account, mode="score")
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
                chats.append(render_rank_prompt(view, None, mode="fast", evidence=None, config=self.config.prompt))
            options = [[" " + cid for cid in candidate_ids(n)]] * len(chats)
            logp = self.backend.score_options(chats, options, prefix=SCORE_PREFIX, agent=self.account, mode="calibrate")
            self._prior[n] = np.mean(np.stack(logp), axis=0)
        return self._prior[n]

    def _adaptive(self, views: list[AgentTextView], evidence: list[list[str]] | None) -> np.ndarray:
        """Scoring path everywhere; slow CoT where the top-two probability margin
        is below ``margin``, least sure first, within ``slow_budget``."""
        scores = self._score_path(views, evidence)
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        top2 = -np.sort(-probs, axis=1)[:, :2]
        margin = top2[:, 0] - (top2[:, 1] if probs.shape[1] > 1 else 0.0)
        allowed = int(self.config.slow_budget * (self.counters.decisions + len(views))) - self.counters.slow_decisions
        unsure = np.flatnonzero(margin < self.config.margin)
        chosen = unsure[np.argsort(margin[unsure], kind="stable")][: max(0, allowed)]
        if len(chosen):
            sub_evidence = [evidence[i] for i in chosen] if evidence else None
            scores[chosen] = self._generate_path(
                [views[i] for i in chosen], sub_evidence, slow=True, fallback=scores[chosen]
            )
        return scores


def _make(ctx: PolicyContext, ranking: Ranking, reflect: bool, use_memory: bool = True) -> LLMAgent:
    return LLMAgent(ctx, LLMAgentConfig.from_options(ctx.options), ranking=ranking, reflect=reflect, use_memory=use_memory)


def make_llmrank(ctx: PolicyContext) -> Policy:
    """Zero-shot LLMRank-style baseline: same model, no memory, no evidence."""
    return _make(ctx, "generate", reflect=False, use_memory=False)


def make_starec(ctx: PolicyContext) -> Policy:
    """STARec: fast generated ranking each step, slow reflection after feedback."""
    return _make(ctx, "generate", reflect=True)


def make_starec_fast(ctx: PolicyContext) -> Policy:
    """Fast thinking only, in its no-generation scoring form."""
    return _make(ctx, "score", reflect=False)


def make_starec_slow(ctx: PolicyContext) -> Policy:
    """Chain-of-thought ranking every step, plus reflection."""
    return _make(ctx, "slow", reflect=True)


def make_starec_adaptive(ctx: PolicyContext) -> Policy:
    """Scoring path, slow thinking only when unsure (budgeted), plus reflection."""
    return _make(ctx, "adaptive", reflect=True)
