"""How close the simulator is to the data it stands for.

The simulator replays every user's history length through its own choice
model (sequential MNL over the catalogue) and rating model; the resulting
rating histogram and item-popularity curve are compared with the data's.
"""
from __future__ import annotations

import numpy as np

from starec_env.data.model import Dataset
from starec_env.data.synthetic import consume_plackett_luce


def rating_histogram(ratings: np.ndarray) -> list[float]:
    """Share of 1..5 stars (ratings rounded to the nearest star)."""
    stars = np.clip(np.rint(np.asarray(ratings, dtype=np.float64)), 1, 5).astype(np.int64)
    return (np.bincount(stars, minlength=6)[1:] / max(1, len(stars))).tolist()


def popularity_stats(items: np.ndarray, n_items: int) -> dict:
    """Gini of item interaction counts, share of the top 10 % items, share never consumed."""
    counts = np.sort(np.bincount(items, minlength=n_items).astype(np.float64))
    total = max(counts.sum(), 1.0)
    n = len(counts)
    gini = float((2.0 * np.arange(1, n + 1) @ counts) / (n * total) - (n + 1) / n)
    top = max(1, n // 10)
    return {
        "gini": gini,
        "top10_share": float(counts[-top:].sum() / total),
        "cold_share": float((counts == 0).mean()),
    }


def fidelity_report(dataset: Dataset, sim, seed: int = 0, max_users: int = 5000) -> dict:
    """Simulated vs. data rating histogram and popularity curve, as a plain dict."""
    rng = np.random.default_rng([seed, 0xF1DE])
    users = np.arange(dataset.n_users)
    if len(users) > max_users:
        users = np.sort(rng.choice(users, max_users, replace=False))
    lengths = np.diff(dataset.user_offsets)[users]
    pref, resp = sim.preference, sim.response
    bias = (resp.popularity_weight * resp.log_exposure).astype(np.float32)
    inv_t = np.float32(1.0 / resp.temperature)

    def logits(rows: np.ndarray) -> np.ndarray:
        return pref.full(users[rows]) * inv_t + bias

    chunk = max(1, min(2048, 2**22 // max(1, dataset.n_items)))
    rows, items = consume_plackett_luce(logits, len(users), dataset.n_items, lengths, rng, chunk)
    sim_ratings = resp.rate(pref.utility(users[rows], items[:, None])[:, 0], rng)
    data_rows = np.isin(dataset.user_arr, users)
    data_hist = rating_histogram(dataset.rating_arr[data_rows])
    sim_hist = rating_histogram(sim_ratings)
    observed = pref.utility(dataset.user_arr[data_rows], dataset.item_arr[data_rows][:, None])[:, 0]
    replay_hist = rating_histogram(resp.rate(observed, rng))
    return {
        "dataset": dataset.name,
        "source": pref.source,
        "users": int(len(users)),
        "rating_hist": {"data": data_hist, "simulated": sim_hist, "replayed": replay_hist},
        "rating_tv_distance": 0.5 * float(np.abs(np.subtract(data_hist, sim_hist)).sum()),
        "mean_rating": {"data": float(dataset.rating_arr[data_rows].mean()), "simulated": float(sim_ratings.mean())},
        "popularity": {
            "data": popularity_stats(dataset.item_arr[data_rows], dataset.n_items),
            "simulated": popularity_stats(items, dataset.n_items),
        },
        "utility_rating_spearman": _spearman(observed, dataset.rating_arr[data_rows]),
        "fit": dict(sim.fit_stats),
    }


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2:
        return float("nan")
    rx = np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(np.float64)
    ry = _average_ranks(np.asarray(y, dtype=np.float64))
    return float(np.corrcoef(rx, ry)[0, 1])


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (ratings have many ties)."""
    uniq, inv, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (starts + (counts - 1) / 2.0)[inv]
