"""The rollout loop: one episode of a :class:`~policies.base.Policy` on the batched env.

:func:`play` is the arrays-in/arrays-out loop (the fast path online
evaluation runs); :mod:`policies.adapter` drives the same policy through the
PettingZoo dict API with identical results for the same seed.
:func:`check_scores` is the shape check both apply to what a policy returns.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Iterator

import numpy as np

from policies.base import Policy
from starec_env.types import Feedback, RankingBatch

if TYPE_CHECKING:
    from starec_env.batched import BatchedEnv, StepResult


@dataclass(frozen=True)
class Step:
    """One environment step of an episode: the acting ``rows``, the batch they
    ranked, the full (N, C) ``scores`` sent and the env's result."""

    rows: np.ndarray
    batch: RankingBatch
    scores: np.ndarray
    result: StepResult


def check_scores(policy: Policy, batch: RankingBatch, scores: np.ndarray) -> np.ndarray:
    """``scores`` as a float64 (B, C) array for ``batch``; any other shape is a
    ValueError naming the policy (a (C,) answer would otherwise broadcast
    silently over every user)."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.shape != batch.candidates.shape:
        raise ValueError(
            f"policy {policy.name!r} returned scores of shape {arr.shape} for {len(batch)} users x "
            f"{batch.candidates.shape[1]} candidates; score() must return one score per candidate, "
            f"shape {batch.candidates.shape}"
        )
    return arr


def play(env: BatchedEnv, policy: Policy, seed: int, users: np.ndarray | None = None) -> Iterator[Step]:
    """One episode (agents: dataset ``users``, default the env's) until every
    user has left or hit ``max_cycles``: the live users are scored, the env
    shows the top slate, the policy observes the feedback; yields each step."""
    batch = env.reset(seed=seed, users=users)
    alive = np.asarray(env.alive, dtype=bool).copy()  # users with nothing left to offer start done
    while alive.any():
        rows = np.flatnonzero(alive)
        shown = batch.take(rows)
        scores = np.zeros(batch.candidates.shape, dtype=np.float64)
        scores[rows] = check_scores(policy, shown, policy.score(shown))
        result = env.step(scores)
        policy.observe(shown, take_feedback(result.feedback, rows))
        yield Step(rows, batch, scores, result)
        batch = result.batch
        alive = np.asarray(result.alive, dtype=bool)


def take_feedback(fb: Feedback, rows: np.ndarray) -> Feedback:
    """The feedback rows of the users that were shown a slate."""
    return type(fb)(**{f.name: np.asarray(getattr(fb, f.name))[rows] for f in fields(fb)})
