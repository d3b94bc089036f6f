"""The paper's distillation filter: which teacher traces are usable, and why not.

A trace is dropped for missing reasoning, a missing or incomplete ranking,
no preference keywords (:data:`PREFERENCE_WORDS` or a genre of the prompt)
or an NDCG of the held-out target below ``min_ndcg``; each problem is named
so that :mod:`experiments.train.distill.loop` can give targeted feedback.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from policies.llm.formats import THINK
from policies.llm.parsing import ParsedRanking, parse_ranking
from policies.llm.teachers import TeacherSample
from starec_env.metrics import ndcg_graded, ndcg_single

#: Words that show a trace talks about what the user likes (the paper's
#: "preference keywords"); the genres of the prompt count as well.
PREFERENCE_WORDS = ("like", "love", "enjoy", "prefer", "favo", "dislike", "avoid", "fan of", "taste", "interest")


@dataclass(frozen=True)
class FilterConfig:
    """The distillation filter. ``min_ndcg`` is NDCG@``ndcg_k`` of the held-out
    target (graded against true utilities when there is no target);
    ``full_ranking`` demands every candidate exactly once."""

    min_ndcg: float = 0.5
    ndcg_k: int = 10
    full_ranking: bool = True
    keywords: tuple[str, ...] = PREFERENCE_WORDS


@dataclass(frozen=True)
class TraceCheck:
    """Outcome of the filter on one trace."""

    problems: tuple[str, ...]
    ndcg: float | None
    format_score: float
    parsed: ParsedRanking | None = None


def has_preference_keywords(text: str, sample: TeacherSample, keywords: Sequence[str]) -> bool:
    """Whether ``text`` talks about the user's taste: a preference word or a
    genre that appears in the prompt."""
    low = text.lower()
    genres = {g.lower() for _t, gs, *_ in list(sample.view.history) + list(sample.view.candidates) for g in gs}
    return any(k in low for k in keywords) or any(g and g in low for g in genres)


def check_trace(text: str, sample: TeacherSample, config: FilterConfig) -> TraceCheck:
    """Apply the paper's filter to a think-first ranking; problems are named for targeted feedback."""
    problems = []
    parsed = parse_ranking(text, sample.ids, expect_think=THINK.expect_think)
    n = len(sample.ids)
    if not parsed.think:
        problems.append("missing_reasoning")
    if parsed.n_valid == 0 or (config.full_ranking and (parsed.n_valid < n or parsed.repairs["duplicate"])):
        problems.append("missing_ranking")
    if parsed.think and not has_preference_keywords(parsed.think, sample, config.keywords):
        problems.append("no_preference_keywords")
    ndcg = trace_ndcg(parsed, sample, config.ndcg_k)
    if ndcg is not None and ndcg < config.min_ndcg:
        problems.append("low_ndcg")
    return TraceCheck(tuple(problems), ndcg, parsed.format_score, parsed)


def trace_ndcg(parsed: ParsedRanking, sample: TeacherSample, k: int) -> float | None:
    """NDCG@k of a parsed ranking: of the target if known, else graded by
    true utilities, else None (nothing to judge against)."""
    scores = parsed.scores()[None, :]
    if sample.target is not None:
        rank = int(parsed.order.index(sample.target))
        return float(ndcg_single(np.array([rank]), k)[0])
    if sample.utilities is not None:
        return float(ndcg_graded(scores, np.asarray(sample.utilities)[None, :], k)[0])
    return None
