"""The distillation teacher as an evaluated policy (the ``teacher`` row)."""
from __future__ import annotations

import numpy as np

from experiments.config import RunConfig
from experiments.train.distill.samples import teacher_samples
from experiments.train.rollout import States
from policies.base import Policy, PolicyContext
from policies.llm.evidence import EvidenceBuilder, EvidenceConfig
from policies.llm.formats import THINK
from policies.llm.parsing import parse_ranking
from policies.llm.teachers import Teacher, make_teacher
from starec_env.types import RankingBatch, TrainSplit


class TeacherPolicy(Policy):
    """What the teacher teaches the student, as a ranking. The oracle teaches
    the simulator's choice distribution, so it ranks by the choice logits (an
    upper bound); an LLM teacher answers the think-first ranking prompt and
    its parsed order is the ranking."""

    def __init__(self, ctx: PolicyContext, cfg: RunConfig) -> None:
        self.name = "teacher"
        self.upper_bound = cfg.distill.teacher == "oracle"
        self.ctx = ctx
        self.cfg = cfg
        self.evidence = EvidenceBuilder(ctx, EvidenceConfig(enabled=cfg.prompt.evidence))
        self.teacher: Teacher | None = None
        self.calls = 0

    def fit(self, split: TrainSplit) -> None:
        self.evidence.fit(split)

    def score(self, batch: RankingBatch) -> np.ndarray:
        choice = np.asarray(self.ctx.simulator.choice_logit(batch.users, batch.candidates), dtype=np.float64)
        self.calls += len(batch)
        if self.cfg.distill.teacher == "oracle":
            return choice
        self.teacher = self.teacher or make_teacher(self.cfg.distill.teacher, seed=self.ctx.seed)
        samples = teacher_samples(self.ctx.dataset, self.evidence if self.cfg.prompt.evidence else None,
                                  States(batch, choice.argmax(axis=1), choice))
        chats = [s.prompt() for s in samples]
        texts = self.teacher.generate(samples, chats, [None] * len(samples))
        return np.stack([parse_ranking(t, s.ids, expect_think=THINK.expect_think).scores() for t, s in zip(texts, samples)])

    def stats(self) -> dict:
        return {"teacher": self.cfg.distill.teacher, "teacher_calls": self.calls}
