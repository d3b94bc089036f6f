"""Preference model fitted to real ratings: biased matrix factorisation plus genre affinity.

rating(u, i) ~ mu + b_u + b_i + a_u . g_i + p_u . q_i, where g_i are the item's
genre weights, so a user's genre affinity a_u generalises to unseen items of
the genres they rated, and the latent factors capture the rest. Fitted by
full-batch Adam in numpy (segment sums over the CSR-sorted interactions, so
the result is bit-for-bit reproducible and the environment needs no torch),
from a seeded generator; then standardised into the shared embedding form of
:class:`PreferenceModel`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from starec_env.behaviour import genre_weights
from starec_env.data.model import Dataset
from starec_env.simulator.config import SimulatorConfig
from starec_env.simulator.preference import PreferenceModel


@dataclass(frozen=True)
class FittedPreference:
    model: PreferenceModel
    #: Residual std of the fit, in utility units (the rating noise).
    rating_noise: float
    #: Utilities of the observed (user, item) pairs, aligned with dataset.interactions.
    observed_utility: np.ndarray
    stats: dict


class _Segments:
    """Sums of per-interaction rows grouped by user or by item (deterministic reduceat)."""

    def __init__(self, keys: np.ndarray, n_groups: int) -> None:
        # Interactions come sorted by user: no permutation needed on that side.
        self.order = None if np.all(keys[1:] >= keys[:-1]) else np.argsort(keys, kind="stable")
        counts = np.bincount(keys, minlength=n_groups)
        self.present = np.flatnonzero(counts)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[self.present]
        self.counts = counts.astype(np.float64)
        self.n_groups = n_groups

    def sum(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros((self.n_groups,) + values.shape[1:])
        ordered = values if self.order is None else values[self.order]
        out[self.present] = np.add.reduceat(ordered, self.starts, axis=0)
        return out


def fit_preference(dataset: Dataset, cfg: SimulatorConfig, seed: int = 0) -> FittedPreference:
    """Fit the rating model on all of ``dataset``'s interactions."""
    if len(dataset.interactions) == 0:
        raise ValueError(f"dataset {dataset.name!r} has no interactions to fit a user simulator on")
    rng = np.random.default_rng([seed, 0xF17])
    u, i, r = dataset.user_arr, dataset.item_arr, dataset.rating_arr.astype(np.float64)
    genre = genre_weights(dataset.item_genres).astype(np.float64)
    n, k = len(r), cfg.fit_factors
    by_user, by_item = _Segments(u, dataset.n_users), _Segments(i, dataset.n_items)
    mu = float(r.mean())
    params = {
        "p": 0.05 * rng.standard_normal((dataset.n_users, k)),
        "q": 0.05 * rng.standard_normal((dataset.n_items, k)),
        "a": np.zeros((dataset.n_users, genre.shape[1])),
        "bu": np.zeros(dataset.n_users),
        "bi": np.zeros(dataset.n_items),
    }
    side = {"p": by_user, "a": by_user, "bu": by_user, "q": by_item, "bi": by_item}
    moments = {name: (np.zeros_like(v), np.zeros_like(v)) for name, v in params.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8

    genre_i = genre[i]  # fixed: gathered once

    def predict(pr: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pu, qi = pr["p"][u], pr["q"][i]
        pred = mu + pr["bu"][u] + pr["bi"][i] + np.einsum("nk,nk->n", pr["a"][u], genre_i)
        return pred + np.einsum("nk,nk->n", pu, qi), pu, qi

    for step in range(1, cfg.fit_epochs + 1):
        pred, pu, qi = predict(params)
        err = 2.0 * (pred - r) / n
        grads = {
            "p": by_user.sum(err[:, None] * qi),
            "q": by_item.sum(err[:, None] * pu),
            "a": by_user.sum(err[:, None] * genre_i),
            "bu": by_user.sum(err),
            "bi": by_item.sum(err),
        }
        for name, value in params.items():
            # Per-interaction L2 (the regulariser averaged over interactions, like the loss).
            counts = side[name].counts if value.ndim == 1 else side[name].counts[:, None]
            g = grads[name] + (2.0 * cfg.fit_l2 / n) * counts * value
            m, v = moments[name]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            value -= cfg.fit_lr * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + eps)

    pred = predict(params)[0]
    m, s = float(pred.mean()), float(max(pred.std(), 1e-6))
    resid = float(np.sqrt(np.mean((pred - r) ** 2)))
    user_emb = np.concatenate(
        [params["a"], params["p"], (params["bu"] + (mu - m))[:, None], np.ones((dataset.n_users, 1))], axis=1
    ) / s
    item_emb = np.concatenate([genre, params["q"], np.ones((dataset.n_items, 1)), params["bi"][:, None]], axis=1)
    model = PreferenceModel(user_emb.astype(np.float32), item_emb.astype(np.float32), genre.shape[1], source="fitted")
    stats = {"rmse": resid, "rating_std": float(r.std()), "pred_std": s, "epochs": cfg.fit_epochs}
    return FittedPreference(model, resid / s, ((pred - m) / s).astype(np.float32), stats)
