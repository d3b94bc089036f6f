"""Environment reward functions: ``reward_fn(outcome: StepOutcome) -> (N,) float array``.

Declared in the ``starec.rewards`` entry-point group (setup.cfg) so the
environment resolves them by name without importing this package.
"""
from __future__ import annotations

import numpy as np

from starec_env.metrics import ndcg_graded, ndcg_single, rank_of
from starec_env.types import StepOutcome


def click_reward(outcome: StepOutcome) -> np.ndarray:
    """1 for a click, 0 otherwise."""
    return (outcome.clicked >= 0).astype(np.float64)


def click_rating_reward(outcome: StepOutcome) -> np.ndarray:
    """rating / 5 for a click (0.2..1.0), 0 without: clicks count, liked clicks count more."""
    return np.where(outcome.clicked >= 0, outcome.rating / 5.0, 0.0).astype(np.float64)


def ndcg_reward(outcome: StepOutcome) -> np.ndarray:
    """NDCG of the agent's ranking.

    Offline (a held-out target): NDCG@C of the target's rank, pessimistic on
    ties exactly as the offline protocol scores it. Online: NDCG@slate_size
    of the ranking against the simulator's current true utilities.
    """
    n_cand = outcome.scores.shape[1]
    if outcome.target_pos is not None:
        return ndcg_single(rank_of(outcome.scores, outcome.target_pos), n_cand)
    if outcome.utilities is None:
        raise ValueError("ndcg_reward needs either target_pos (offline) or true utilities (online)")
    return ndcg_graded(outcome.scores, outcome.utilities, outcome.slate.shape[1])


# The environment computes candidate utilities only for rewards that read them.
click_reward.needs_utilities = False
click_rating_reward.needs_utilities = False
ndcg_reward.needs_utilities = True
