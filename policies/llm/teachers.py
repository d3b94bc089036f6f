"""Teachers: what answers a distillation task, behind one interface (:class:`Teacher`).

* :class:`OracleTeacher` - privileged and offline. It ranks by the
  simulator's true utilities but writes rationales that cite only evidence
  visible in the prompt (liked/disliked genres from the rated history, the
  evidence lines), in the wording of :mod:`policies.llm.notes`.
* :class:`LLMTeacher` - any chat model behind a client of
  :mod:`policies.llm.clients` (an OpenAI-compatible endpoint or a local
  transformers model).

:func:`make_teacher` builds one by name. What is done with the answers
(filter, rethinks, training rows) is :mod:`experiments.train.distill`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from policies.llm.clients import ChatFn, HTTPChatBackend, LocalChatBackend, TeacherError
from policies.llm.evidence import Signal
from policies.llm.formats import THINK
from policies.llm.notes import Picker, join_words, phrases, rng_choice
from policies.llm.prompts import (
    Messages,
    PromptConfig,
    TextView,
    candidate_ids,
    render_rank_prompt,
)


# ------------------------------------------------------------------ tasks
@dataclass(frozen=True)
class TeacherSample:
    """One task for a teacher: a think-first ranking.

    ``view`` + ``memory`` (+ ``evidence`` lines and their structured
    ``signals`` per candidate). ``utilities`` (C,) are the
    simulator's true utilities (privileged: only the oracle reads them);
    ``target`` is the held-out positive's candidate index for the NDCG filter.
    ``key`` identifies the sample (seeds the oracle's wording).
    """

    view: TextView
    key: int
    memory: str = ""
    evidence: list[str] | None = None
    signals: list[list[Signal]] | None = None
    utilities: np.ndarray | None = None
    target: int | None = None
    user: int = -1
    items: tuple[int, ...] = ()

    @property
    def ids(self) -> list[str]:
        return candidate_ids(len(self.view.candidates))

    def prompt(self, config: PromptConfig | None = None) -> Messages:
        """The student-facing prompt of this sample (what the SFT data pairs with the answer)."""
        return render_rank_prompt(self.view, self.memory, mode=THINK.name, evidence=self.evidence, config=config)


@dataclass(frozen=True)
class Rethink:
    """Feedback on a flawed trace: what went wrong and the previous answer."""

    problems: tuple[str, ...]
    previous: str
    messages: Messages
    target: int | None = None
    attempt: int = 1


class Teacher(Protocol):
    def generate(
        self, samples: Sequence[TeacherSample], chats: Sequence[Messages], rethinks: Sequence[Rethink | None]
    ) -> list[str]:
        """One completion per sample; ``chats`` are the full conversations
        (prompt, plus previous answer and feedback when rethinking)."""
        ...


# ------------------------------------------------------------- visible taste
def genre_taste(history: Sequence[tuple], max_genres: int = 3, center: float = 3.0) -> tuple[list[str], list[str]]:
    """Liked and disliked genres from a rated history (visible evidence only).

    A genre's weight is the sum of ``rating - center`` over history items
    carrying it; liked = strongest positive weights, disliked = strongest
    negative ones (ties broken by name for determinism).
    """
    weight: Counter[str] = Counter()
    for _title, genres, _year, rating in history:
        for g in genres:
            weight[g] += float(rating) - center
    ranked = sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))
    liked = [g for g, w in ranked if w > 0][:max_genres]
    disliked = [g for g, w in sorted(weight.items(), key=lambda kv: (kv[1], kv[0])) if w < 0][:max_genres]
    return liked, disliked


# ------------------------------------------------------------- oracle teacher
class OracleTeacher:
    """Privileged teacher: true-utility rankings, visible-evidence rationales.

    ``noise`` (std, in utility units) perturbs the ranking for diversity;
    0 keeps it exactly consistent with the true utilities. On a rethink whose
    problem is a low NDCG, the user's actual choice (revealed by the feedback)
    is promoted to the top, as an LLM teacher told its error would do.
    """

    def __init__(self, seed: int = 0, noise: float = 0.0, noun: str = "movie") -> None:
        self.seed = seed
        self.noise = noise
        self.noun = noun

    def _rng(self, sample: TeacherSample, attempt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(sample.key) & 0x7FFFFFFF, attempt])

    def generate(
        self, samples: Sequence[TeacherSample], chats: Sequence[Messages], rethinks: Sequence[Rethink | None]
    ) -> list[str]:
        return [self.rank(s, self._rng(s, 0 if r is None else r.attempt), r) for s, r in zip(samples, rethinks)]

    def order(self, sample: TeacherSample, rng: np.random.Generator, rethink: Rethink | None = None) -> list[int]:
        if sample.utilities is None:
            raise TeacherError(f"the oracle teacher needs true utilities; sample {sample.key} has none")
        util = np.asarray(sample.utilities, dtype=np.float64).copy()
        if self.noise > 0:
            util += rng.normal(0.0, self.noise, size=util.shape)
        if rethink is not None and "low_ndcg" in rethink.problems and rethink.target is not None:
            util[rethink.target] = util.max() + 1.0
        return [int(i) for i in np.argsort(-util, kind="stable")]

    def rank(self, sample: TeacherSample, rng: np.random.Generator, rethink: Rethink | None = None) -> str:
        order = self.order(sample, rng, rethink)
        view, ids, bank = sample.view, sample.ids, phrases()
        liked, disliked = genre_taste(view.history)
        pick = Picker(rng, self.noun)
        think = []
        if sample.memory:
            think.append(pick(bank["think"]["memory"], memory=" ".join(sample.memory.split()[:30])))
        if liked:
            think.append(pick(bank["think"]["liked"], liked=join_words(liked)))
        if disliked:
            think.append(pick(bank["think"]["disliked"], disliked=join_words(disliked)))
        if not liked and not disliked:
            think.append(pick(bank["think"]["no_genre"]))
        n = len(order)
        upper = (n + 1) // 2  # positions argued for with positive evidence
        reasons = [self._reason(sample, c, pos < upper, liked, disliked, pick) for pos, c in enumerate(order)]
        cited = [("top", 0)] + [("runner_up", pos) for pos in range(1, min(3, upper))] + ([("bottom", n - 1)] if n > 1 else [])
        for phrase, pos in cited:
            c = order[pos]
            think.append(pick(bank["think"][phrase], id=ids[c], title=view.candidates[c][0], why=reasons[pos]))
        lines = [f"{pos + 1}. [{ids[c]}] - {reasons[pos][0].upper() + reasons[pos][1:]}" for pos, c in enumerate(order)]
        return "<think>\n" + " ".join(think) + "\n</think>\n" + "\n".join(lines)

    def _reason(
        self, sample: TeacherSample, cand: int, upper: bool, liked: list[str], disliked: list[str], pick: "Picker"
    ) -> str:
        """A brief reason for ``cand`` citing visible evidence that agrees with
        its place: positive facts in the upper half, negative ones below."""
        bank = phrases()["reason"]
        genres = sample.view.candidates[cand][1]
        levels = {s.name: s.level for s in (sample.signals[cand] if sample.signals else [])}
        options: list[str] = []
        if upper:
            options += [pick(bank["liked_genre"], genre=g) for g in genres if g in liked]
            options += [pick(bank["popular"])] if levels.get("pop") == "high" else []
            options += [pick(bank["similar"])] if levels.get("itemknn") == "high" else []
            options += [pick(bank["genre_evidence"])] if levels.get("genre") == "high" else []
            fallback = bank["neutral"]
        else:
            options += [pick(bank["disliked_genre"], genre=g) for g in genres if g in disliked]
            options += [pick(bank["unpopular"])] if levels.get("pop") in ("low", "none") else []
            options += [pick(bank["dissimilar"])] if levels.get("itemknn") in ("low", "none") else []
            fallback = bank["weaker"]
        if not options:
            return pick(fallback)
        chosen = rng_choice(pick.rng, options, k=min(2, len(options)))
        return " and ".join(chosen)


class LLMTeacher:
    """A teacher that is any chat model: ``chat`` maps conversations to replies
    (:class:`HTTPChatBackend`, :class:`LocalChatBackend` or your own)."""

    def __init__(self, chat: ChatFn) -> None:
        self.chat = chat

    def generate(
        self, samples: Sequence[TeacherSample], chats: Sequence[Messages], rethinks: Sequence[Rethink | None]
    ) -> list[str]:
        replies = self.chat(list(chats))
        if len(replies) != len(chats):
            raise TeacherError(f"teacher returned {len(replies)} replies for {len(chats)} prompts")
        return replies


def make_teacher(spec: str, *, seed: int = 0, **kwargs: Any) -> Teacher:
    """A teacher by name: ``oracle``, ``http`` (endpoint from the environment)
    or ``local:<model name>`` (e.g. ``local:smollm2-135m``)."""
    if spec == "oracle":
        return OracleTeacher(seed=seed, **kwargs)
    if spec == "http":
        return LLMTeacher(HTTPChatBackend.from_env(**kwargs))
    if spec.startswith("local:"):
        return LLMTeacher(LocalChatBackend(spec.split(":", 1)[1], seed=seed, **kwargs))
    raise ValueError(f"unknown teacher {spec!r}: expected 'oracle', 'http' or 'local:<model>'")
