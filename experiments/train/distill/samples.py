"""Teacher tasks: ranking states as :class:`TeacherSample` s."""
from __future__ import annotations

from experiments.train.rollout import States, view_of
from policies.llm.evidence import EvidenceBuilder, render_lines
from policies.llm.teachers import TeacherSample
from starec_env.data.model import Dataset


def teacher_samples(dataset: Dataset, evidence: EvidenceBuilder | None, states: States) -> list[TeacherSample]:
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

