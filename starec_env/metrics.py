"""Ranking metrics, vectorised over a batch of users.

Shared by the offline protocol, the environment's rewards and the reports,
so every number in STARec is computed by the same code.
"""
from __future__ import annotations

import numpy as np


def rank_of(scores: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """0-based rank of candidate ``pos[b]`` under ``scores[b]`` (higher first).

    Ties count against the target (pessimistic), so a constant scorer cannot
    look good by luck of candidate order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    target = scores[np.arange(len(scores)), pos]
    return (scores >= target[:, None]).sum(axis=1) - 1


def ndcg_single(ranks: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k with one relevant item at 0-based ``ranks`` (IDCG = 1)."""
    ranks = np.asarray(ranks)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    return (np.asarray(ranks) < k).astype(np.float64)


def ndcg_graded(scores: np.ndarray, relevance: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k of the ranking induced by ``scores`` against graded ``relevance``.

    Both (B, C). Relevance is shifted per row to be non-negative (true
    utilities can be negative); rows with no spread in relevance score 1.
    Ties in ``scores`` are broken by candidate order (stable sort).
    """
    scores = np.asarray(scores, dtype=np.float64)
    rel = np.asarray(relevance, dtype=np.float64)
    rel = rel - rel.min(axis=1, keepdims=True)
    k = min(k, scores.shape[1])
    disc = 1.0 / np.log2(np.arange(k) + 2.0)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    dcg = (np.take_along_axis(rel, order, axis=1) * disc).sum(axis=1)
    ideal = -np.sort(-rel, axis=1)[:, :k]
    idcg = (ideal * disc).sum(axis=1)
    return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 1.0)
