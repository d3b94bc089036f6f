"""Training decisions drawn from the data: states, the RL memory bank, views.

A *state* is what one user agent faces at one decision: its history and a
candidate list, plus what only the simulator knows (true utilities, or
choice logits) and the positive the rewards score. :func:`protocol_states`
draws them from the training interactions exactly as the paper's protocol
draws held-out ones (a user's last positives among unseen negatives), with
the interactions evidence may be fitted on; :mod:`experiments.train.walks` turns
them into the rows the stages train on. :class:`MemoryBank` keeps, per
walk step, the note the policy wrote that earned the best memory reward, so
RL prompts of later steps carry the policy's own notes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from experiments.config import ProtocolSection
from starec_env.data.model import Dataset
from starec_env.protocol import sample_unseen
from starec_env.text import AgentTextView, text_view
from starec_env.types import PAD, RankingBatch


@dataclass
class States:
    """A batch of decisions with the simulator's truth attached."""

    batch: RankingBatch
    target_pos: np.ndarray
    utilities: np.ndarray
    target_rating: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.batch)

    def take(self, rows: np.ndarray) -> "States":
        rating = None if self.target_rating is None else self.target_rating[rows]
        return States(self.batch.take(rows), self.target_pos[rows], self.utilities[rows], rating)


@dataclass
class MemoryBank:
    """Notes written during RL, per key (e.g. user, decision and walk step): the
    best-rewarded completion of a group wins, so later steps continue from it."""

    memories: dict[str, str] = field(default_factory=dict)

    def get(self, key: Any) -> str:
        return self.memories.get(str(key), "")

    def record(self, keys: list, memories: list[str], rewards: list[float]) -> None:
        best: dict[str, tuple[float, str]] = {}
        for key, memory, reward in zip(map(str, keys), memories, rewards):
            if memory and (key not in best or reward > best[key][0]):
                best[key] = (reward, memory)
        self.memories.update({k: m for k, (_, m) in best.items()})


def view_of(dataset: Dataset, batch: RankingBatch, row: int) -> AgentTextView:
    """The LLM-readable view of one row (profile, history, candidates)."""
    keep = batch.history[row] != PAD
    return text_view(dataset, int(batch.users[row]), batch.history[row][keep], batch.history_ratings[row][keep], batch.candidates[row])


def protocol_states(
    dataset: Dataset, interactions: pd.DataFrame, users: np.ndarray, protocol: ProtocolSection, rng: np.random.Generator,
    per_user: int = 1,
) -> tuple[States, pd.DataFrame]:
    """Decisions drawn from *training* interactions exactly as the protocol
    draws its held-out ones, and the interactions the agents may learn from.

    A user's last ``per_user`` positives (rating above the threshold, each
    with an earlier interaction) are targets among ``protocol.negatives``
    items the user never touched, with what came before as the history.
    Returns the states (utilities left empty) and ``interactions`` without
    each chosen user's rows from their earliest target on - what evidence
    scorers must be fitted on, so that no target leaks into the evidence
    (an item-kNN fitted with the target row finds the target similar to
    the history). Users without such a positive are skipped.
    """
    user_arr = interactions["user"].to_numpy(np.int64)
    item_arr = interactions["item"].to_numpy(np.int64)
    rating_arr = interactions["rating"].to_numpy(np.float32)
    order = np.argsort(user_arr, kind="stable")
    starts = np.searchsorted(user_arr[order], users, side="left")
    ends = np.searchsorted(user_arr[order], users, side="right")
    h, c = protocol.history_len, protocol.negatives + 1
    rows_u, hist, rat, cands, tpos, trat = [], [], [], [], [], []
    cut = np.full(len(interactions), False)
    for u, lo, hi in zip(users, starts, ends):
        idx = order[lo:hi]
        ok = np.flatnonzero(rating_arr[idx] > protocol.positive_threshold)
        ok = ok[ok >= 1][-per_user:]
        if not len(ok):
            continue
        cut[idx[ok[0] :]] = True
        seen = dataset.item_arr[dataset.user_offsets[u] : dataset.user_offsets[u + 1]]
        for t in ok:
            past = idx[max(0, t - h) : t]
            hrow = np.full(h, PAD, dtype=np.int64)
            rrow = np.zeros(h, dtype=np.float32)
            hrow[h - len(past) :] = item_arr[past]
            rrow[h - len(past) :] = rating_arr[past]
            negatives = sample_unseen(rng, dataset.n_items, seen, protocol.negatives)
            pos = int(rng.integers(c))
            rows_u.append(int(u))
            hist.append(hrow)
            rat.append(rrow)
            cands.append(np.insert(negatives, pos, item_arr[idx[t]]))
            tpos.append(pos)
            trat.append(rating_arr[idx[t]])
    if not rows_u:
        raise ValueError("no training user has a positive with an earlier interaction: cannot build training decisions")
    batch = RankingBatch(np.array(rows_u), np.stack(cands), np.stack(hist), np.stack(rat))
    states = States(batch, np.array(tpos), np.zeros(batch.candidates.shape), np.array(trat, dtype=np.float64))
    return states, interactions[~cut].reset_index(drop=True)
