"""Does the fast ranking read the memory? The same trained agent, four notes.

After evaluation, the STARec row ranks one seed's evaluation users again
with, in the "Taste:" line of its judge prompts: its own note from the
warm-up walk, the note the oracle teacher would write after the same walk,
no note, and another evaluated user's own note. If the ranking ignored its
memory, all four would score alike; a ranking that reads it gains from the
teacher's note and loses from a stranger's. Results go to
``facts.memory_probe`` in config.json and the paper report.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from policies.llm.warmup import plan_walk
from starec_env.metrics import ndcg_single, rank_of
from starec_env.protocol import LeaveOneOut


def memory_probe(policy: Any, protocol: LeaveOneOut, notes: Any, users: int, row: str) -> dict:
    """NDCG@10 of ``policy`` (a fitted, reflecting judge agent) on the first
    ``users`` users of ``protocol`` under each kind of note. ``notes`` is the
    oracle's :class:`~policies.llm.notes.TasteNotes`."""
    rows = np.arange(min(users, len(protocol)))
    batch = protocol.batch.take(rows)
    own_scores = policy.score(batch)  # warms every user's memory, then ranks with it
    own = [policy.memory.get(int(u)).preference for u in batch.users]
    teacher = []
    for r, user in enumerate(batch.users):
        walk = plan_walk(protocol.dataset, int(user), batch.history[r], batch.history_ratings[r],
                         policy.config.warmup, policy.config.walk_seed)
        teacher.append(notes.note(int(user), [int(i) for c in walk.candidates for i in c]))
    stranger = own[1:] + own[:1]
    ndcg = {"own note (warm-up)": _ndcg(protocol, rows, own_scores)}
    for name, texts in (("oracle teacher's note", teacher), ("no note", [""] * len(rows)),
                        ("another user's note", stranger)):
        ndcg[name] = _ndcg(protocol, rows, policy.score_with_notes(batch, texts))
    return {"row": row, "users": int(len(rows)), "seed": int(protocol.seed), "ndcg@10": ndcg}


def _ndcg(protocol: LeaveOneOut, rows: np.ndarray, scores: np.ndarray) -> float:
    return float(ndcg_single(rank_of(scores, protocol.target_pos[rows]), 10).mean())
