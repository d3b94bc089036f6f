"""Which logged interactions the real-data simulator may learn from.

The offline protocol (:class:`starec_env.protocol.LeaveOneOut`) holds out each
user's last positive (rating above the positive threshold), whatever the
evaluation seed. A simulator fitted on those rows would have seen the answers
its oracle is judged on, so the fit stops before them: every user's rows from
their last positive on (that row and everything after it) stay out.
"""
from __future__ import annotations

import numpy as np

from starec_env.data.model import Dataset

#: The paper's (and the protocol's default) positive threshold: rating > 3.
DEFAULT_POSITIVE_THRESHOLD = 3.0


def positive_threshold_of(dataset: Dataset, override: float | None = None) -> float:
    """The threshold that defines held-out positives: ``override``, else the
    dataset's preprocessing setting, else the paper's 3.0."""
    if override is not None:
        return float(override)
    return float(dataset.meta.get("preprocess", {}).get("positive_threshold", DEFAULT_POSITIVE_THRESHOLD))


def heldout_start(dataset: Dataset, positive_threshold: float) -> np.ndarray:
    """(n_users,) row index where each user's held-out part begins.

    That is the row of the user's last positive; users without a positive
    keep everything (their start is the end of their rows).
    """
    rows = np.arange(len(dataset.interactions), dtype=np.int64)
    start = dataset.user_offsets[1:].copy()
    positive = dataset.rating_arr > positive_threshold
    last = np.full(dataset.n_users, -1, np.int64)
    np.maximum.at(last, dataset.user_arr[positive], rows[positive])
    has = last >= 0
    start[has] = last[has]
    return start


def training_part(dataset: Dataset, start: np.ndarray) -> Dataset:
    """``dataset`` without the held-out rows (rows at or after each user's ``start``).

    Every user and item keeps its index, so models fitted on the result
    apply to the whole dataset.
    """
    keep = np.arange(len(dataset.interactions)) < start[dataset.user_arr]
    return dataset.subset(np.arange(dataset.n_users), np.arange(dataset.n_items), keep)
