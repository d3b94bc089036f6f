"""Kept teacher traces as SFT rows: the judge rows of the decisions they rank.

The oracle's targets are the simulator's choice distribution, already in
every judge row; an LLM teacher's parsed order replaces them
(:func:`policies.llm.judge.order_targets`), and a decision whose trace the
filter dropped gives no row.
"""
from __future__ import annotations

from experiments.config import RunConfig
from experiments.train.distill.loop import DistillConfig, distill
from experiments.train.distill.samples import teacher_samples
from experiments.train.rollout import States
from experiments.train.walks import Decisions, RowBuilder
from policies.llm.formats import THINK
from policies.llm.judge import HistoryMode, order_targets
from policies.llm.parsing import parse_ranking
from policies.llm.teachers import make_teacher


def teacher_judge_rows(cfg: RunConfig, builder: RowBuilder, decisions: Decisions,
                       modes: list[HistoryMode]) -> tuple[list[dict], dict]:
    """Judge rows (one per decision, in ``modes``) with the teacher of
    ``cfg.distill`` targets, and the teacher's statistics: an LLM teacher
    ranks each decision's think-first prompt through :func:`distill`."""
    rows = builder.judge_rows(decisions, modes)
    if cfg.distill.teacher == "oracle":
        return rows, {"source": "choice distribution of the simulator", "rows": len(rows)}
    teacher = make_teacher(cfg.distill.teacher, seed=cfg.data.seed)
    states = States(decisions.batch, decisions.target_pos, decisions.choice)
    samples = teacher_samples(builder.dataset, decisions.evidence, states)
    ranked = distill(teacher, samples, DistillConfig.from_section(cfg.distill))
    kept = []
    for trace in ranked.traces:
        row = dict(rows[trace.sample.key])
        order = parse_ranking(trace.completion, trace.sample.ids, expect_think=THINK.expect_think).order
        row["targets"] = [float(t) for t in order_targets(order, len(order))]
        kept.append(row)
    return kept, ranked.stats
