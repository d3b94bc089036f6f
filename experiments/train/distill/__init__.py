"""Distillation: turning a teacher's answers into the student's training data.

* :mod:`~experiments.train.distill.samples` - teacher tasks from ranking states;
* :mod:`~experiments.train.distill.filter` - the paper's trace filter;
* :mod:`~experiments.train.distill.loop` - ask, filter, rethink;
* :mod:`~experiments.train.distill.export` - kept traces as SFT judge rows;
* :mod:`~experiments.train.distill.policy` - the teacher as an evaluated policy.

The teachers themselves (and their clients) are :mod:`policies.llm.teachers`.
"""
