"""The registry of LLM answer formats: what the model is asked to write back.

One entry per format says everything the layers need to know about it: the
template that asks for it, the prefix a forced answer starts with, how the
answer is parsed, which reward terms score it, and which ``[model] ranking``
method generates it. A format's ``name`` is used unchanged everywhere: as the
render mode of :func:`policies.llm.prompts.render_rank_prompt`, the ``mode``
column of training rows (:mod:`reward.ranking`), the teacher's task kind
(:mod:`policies.llm.teachers`) and the cost label of the backend's accounting
(``<name>_calls``, ``<name>_seconds``, ...). Prompts, parsers, agents,
rewards and the config read formats from here, so a new format is one
:func:`register` call (or entry below), its template and its golden test.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: The line a ranking answer starts with ("Ranking: C > A > ..."): the fast
#: format's forced prefix, and the line the ranking parser looks for in any answer.
RANKING_PREFIX = "Ranking:"

#: Ranking methods that score candidates rather than generate a format:
#: judgement slots, the first identifier's likelihood after the fast format's
#: prefix, and judgement slots with think-first ranking where unsure.
SCORING_RANKINGS = ("judge", "score", "adaptive")


@dataclass(frozen=True)
class AnswerFormat:
    """One answer format.

    ``template``: ``templates/<template>.j2`` (a ranking template asks for
    the answer's ``prefix``, a variable it is rendered with). ``parser``: "ranking"
    (:func:`policies.llm.parsing.parse_ranking`) or "reflection"
    (:func:`policies.llm.parsing.parse_reflection`); ``expect_think``: the
    answer reasons inside ``<think>`` first (parsed with ``expect_think`` and
    generated with the long token budget). ``prefix``: forced at the start of
    the answer, the scoring path reading the next token ("" = free answer).
    ``rewards``: names of the reward terms (:mod:`reward.ranking`,
    :mod:`reward.shaping`) that score it. ``compact``: the prompt may take the
    compact layout (``[prompt] fast_layout``). ``ranking``: the ``[model]
    ranking`` value that ranks by generating this format (None: none does).
    """

    name: str
    template: str
    parser: Literal["ranking", "reflection"]
    expect_think: bool = False
    prefix: str = ""
    rewards: tuple[str, ...] = ()
    compact: bool = False
    ranking: str | None = None


RANKING_REWARDS = ("rank_tier", "ndcg", "click_rating", "format")

FAST = AnswerFormat("fast", "rank_fast", "ranking", prefix=RANKING_PREFIX, rewards=RANKING_REWARDS, compact=True,
                    ranking="generate")
THINK = AnswerFormat("think", "rank_think", "ranking", expect_think=True, rewards=RANKING_REWARDS, ranking="think")
REFLECT = AnswerFormat("reflect", "reflect", "reflection", expect_think=True, rewards=("format", "memory"))

FORMATS: dict[str, AnswerFormat] = {f.name: f for f in (FAST, THINK, REFLECT)}


def register(fmt: AnswerFormat) -> AnswerFormat:
    """Add ``fmt`` to the registry; its name and ranking method must be new."""
    taken = set(rankings())
    if fmt.name in FORMATS or (fmt.ranking is not None and fmt.ranking in taken):
        raise ValueError(f"answer format {fmt.name!r} (ranking {fmt.ranking!r}) clashes with a registered one")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> AnswerFormat:
    """The format called ``name``; a ValueError names every known format."""
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown answer format (mode) {name!r}; known formats: {', '.join(FORMATS)}") from None


def rankings() -> tuple[str, ...]:
    """Every ``[model] ranking`` value: the scoring methods, then each format's generating one."""
    return SCORING_RANKINGS + tuple(f.ranking for f in FORMATS.values() if f.ranking is not None)


def generated_format(ranking: str) -> AnswerFormat:
    """The format that the generated ``ranking`` method writes."""
    for fmt in FORMATS.values():
        if fmt.ranking == ranking:
            return fmt
    generated = tuple(f.ranking for f in FORMATS.values() if f.ranking is not None)
    raise ValueError(f"ranking {ranking!r} generates no answer format; generated rankings: {generated}")


def rewarded_by(mode: str, reward: str) -> bool:
    """Whether the reward term called ``reward`` scores answers in format ``mode``."""
    return reward in get_format(mode).rewards
