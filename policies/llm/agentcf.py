"""AgentCF baseline: users *and* items are language agents with text memories.

Zhang et al., "AgentCF: Collaborative Learning with Autonomous Language
Agents for Recommender Systems" (WWW 2024), the strongest agent baseline of
the STARec paper. Collaborative filtering happens in text:

* **Training** (:meth:`AgentCF.fit`): for the last few positive training
  interactions of each sampled user, in time order and batched over users,
  the user agent chooses between the item the user really chose and a
  negative drawn with a seeded generator, reading its own memory and the two
  items' memories. When it picks wrong, *collaborative reflection* rewrites
  both sides: the user memory (what the user really likes) and the memories
  of both items (what kind of user chooses / passes over them). Item
  memories are shared by all users, which is where the collaborative signal
  comes from. AgentCF reflects until the choice is right; here at most
  ``rounds`` times (CPU budget).
* **Inference** (:meth:`AgentCF.score`): the user agent ranks the candidates
  from its memory and the candidates' memories - by the no-generation scoring
  path (default, one forward pass per user) or a generated ranking parsed
  with repairs.

It runs on the same backend, accounting, memory bounds and parser as the
STARec agents (it is an :class:`~policies.llm.agents.LLMAgent` with its own
prompts, ``templates/agentcf_*.j2``). The choice is read by the scoring path
(log-likelihood of " A" vs " B" after "Choice:"), so training generates text
only for reflections, which are forced to open ``<preference>`` with the
memory's first words (a small model's short budget goes into the memory, not
into reasoning or echoing the prompt).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from policies.base import Policy, PolicyContext
from policies.llm.agents import LLMAgent, LLMAgentConfig
from policies.llm.backend import LLMBackend
from policies.llm.formats import get_format
from policies.llm.memory import MemoryConfig, MemoryStore
from policies.llm.parsing import parse_reflection
from policies.llm.prompts import candidate_ids, render_template
from policies.options import read, takes
from starec_env.protocol import sample_unseen
from starec_env.text import AgentTextView, text_view
from starec_env.types import TrainSplit

#: The training choice is read as the next token after this answer prefix.
CHOICE_PREFIX = "Choice:"
CHOICE_OPTIONS = (" A", " B")
#: Reflections are forced to open the answer tag with the memory's first
#: words: no reasoning section, so a small model's short token budget goes
#: into the memory itself, and it writes a description instead of echoing the prompt.
USER_REFLECT_PREFIX = "<preference>I like"
ITEM_REFLECT_PREFIX = "<preference>Enjoyed by viewers who"
#: Random stream of the training plan (user subset, negatives, display order).
_TRAIN_STREAM = 5


@dataclass(frozen=True)
class AgentCFConfig:
    """AgentCF's own settings, read from ``PolicyContext.options`` (the LLM
    settings - model, memory, prompt, token limits - are :class:`LLMAgentConfig`'s).

    ``variant``: which users' interactions train, as in
    :meth:`TrainSplit.for_variant` - "sample" (the evaluated users, the
    paper's setting) or "full" (every user: item agents then meet many more
    users, so more candidates carry a note); ``train_users``: how many of
    those train (None: all, drawn with the seeded generator otherwise);
    ``train_steps``: their last positive interactions used, each one choice;
    ``rounds``: reflection rounds at most per wrong choice; item memories are
    bounded by ``item_memory_chars`` and asked for in ``item_max_words``
    (short: twenty notes sit in every ranking prompt, whose prefill is the cost);
    ``item_history``: recent items of the user an item agent sees when it
    reflects; ``positive_threshold``: ratings above it are positives;
    ``ranking``: "score" (scoring path) or "generate" (parsed ranking).
    """

    variant: str = "sample"
    train_users: int | None = None
    train_steps: int = 2
    rounds: int = 1
    item_memory_chars: int = 160
    item_max_words: int = 25
    item_history: int = 5
    positive_threshold: float = 3.0
    ranking: str = "score"

    def __post_init__(self) -> None:
        if self.variant not in ("sample", "full"):
            raise ValueError(f"agentcf variant must be 'sample' or 'full', got {self.variant!r}")
        if self.ranking not in ("score", "generate"):
            raise ValueError(f"agentcf ranking must be 'score' or 'generate', got {self.ranking!r}")
        if self.train_users is not None and self.train_users < 0:
            raise ValueError(f"agentcf train_users must be >= 0 or None, got {self.train_users}")
        for name in ("train_steps", "rounds", "item_history"):
            if getattr(self, name) < 0:
                raise ValueError(f"agentcf {name} must be >= 0, got {getattr(self, name)}")
        if self.item_memory_chars < 1 or self.item_max_words < 1:
            raise ValueError(
                f"agentcf item_memory_chars and item_max_words must be >= 1, got "
                f"{self.item_memory_chars} and {self.item_max_words}"
            )

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "AgentCFConfig":
        """Its own keys of the options table it shares with :class:`LLMAgentConfig`."""
        return read(cls, options)


@dataclass(frozen=True)
class Pair:
    """One training choice: ``items`` in display order, ``actual`` the display
    position (0/1) of the item the user really chose, with its ``rating`` and
    the user's history before it."""

    user: int
    items: tuple[int, int]
    actual: int
    rating: float
    history: np.ndarray
    history_ratings: np.ndarray


@dataclass
class _TrainCounters:
    """Training figures reported (under these names) beside the backend's costs."""

    train_choices: int = 0
    train_mistakes: int = 0
    train_still_wrong: int = 0
    item_reflections: int = 0
    item_reflect_format_failures: int = 0


class AgentCF(LLMAgent):
    """User and item agents with text memories, trained by collaborative reflection."""

    def __init__(
        self,
        ctx: PolicyContext,
        config: LLMAgentConfig,
        cf: AgentCFConfig | None = None,
        *,
        backend: LLMBackend | None = None,
    ) -> None:
        cf = cf or AgentCFConfig()
        super().__init__(ctx, config, ranking=cf.ranking, reflect=False, backend=backend)
        self.cf = cf
        self.items = MemoryStore(MemoryConfig(max_history=0, max_preference_chars=cf.item_memory_chars))
        self.train = _TrainCounters()

    # ------------------------------------------------------------- training
    def fit(self, split: TrainSplit) -> None:
        """Evidence scorers (if on), then the agents' memories by collaborative
        reflection, one batched step per position in the users' sequences.
        Calling it again continues from the current memories."""
        super().fit(split)
        for pairs in self.plan(split):
            self._train_step(pairs)

    def plan(self, split: TrainSplit) -> list[list[Pair]]:
        """The training choices, grouped by step (step ``s`` holds every
        training user's ``s``-th chosen positive, oldest first). A function of
        the seed and the split: users, negatives and display order come from a
        generator derived from the seed."""
        rng = self.ctx.rng(_TRAIN_STREAM)
        inter = split.interactions
        user_col = inter["user"].to_numpy(np.int64)
        pool = split.sample_users if self.cf.variant == "sample" else np.unique(user_col)
        users = np.sort(np.asarray(pool, dtype=np.int64))
        if self.cf.train_users is not None and self.cf.train_users < len(users):
            users = np.sort(rng.choice(users, size=self.cf.train_users, replace=False))
        order = np.argsort(user_col, kind="stable")  # time order within each user is kept
        item_col = inter["item"].to_numpy(np.int64)[order]
        rating_col = inter["rating"].to_numpy(np.float64)[order]
        bounds = np.searchsorted(user_col[order], np.stack([users, users + 1]))
        keep = self.config.prompt.max_history
        steps: list[list[Pair]] = []
        for user, lo, hi in zip(users.tolist(), bounds[0], bounds[1]):
            items, ratings = item_col[lo:hi], rating_col[lo:hi]
            positives = np.flatnonzero(ratings > self.cf.positive_threshold)
            if np.unique(items).size >= self.dataset.n_items:
                continue  # the user touched every item: no negative to contrast with
            chosen = positives[max(0, len(positives) - self.cf.train_steps) :]
            for step, k in enumerate(chosen.tolist()):
                negative = int(sample_unseen(rng, self.dataset.n_items, items, 1)[0])
                actual = int(rng.integers(2))
                shown = (int(items[k]), negative) if actual == 0 else (negative, int(items[k]))
                start = max(0, k - keep)
                if step == len(steps):
                    steps.append([])
                steps[step].append(Pair(user, shown, actual, float(ratings[k]), items[start:k], ratings[start:k]))
        return steps

    def _train_step(self, pairs: list[Pair]) -> None:
        """Choose; reflect on the wrong choices and choose again, up to ``rounds`` times."""
        wrong = self._choose(pairs)
        self.train.train_choices += len(pairs)
        self.train.train_mistakes += int(wrong.sum())
        for _ in range(self.cf.rounds):
            rows = np.flatnonzero(wrong)
            if not len(rows):
                break
            self._reflect([pairs[r] for r in rows])
            wrong[rows] = self._choose([pairs[r] for r in rows])
        self.train.train_still_wrong += int(wrong.sum())

    def _choose(self, pairs: list[Pair]) -> np.ndarray:
        """Whether the user agent picks the wrong item of each pair (ties pick the first shown)."""
        chats = [render_template("agentcf_choice", **self._variables(self._pair_view(p))) for p in pairs]
        logp = self.backend.score_options(
            chats, [list(CHOICE_OPTIONS)] * len(chats), prefix=CHOICE_PREFIX, agent=self.account, mode="choice"
        )
        picked = np.argmax(np.stack(logp), axis=1)
        return picked != np.array([p.actual for p in pairs])

    def _reflect(self, pairs: list[Pair]) -> None:
        """Collaborative reflection on wrong choices: the user agents rewrite
        their taste first, then both items of each pair rewrite their notes
        given that corrected taste."""
        views = [self._pair_view(p) for p in pairs]
        prompt = self.config.prompt
        chats = [
            render_template(
                "agentcf_reflect_user",
                **self._variables(view),
                actual=p.actual,
                picked=1 - p.actual,
                rating=p.rating,
                max_words=prompt.max_words,
            )
            for p, view in zip(pairs, views)
        ]
        texts, _ = self._generate(chats, self.config.max_new_tokens_reflect, "reflect", prefix=USER_REFLECT_PREFIX)
        cap = 4 * self.config.memory.max_preference_chars  # the store enforces the real bound
        for p, view, text in zip(pairs, views, texts):
            memory = self.memory.get(p.user, view.profile)
            parsed = parse_reflection(text, max_chars=cap, fallback=memory.preference)
            self.counters.reflections += 1
            self.counters.reflect_format_failures += int(parsed.source == "fallback")
            self.memory.set_preference(p.user, parsed.preference)

        jobs = [(p, view, side) for p, view in zip(pairs, views) for side in (p.actual, 1 - p.actual)]
        for wave in _waves([p.items[side] for p, _, side in jobs]):
            self._reflect_items([jobs[j] for j in wave])

    def _reflect_items(self, jobs: list[tuple[Pair, AgentTextView, int]]) -> None:
        """One batch of item reflections (each item at most once, so no update is lost)."""
        chats = []
        for p, view, side in jobs:
            item = p.items[side]
            chats.append(
                render_template(
                    "agentcf_reflect_item",
                    item=view.candidates[side],
                    description=view.candidate_descriptions[side] if self.config.prompt.descriptions else "",
                    other=view.candidates[1 - side],
                    note=self._note(item),
                    chosen=side == p.actual,
                    rating=p.rating,
                    user_preference=self.memory.get(p.user).preference,
                    history=view.history[-self.cf.item_history :] if self.cf.item_history else [],
                    noun=self.config.prompt.noun,
                    max_words=self.cf.item_max_words,
                )
            )
        texts, _ = self._generate(chats, self.config.max_new_tokens_reflect, "reflect_item", prefix=ITEM_REFLECT_PREFIX)
        for (p, _, side), text in zip(jobs, texts):
            item = p.items[side]
            parsed = parse_reflection(text, max_chars=4 * self.cf.item_memory_chars, fallback=self._note(item))
            self.train.item_reflections += 1
            self.train.item_reflect_format_failures += int(parsed.source == "fallback")
            self.items.set_preference(item, parsed.preference)

    # -------------------------------------------------------------- prompts
    def _rank_prompt(self, view: AgentTextView, evidence: list[str] | None, mode: str):
        """The ranking prompt of both inference paths (scoring and generated)."""
        return render_template("agentcf_rank", evidence=evidence, prefix=get_format(mode).prefix, **self._variables(view))

    def _pair_view(self, pair: Pair) -> AgentTextView:
        return text_view(self.dataset, pair.user, pair.history, pair.history_ratings, np.asarray(pair.items))

    def _note(self, item: int) -> str:
        """An item's memory ("" until it first reflects)."""
        return self.items.get(item).preference if item in self.items else ""

    def _variables(self, view: AgentTextView) -> dict[str, Any]:
        """Template variables shared by the AgentCF prompts. A view without a
        user memory (e.g. a content-free calibration view) reads as empty."""
        prompt = self.config.prompt
        n = len(view.candidates)
        notes = [self._note(i) for i in view.candidate_items] if len(view.candidate_items) == n else [""] * n
        return {
            "view": view,
            "preference": self.memory.get(view.user).preference if view.user in self.memory else "",
            "history": list(view.history)[-prompt.max_history :] if prompt.max_history > 0 else [],
            "ids": candidate_ids(n),
            "notes": notes,
            "noun": prompt.noun,
        }

    # ------------------------------------------------------------ reporting
    def stats(self) -> dict:
        out = super().stats()
        out.update(asdict(self.train))
        items = self.items.stats()
        out.update(
            {
                "item_memories": items["memory_users"],
                "item_memory_updates": items["memory_updates"],
                "item_memory_truncations": items["memory_truncations"],
                "item_memory_mean_chars": items["memory_mean_chars"],
            }
        )
        return out


def _waves(keys: list[int]) -> list[list[int]]:
    """Split job indices into waves in which every key appears at most once,
    keeping order: the k-th job on an item goes to wave k (so an item that
    two users reflect on in one step sees the first update before the second)."""
    seen: Counter = Counter()
    waves: list[list[int]] = []
    for j, key in enumerate(keys):
        wave = seen[key]
        seen[key] += 1
        if wave == len(waves):
            waves.append([])
        waves[wave].append(j)
    return waves


@takes(LLMAgentConfig, AgentCFConfig)
def make_agentcf(ctx: PolicyContext) -> Policy:
    """AgentCF: user and item agents trained by collaborative reflection."""
    return AgentCF(ctx, LLMAgentConfig.from_options(ctx.options), AgentCFConfig.from_options(ctx.options))
