"""Ranking metrics against values computed by hand."""
from __future__ import annotations

import numpy as np
import pytest

from starec_env.metrics import hit_rate, ndcg_graded, ndcg_single, rank_of


def test_rank_of_counts_ties_against_target() -> None:
    scores = np.array([[0.1, 0.9, 0.5], [1.0, 1.0, 1.0], [3.0, 2.0, 1.0]])
    assert rank_of(scores, np.array([2, 0, 0])).tolist() == [1, 2, 0]


def test_ndcg_single_hand_values() -> None:
    ranks = np.array([0, 1, 2, 4, 9, 19])
    # 1/log2(rank+2): 1, 1/log2 3 = 0.6309, 0.5, 1/log2 6 = 0.3869, 1/log2 11 = 0.2891, 1/log2 21 = 0.2277
    assert ndcg_single(ranks, 20) == pytest.approx([1.0, 0.63093, 0.5, 0.38685, 0.28906, 0.22767], abs=1e-5)
    assert ndcg_single(ranks, 5).tolist() == pytest.approx([1.0, 0.63093, 0.5, 0.38685, 0.0, 0.0], abs=1e-5)
    assert ndcg_single(ranks, 1).tolist() == [1.0, 0, 0, 0, 0, 0]


def test_hit_rate() -> None:
    assert hit_rate(np.array([0, 4, 5, 10]), 5).tolist() == [1.0, 1.0, 0.0, 0.0]


def test_ndcg_graded_hand_value() -> None:
    scores = np.array([[3.0, 2.0, 1.0]])  # ranking: item0, item1, item2
    rel = np.array([[0.0, 2.0, 1.0]])  # ideal: item1, item2, item0
    dcg = 0 + 2 / np.log2(3) + 1 / np.log2(4)
    idcg = 2 + 1 / np.log2(3)
    assert ndcg_graded(scores, rel, 3)[0] == pytest.approx(dcg / idcg)
    assert ndcg_graded(scores, rel, 1)[0] == pytest.approx(0.0)
    assert ndcg_graded(rel, rel, 3)[0] == pytest.approx(1.0)


def test_ndcg_graded_shifts_negative_relevance_and_flat_rows() -> None:
    scores = np.array([[1.0, 0.0], [0.0, 1.0]])
    rel = np.array([[-1.0, -3.0], [5.0, 5.0]])
    assert ndcg_graded(scores, rel, 2).tolist() == pytest.approx([1.0, 1.0])
