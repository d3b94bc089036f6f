"""Prompts for RL drawn from the simulation: ranking states -> TRL rows.

A *state* is what one user agent faces at one decision: its history and a
candidate list, plus what only the simulator knows (the true utility of each
candidate) and the positive used by the rank-tier reward. States come from

* ``offline``: the training interactions under the paper's protocol (a past
  positive of a user among unseen negatives, the history before it), or
* ``online``: the live :class:`~starec_env.batched.BatchedEnv`, stepped by a
  behaviour policy whose slates the simulated users click and rate (users
  consume, tire and leave, so the states change as the loop runs); the
  positive is the candidate the user truly prefers most.

Fast rows ask for a ranking. Slow rows ask for the memory update after a
decision (own prediction vs. what the user did); their ``candidate_ids`` /
``target`` / ``utilities`` describe the *follow-up* decision on which the
rewritten description is scored (:class:`reward.shaping.MemoryAlignmentReward`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np

from experiments.train.config import TrainConfig
from policies.llm.prompts import PromptConfig, candidate_ids, render_rank_prompt, render_reflect_prompt
from starec_env.types import PAD, RankingBatch

#: Where a scoring ranker reads the answer (the fast template asks for this line).
RANK_PREFIX = "Ranking:"


@dataclass
class States:
    """A batch of decisions with the simulator's truth attached."""

    batch: RankingBatch
    target_pos: np.ndarray
    utilities: np.ndarray

    def __len__(self) -> int:
        return len(self.batch)


def view_of(dataset: Any, batch: RankingBatch, row: int) -> Any:
    """The LLM-readable view of one row (profile, history, candidates)."""
    from starec_env.text import text_view

    keep = batch.history[row] != PAD
    return text_view(dataset, int(batch.users[row]), batch.history[row][keep], batch.history_ratings[row][keep], batch.candidates[row])


def view_to_json(view: Any) -> dict:
    return {"profile": dict(view.profile), "history": [list(h) for h in view.history], "candidates": [list(c) for c in view.candidates]}


def view_from_json(data: dict) -> Any:
    """A view object the prompt renderers accept (they only read these three fields)."""
    return SimpleNamespace(profile=data["profile"], history=[tuple(h) for h in data["history"]], candidates=[tuple(c) for c in data["candidates"]])


def with_truth(simulator: Any, batch: RankingBatch) -> States:
    """Attach true utilities; the positive is the candidate the user prefers most."""
    util = np.asarray(simulator.utility(batch.users, batch.candidates), dtype=np.float64)
    return States(batch, util.argmax(axis=1), util)


class PromptRenderer:
    """Renders states into TRL rows (``prompt`` chat messages + reward columns)."""

    def __init__(self, dataset: Any, cfg: TrainConfig, evidence: Any = None) -> None:
        self.dataset = dataset
        self.prompt_cfg = PromptConfig(max_history=cfg.prompt.max_history, max_words=cfg.prompt.max_words)
        self.evidence = evidence  # policies.llm.evidence.EvidenceBuilder or None

    def evidence_lines(self, batch: RankingBatch) -> list | None:
        return self.evidence.lines(batch) if self.evidence is not None else None

    def rank_prompt(self, view: Any, memory: str, evidence: list[str] | None, mode: str = "fast") -> list[dict]:
        return render_rank_prompt(view, memory, mode=mode, evidence=evidence, config=self.prompt_cfg)

    def fast_rows(self, states: States, memories: list[str]) -> list[dict]:
        lines = self.evidence_lines(states.batch)
        rows = []
        for r in range(len(states)):
            view = view_of(self.dataset, states.batch, r)
            ev = lines[r] if lines is not None else None
            rows.append(
                {
                    "prompt": self.rank_prompt(view, memories[r], ev),
                    "mode": "fast",
                    **self._columns(states, r),
                    "state": "",
                }
            )
        return rows

    def slow_rows(
        self,
        before: States,
        predicted: np.ndarray,
        chosen: np.ndarray,
        ratings: np.ndarray,
        after: States,
        memories: list[str],
    ) -> list[dict]:
        """Memory-update rows: decision ``before`` (the agent's ``predicted``
        order, the user's ``chosen`` candidate or -1, its rating), scored on
        the same user's next decision ``after``."""
        lines = self.evidence_lines(after.batch)
        rows = []
        for r in range(len(before)):
            view = view_of(self.dataset, before.batch, r)
            pick = int(chosen[r])
            prompt = render_reflect_prompt(
                view,
                memories[r],
                predicted=[int(i) for i in predicted[r]],
                chosen=pick if pick >= 0 else None,
                rating=float(ratings[r]) if pick >= 0 else None,
                config=self.prompt_cfg,
            )
            follow = {"view": view_to_json(view_of(self.dataset, after.batch, r)), "evidence": lines[r] if lines is not None else None}
            rows.append({"prompt": prompt, "mode": "slow", **self._columns(after, r), "state": json.dumps(follow)})
        return rows

    @staticmethod
    def _columns(states: States, r: int) -> dict:
        c = states.batch.candidates.shape[1]
        return {
            "candidate_ids": candidate_ids(c),
            "target": int(states.target_pos[r]),
            "utilities": [float(u) for u in states.utilities[r]],
            "user": int(states.batch.users[r]),
            "items": [int(i) for i in states.batch.candidates[r]],
        }


def offline_states(dataset: Any, simulator: Any, interactions: Any, users: np.ndarray, cfg: TrainConfig, rng: np.random.Generator) -> States:
    """One protocol-style decision per user from their *training* interactions.

    A random positive (rating above the threshold, with at least one earlier
    interaction) is the target among ``n_negatives`` items the user never
    touched; the history is what came before it. Users without such a
    positive are skipped.
    """
    from starec_env.protocol import _sample_unseen

    d = cfg.data
    user_arr = interactions["user"].to_numpy(np.int64)
    item_arr = interactions["item"].to_numpy(np.int64)
    rating_arr = interactions["rating"].to_numpy(np.float32)
    order = np.argsort(user_arr, kind="stable")
    starts = np.searchsorted(user_arr[order], users, side="left")
    ends = np.searchsorted(user_arr[order], users, side="right")
    h, c = d.history_len, d.n_negatives + 1
    rows_u, hist, rat, cands, tpos = [], [], [], [], []
    for u, lo, hi in zip(users, starts, ends):
        idx = order[lo:hi]
        ok = np.flatnonzero(rating_arr[idx] > d.positive_threshold)
        ok = ok[ok >= 1]
        if not len(ok):
            continue
        t = int(rng.choice(ok))
        past = idx[max(0, t - h) : t]
        hrow = np.full(h, PAD, dtype=np.int64)
        rrow = np.zeros(h, dtype=np.float32)
        hrow[h - len(past) :] = item_arr[past]
        rrow[h - len(past) :] = rating_arr[past]
        negatives = _sample_unseen(rng, dataset.n_items, item_arr[idx], d.n_negatives)
        pos = int(rng.integers(c))
        rows_u.append(int(u))
        hist.append(hrow)
        rat.append(rrow)
        cands.append(np.insert(negatives, pos, item_arr[idx[t]]))
        tpos.append(pos)
    if not rows_u:
        raise ValueError("no training user has a positive with an earlier interaction: cannot build training states")
    batch = RankingBatch(np.array(rows_u), np.stack(cands), np.stack(hist), np.stack(rat))
    util = np.asarray(simulator.utility(batch.users, batch.candidates), dtype=np.float64)
    return States(batch, np.array(tpos), util)


def online_transitions(env: Any, behaviour: Any, seed: int) -> Iterator[tuple[States, np.ndarray, Any, States]]:
    """Step the live env with ``behaviour``; yield (before, predicted orders, feedback, after).

    ``before``/``after`` hold the users alive at both steps, aligned row by
    row; ``predicted`` is the behaviour policy's order of ``before``'s
    candidates; the feedback says what each of those users clicked and rated.
    Episodes restart (with a new seed) when every user has left.
    """
    episode = 0
    while True:
        batch = env.reset(seed=seed + episode)
        alive = np.ones(len(batch), dtype=bool)
        while alive.any():
            rows = np.flatnonzero(alive)
            shown = batch.take(rows)
            scores = np.zeros(batch.candidates.shape, dtype=np.float64)
            scores[rows] = behaviour.score(shown)
            result = env.step(scores)
            next_alive = np.asarray(result.alive, dtype=bool)
            keep = rows[next_alive[rows]]
            if len(keep):
                before = with_truth(env.simulator, batch.take(keep))
                after = with_truth(env.simulator, result.batch.take(keep))
                predicted = np.argsort(-scores[keep], axis=1, kind="stable")
                yield before, predicted, _feedback_rows(result.feedback, keep, batch.candidates[keep]), after
            behaviour.observe(shown, _feedback_take(result.feedback, rows))
            batch, alive = result.batch, next_alive
        episode += 1


def _feedback_take(fb: Any, rows: np.ndarray) -> Any:
    from dataclasses import fields

    return type(fb)(**{f.name: np.asarray(getattr(fb, f.name))[rows] for f in fields(fb)})


def _feedback_rows(fb: Any, rows: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(chosen candidate position or -1, rating) for the given env rows."""
    clicked = np.asarray(fb.clicked)[rows]
    rating = np.asarray(fb.rating, dtype=np.float64)[rows]
    chosen = np.full(len(rows), -1, dtype=np.int64)
    for i, item in enumerate(clicked):
        if item >= 0:
            hit = np.flatnonzero(candidates[i] == item)
            chosen[i] = int(hit[0]) if len(hit) else -1
    return chosen, rating
