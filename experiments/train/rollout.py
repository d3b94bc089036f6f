"""Training prompts drawn from the simulation: decisions -> TRL rows.

Formats (one decision, used identically by distillation, RL and evaluation)
---------------------------------------------------------------------------
Every row has a ``mode`` column naming its answer format:

* ``think`` - the paper's ranking: ``<think>...</think>`` then the ranked
  list with a brief reason each (template ``rank_slow``);
* ``fast`` - the same ranking as one bare ``Ranking: C > A > ...`` line
  (template ``rank_fast``); it is what the cheap inference paths read: the
  no-generation scoring path scores the first identifier after ``Ranking:``;
* ``reflect`` - slow thinking: the memory update after feedback
  (``<think>`` analysis, then ``<preference>...</preference>``).

SFT (teacher traces) and GRPO (live simulator prompts) train the *same*
three formats, so the student never meets a format at evaluation that only
one stage taught it; the shares are ``[distill]``/``[rl]``
``fast_fraction`` and ``reflect_fraction`` (in RL the rest are ``think``
rows; in distillation ``think_fraction`` of the teacher's think-first
traces are kept, the long ones that cost most to train on a CPU).
Evaluation ranks with the cheap forms (``[model] ranking = "score"``), and
reflects in the online sessions.

States
------
A *state* is what one user agent faces at one decision: its history and a
candidate list, plus what only the simulator knows (true utilities) and the
positive used by the rank-tier reward. States come from the training
interactions under the paper's protocol (``offline``: a past positive among
unseen negatives) or from the live :class:`~starec_env.batched.BatchedEnv`
stepped by a behaviour policy (``online``; users consume, tire and leave).
Reflect rows' ``candidate_ids`` / ``target`` / ``utilities`` describe the
user's *follow-up* decision, on which the rewritten description is scored
(:class:`reward.shaping.MemoryAlignmentReward`). Preference descriptions
that earned the best memory reward are kept per user in a
:class:`MemoryBank` and shown in that user's later prompts, so RL prompts
carry the memories the policy itself wrote.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np

from experiments.config import ProtocolSection, RunConfig
from experiments.evaluate import play
from policies.llm.prompts import PromptConfig, candidate_ids, render_rank_prompt, render_reflect_prompt
from starec_env.protocol import sample_unseen
from starec_env.types import PAD, RankingBatch

#: Where a scoring ranker reads the answer (the fast template asks for this line).
RANK_PREFIX = "Ranking:"


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
    """Per-user preference descriptions written during RL (best memory reward wins)."""

    memories: dict[int, str] = field(default_factory=dict)

    def get(self, user: int) -> str:
        return self.memories.get(int(user), "")

    def record(self, users: list[int], memories: list[str], rewards: list[float]) -> None:
        best: dict[int, tuple[float, str]] = {}
        for user, memory, reward in zip(users, memories, rewards):
            if memory and (int(user) not in best or reward > best[int(user)][0]):
                best[int(user)] = (reward, memory)
        self.memories.update({u: m for u, (_, m) in best.items()})


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


def simulator_responder(simulator: Any):
    """The simulated user's answer to a slate, for :class:`reward.ranking.FeedbackReward`.

    ``respond(users (B,), slates (B, S) item indices, rng) -> (clicked slate
    position or -1, rating)``: the simulator's click model (multinomial logit
    with no-click option and position bias) and rating model, on the
    state-free true utilities of the decision being trained.
    """

    def respond(users: np.ndarray, slates: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        util = np.asarray(simulator.utility(users, slates), dtype=np.float32)
        slot = simulator.response.choose(simulator.response.click_logits(util, slates), rng)
        hit = slot < slates.shape[1]
        picked = util[np.arange(len(users)), np.minimum(slot, slates.shape[1] - 1)]
        rating = simulator.response.rate(picked, rng)
        return np.where(hit, slot, -1), np.where(hit, rating, 0.0)

    return respond


class PromptRenderer:
    """Renders states into TRL rows (``prompt`` chat messages + reward columns)."""

    def __init__(self, dataset: Any, cfg: RunConfig, evidence: Any = None) -> None:
        self.dataset = dataset
        self.prompt_cfg = PromptConfig(max_history=cfg.prompt.max_history, max_words=cfg.prompt.max_words)
        self.evidence = evidence  # policies.llm.evidence.EvidenceBuilder or None

    def evidence_lines(self, batch: RankingBatch) -> list | None:
        return self.evidence.lines(batch) if self.evidence is not None else None

    def rank_prompt(self, view: Any, memory: str, evidence: list[str] | None, mode: str = "fast") -> list[dict]:
        return render_rank_prompt(view, memory, mode="slow" if mode == "think" else "fast", evidence=evidence, config=self.prompt_cfg)

    def rank_rows(self, states: States, memories: list[str], modes: list[str]) -> list[dict]:
        """Ranking rows; ``modes[r]`` is "fast" or "think"."""
        lines = self.evidence_lines(states.batch)
        rows = []
        for r in range(len(states)):
            view = view_of(self.dataset, states.batch, r)
            prompt = self.rank_prompt(view, memories[r], lines[r] if lines is not None else None, modes[r])
            rows.append({"prompt": prompt, "mode": modes[r], **_columns(states, r), "state": ""})
        return rows

    def reflect_rows(
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
            rows.append({"prompt": prompt, "mode": "reflect", **_columns(after, r), "state": json.dumps(follow)})
        return rows


def _columns(states: States, r: int) -> dict:
    """The reward columns of one row (see :mod:`reward.ranking`)."""
    c = states.batch.candidates.shape[1]
    return {
        "candidate_ids": candidate_ids(c),
        "target": int(states.target_pos[r]),
        "utilities": [float(u) for u in states.utilities[r]],
        "user": int(states.batch.users[r]),
        "items": [int(i) for i in states.batch.candidates[r]],
    }


def offline_states(
    dataset: Any, simulator: Any, interactions: Any, users: np.ndarray, protocol: ProtocolSection, rng: np.random.Generator
) -> States:
    """One protocol-style decision per user from their *training* interactions.

    A random positive (rating above the threshold, with at least one earlier
    interaction) is the target among ``protocol.negatives`` items the user
    never touched; the history is what came before it. Users without such a
    positive are skipped.
    """
    user_arr = interactions["user"].to_numpy(np.int64)
    item_arr = interactions["item"].to_numpy(np.int64)
    rating_arr = interactions["rating"].to_numpy(np.float32)
    order = np.argsort(user_arr, kind="stable")
    starts = np.searchsorted(user_arr[order], users, side="left")
    ends = np.searchsorted(user_arr[order], users, side="right")
    h, c = protocol.history_len, protocol.negatives + 1
    rows_u, hist, rat, cands, tpos, trat = [], [], [], [], [], []
    for u, lo, hi in zip(users, starts, ends):
        idx = order[lo:hi]
        ok = np.flatnonzero(rating_arr[idx] > protocol.positive_threshold)
        ok = ok[ok >= 1]
        if not len(ok):
            continue
        t = int(rng.choice(ok))
        past = idx[max(0, t - h) : t]
        hrow = np.full(h, PAD, dtype=np.int64)
        rrow = np.zeros(h, dtype=np.float32)
        hrow[h - len(past) :] = item_arr[past]
        rrow[h - len(past) :] = rating_arr[past]
        negatives = sample_unseen(rng, dataset.n_items, item_arr[idx], protocol.negatives)
        pos = int(rng.integers(c))
        rows_u.append(int(u))
        hist.append(hrow)
        rat.append(rrow)
        cands.append(np.insert(negatives, pos, item_arr[idx[t]]))
        tpos.append(pos)
        trat.append(rating_arr[idx[t]])
    if not rows_u:
        raise ValueError("no training user has a positive with an earlier interaction: cannot build training states")
    batch = RankingBatch(np.array(rows_u), np.stack(cands), np.stack(hist), np.stack(rat))
    util = np.asarray(simulator.utility(batch.users, batch.candidates), dtype=np.float64)
    return States(batch, np.array(tpos), util, np.array(trat, dtype=np.float64))


def online_transitions(
    env: Any, behaviour: Any, seed: int, users: np.ndarray | None = None
) -> Iterator[tuple[States, np.ndarray, tuple[np.ndarray, np.ndarray], States]]:
    """Step the live env (agents: dataset ``users``, default the env's) with
    ``behaviour``; yield (before, predicted orders, (chosen, rating), after).

    ``before``/``after`` hold the users alive at both steps, aligned row by
    row; ``predicted`` is the behaviour policy's order of ``before``'s
    candidates; ``chosen`` the candidate position each user clicked (-1 for
    none). Episodes restart (with a new seed) when every user has left.
    """
    episode = 0
    while True:
        for step in play(env, behaviour, seed + episode, users):
            next_alive = np.asarray(step.result.alive, dtype=bool)
            keep = step.rows[next_alive[step.rows]]
            if len(keep):
                before = with_truth(env.simulator, step.batch.take(keep))
                after = with_truth(env.simulator, step.result.batch.take(keep))
                predicted = np.argsort(-step.scores[keep], axis=1, kind="stable")
                yield before, predicted, _chosen(step.result.feedback, keep, step.batch.candidates[keep]), after
        episode += 1


def _chosen(fb: Any, rows: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(chosen candidate position or -1, rating) for the given env rows."""
    clicked = np.asarray(fb.clicked)[rows]
    rating = np.asarray(fb.rating, dtype=np.float64)[rows]
    hit = candidates == clicked[:, None]
    chosen = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
    return chosen, rating
