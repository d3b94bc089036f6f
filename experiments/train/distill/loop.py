"""The distillation loop: ask the teacher, filter, send flawed traces back.

Flawed traces go back to the teacher with targeted feedback ("rethink") up
to ``rethink`` times (the paper's augmentation); kept ones pair the
student's prompt with the teacher's final answer.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from experiments.config import DistillSection
from experiments.train.distill.filter import FilterConfig, TraceCheck, check_trace
from policies.llm.prompts import Messages, PromptConfig, render_rethink_prompt
from policies.llm.teachers import Rethink, Teacher, TeacherSample


@dataclass(frozen=True)
class DistillConfig:
    """Settings of :func:`distill`, named as in the ``[distill]`` section
    (``rethink``, ``min_ndcg`` in ``filter``): :meth:`from_section` copies them."""

    rethink: int = 2
    filter: FilterConfig = field(default_factory=FilterConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)

    @classmethod
    def from_section(cls, section: DistillSection) -> "DistillConfig":
        """The loop settings of a run's ``[distill]`` section."""
        return cls(rethink=section.rethink, filter=FilterConfig(min_ndcg=section.min_ndcg))


def rethink_for(check: TraceCheck, text: str, sample: TeacherSample, attempt: int = 1) -> Rethink:
    """Targeted feedback for a flawed trace."""
    ids = sample.ids
    missing: list[str] = []
    target_rank = None
    if check.parsed is not None:
        written = set(check.parsed.order[: check.parsed.n_valid])
        missing = [ids[i] for i in range(len(ids)) if i not in written]
        if sample.target is not None:
            target_rank = check.parsed.order.index(sample.target) + 1
    messages = render_rethink_prompt(
        check.problems,
        n_candidates=len(ids),
        missing=missing,
        target_id=ids[sample.target] if sample.target is not None else None,
        target_rank=target_rank,
    )
    return Rethink(check.problems, text, messages, sample.target, attempt)


# ------------------------------------------------------------------ distill
@dataclass(frozen=True)
class Trace:
    """A kept teacher trace: the student prompt and the teacher's answer."""

    sample: TeacherSample
    prompt: Messages
    completion: str
    attempts: int
    ndcg: float | None
    format_score: float


@dataclass
class DistillResult:
    traces: list[Trace]
    dropped: list[tuple[int, tuple[str, ...]]]
    stats: dict[str, Any]


def distill(teacher: Teacher, samples: Sequence[TeacherSample], config: DistillConfig | None = None) -> DistillResult:
    """Ask ``teacher`` for every sample, filter, and send flawed traces back
    with targeted feedback up to ``config.rethink`` times.

    Kept traces pair the *original* prompt (what the student will see) with
    the final answer. ``stats`` counts samples, kept (first try / after
    rethinking), dropped, and each problem seen.
    """
    config = config or DistillConfig()
    prompts = [s.prompt(config.prompt) for s in samples]
    rethinks: list[Rethink | None] = [None] * len(samples)
    pending = list(range(len(samples)))
    traces, dropped = [], []
    problems_seen: Counter[str] = Counter()
    for attempt in range(config.rethink + 1):
        if not pending:
            break
        chats = [_conversation(prompts[i], rethinks[i]) for i in pending]
        texts = teacher.generate([samples[i] for i in pending], chats, [rethinks[i] for i in pending])
        still = []
        for i, text in zip(pending, texts):
            check = check_trace(text, samples[i], config.filter)
            problems_seen.update(check.problems)
            if not check.problems:
                traces.append(Trace(samples[i], prompts[i], text, attempt + 1, check.ndcg, check.format_score))
            elif attempt < config.rethink:
                rethinks[i] = rethink_for(check, text, samples[i], attempt + 1)
                still.append(i)
            else:
                dropped.append((samples[i].key, check.problems))
        pending = still
    stats = {
        "samples": len(samples),
        "kept": len(traces),
        "kept_first_try": sum(t.attempts == 1 for t in traces),
        "kept_after_rethink": sum(t.attempts > 1 for t in traces),
        "dropped": len(dropped),
        "problems": dict(sorted(problems_seen.items())),
    }
    return DistillResult(traces, dropped, stats)


def _conversation(prompt: Messages, rethink: Rethink | None) -> Messages:
    if rethink is None:
        return list(prompt)
    return list(prompt) + [{"role": "assistant", "content": rethink.previous}] + list(rethink.messages)
