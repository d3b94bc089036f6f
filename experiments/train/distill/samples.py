"""Teacher tasks: ranking states and reflections as :class:`TeacherSample` s."""
from __future__ import annotations

from typing import Any, Sequence

from experiments.train.rollout import States, view_of
from policies.llm.evidence import EvidenceBuilder, render_lines
from policies.llm.teachers import TeacherSample


def teacher_samples(dataset: Any, evidence: EvidenceBuilder | None, states: States) -> list[TeacherSample]:
    """Ranking tasks for ``states`` (view, evidence lines with their signals
    when ``evidence`` is given, ``states.utilities`` as the oracle's truth, the
    positive as the filter's target); ``key`` is the row index."""
    table = evidence.table(states.batch) if evidence is not None else None
    lines = render_lines(table) if table is not None else None
    c = states.batch.candidates.shape[1]
    return [
        TeacherSample(
            view=view_of(dataset, states.batch, r),
            key=r,
            evidence=lines[r] if lines is not None else None,
            signals=[table.signals(r, j) for j in range(c)] if table is not None else None,
            utilities=states.utilities[r],
            target=int(states.target_pos[r]),
            user=int(states.batch.users[r]),
            items=tuple(int(i) for i in states.batch.candidates[r]),
        )
        for r in range(len(states))
    ]


def reflect_samples(samples: Sequence[TeacherSample], predicted: Sequence[Sequence[int]]) -> list[TeacherSample]:
    """Reflection samples: each ranking sample's ``predicted`` order (e.g. the
    student's or a teacher's) against the user's actual choice, the held-out
    target with its rating."""
    out = []
    for s, order in zip(samples, predicted):
        out.append(
            TeacherSample(
                view=s.view,
                key=s.key,
                memory=s.memory,
                utilities=s.utilities,
                predicted=tuple(int(c) for c in order),
                chosen=s.target,
                rating=s.rating,
                user=s.user,
                items=s.items,
            )
        )
    return out
