"""Choice model fitted to real consumption: which item a user picks next.

Ratings say how much a user liked what they watched; they do not say why
they watched it. This model learns the choice itself, from implicit feedback
(every logged interaction is a choice among the items the user had not
consumed yet):

    logit(u, i | recent items) = b_i + a_u . g_i + s_u n_i + (p_u + c_u) . q_i

- ``b_i``: item appeal common to all users (popularity, exposure and
  general quality, which consumption logs cannot tell apart);
- ``a_u . g_i``: the user's affinity for the item's genres;
- ``s_u n_i``: how much the user follows popularity (``n_i``: the item's
  standardised log count), as mainstream and niche users differ;
- ``p_u . q_i``: long-term latent taste;
- ``c_u = sum_k w_k y_(item k steps back) / sum_k w_k``: the recent items
  (the last ``choice_context`` choices, weights decaying by ``choice_decay``
  per step), so the model follows what the user has been watching lately.

Fitted by sampled softmax (the positive against ``choice_negatives`` items
drawn from a uniform/popularity mixture, logQ-corrected so the logits
estimate the full-catalogue softmax; an item the user had consumed before
that choice is no negative, as it was no longer a choice: the sequential
likelihood of choices without replacement) with Adam, in numpy with
explicitly seeded generators.
Validation mirrors the offline protocol inside the training rows: each
user's last positive there is a validation choice, which, like the
protocol's held-out choice, is no training target and may be a negative of
the user's other choices. Training stops once the validation log-likelihood
has not improved for ``choice_patience`` epochs and keeps the best epoch
(small logs get smaller batches, so that an epoch is at least ``MIN_STEPS``
steps). The simulator then freezes each user at the end of their logged
history (``c_u`` from their last choices).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from starec_env.behaviour import genre_weights
from starec_env.data.model import Dataset
from starec_env.simulator.config import SimulatorConfig
from starec_env.simulator.holdout import heldout_start

#: Fewest optimiser steps per epoch (small logs get smaller batches).
MIN_STEPS = 50


@dataclass(frozen=True)
class FittedChoice:
    """The fitted choice model, users frozen at the end of their training history."""

    #: (n_users, D) p_u + c_u.
    user_factors: np.ndarray
    #: (n_items, D) q_i.
    item_factors: np.ndarray
    #: (n_users, G + 1) [a_u, s_u].
    affinity: np.ndarray
    #: (n_items, G + 1) [g_i, n_i]: genre weights and standardised log popularity (fixed).
    item_features: np.ndarray
    #: (n_items,) b_i.
    item_bias: np.ndarray
    stats: dict


class _Sequences:
    """The training log as per-user sequences, with each position's recent-item context."""

    def __init__(self, dataset: Dataset, context: int, decay: float) -> None:
        self.users = dataset.user_arr
        self.items = dataset.item_arr
        self.offsets = dataset.user_offsets
        self.context = context
        self.lag_weight = (decay ** np.arange(context)).astype(np.float32)

    def context_of(self, users: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Items and normalised weights of the ``context`` rows before ``ends`` (exclusive) in each user's log.

        Returns (B, L) item indices (0 where padded) and (B, L) weights (0 where padded).
        """
        rows = ends[:, None] - 1 - np.arange(self.context)[None, :]
        valid = rows >= self.offsets[users][:, None]
        items = np.where(valid, self.items[np.maximum(rows, 0)], 0)
        weights = np.where(valid, self.lag_weight, np.float32(0.0))
        total = weights.sum(axis=1, keepdims=True)
        weights /= np.where(total > 0, total, np.float32(1.0))
        return items, weights

    def consumed_before(self, users: np.ndarray, ends: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
        """(len(users), len(items)) bool: whether each row's user consumed each of the distinct
        ``items`` in their rows before ``ends`` (exclusive), i.e. whether it was no longer
        among the choices the user had when making the choice at ``ends``."""
        uniq, local = np.unique(users, return_inverse=True)
        lens = self.offsets[uniq + 1] - self.offsets[uniq]
        rows = np.repeat(self.offsets[uniq] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
        column = np.full(n_items, -1, np.int64)
        column[items] = np.arange(len(items))
        col = column[self.items[rows]]
        hit = col >= 0
        # The row at which each user first consumed each item (past the end of the log where never).
        when = np.full((len(uniq), len(items)), np.iinfo(np.int64).max)
        np.minimum.at(when, (np.repeat(np.arange(len(uniq)), lens)[hit], col[hit]), rows[hit])
        return when[local] < ends[:, None]


class _Adam:
    """Dense Adam over a dict of float32 arrays, with L2 on every parameter."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, l2: float) -> None:
        self.params, self.lr, self.l2, self.t = params, np.float32(lr), np.float32(l2), 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        c1, c2 = np.float32(1 - 0.9**self.t), np.float32(1 - 0.999**self.t)
        for name, p in self.params.items():
            g = grads[name] + self.l2 * p
            m, v = self.m[name], self.v[name]
            m *= np.float32(0.9)
            m += np.float32(0.1) * g
            v *= np.float32(0.999)
            v += np.float32(0.001) * g * g
            p -= self.lr * (m / c1) / (np.sqrt(v / c2) + np.float32(1e-8))


def _scatter(index: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """``out[index] += rows`` for each (rows, out) pair, summing repeats (sort + reduceat:
    much faster than ``np.add.at``)."""
    if not len(index):
        return
    order = np.argsort(index, kind="stable")
    idx = index[order]
    starts = np.flatnonzero(np.concatenate([[True], idx[1:] != idx[:-1]]))
    for rows, out in pairs:
        out[idx[starts]] += np.add.reduceat(rows[order], starts, axis=0)


def log_choice_probability(logits: np.ndarray, targets: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """log P(target) under a softmax over each row's catalogue minus ``excluded`` items.

    ``logits`` (B, n_items); ``targets`` (B,) item indices; ``excluded`` (B,
    n_items) bool, the items the user consumed before (never the target).
    """
    z = np.where(excluded, -np.inf, logits.astype(np.float64))
    top = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]
    return z[np.arange(len(targets)), targets] - lse


def fit_choice(train: Dataset, cfg: SimulatorConfig, seed: int = 0, positive_threshold: float = 3.0) -> FittedChoice:
    """Fit the choice model on ``train`` (the logged rows the simulator may learn from);
    ``positive_threshold`` defines the validation choices as the protocol defines its targets."""
    return _ChoiceFit(train, cfg, seed, positive_threshold).run()


class _ChoiceFit:
    """State of one fit: data views, sampler, parameters and optimiser."""

    def __init__(self, train: Dataset, cfg: SimulatorConfig, seed: int, positive_threshold: float) -> None:
        self.start_time = time.perf_counter()
        self.cfg = cfg
        self.rng = np.random.default_rng([seed, 0xC401CE])
        self.n_items = train.n_items
        self.seq = _Sequences(train, cfg.choice_context, cfg.choice_decay)
        counts = np.bincount(train.item_arr, minlength=train.n_items).astype(np.float64)
        log_pop = np.log1p(counts)
        popular = (log_pop - log_pop.mean()) / max(float(log_pop.std()), 1e-6)
        self.features = np.concatenate([genre_weights(train.item_genres), popular[:, None].astype(np.float32)], axis=1)

        # Validation mirrors the protocol inside the training part: each user's last positive is
        # a validation choice, and it and the rows after it are no training targets.
        off = train.user_offsets
        start = heldout_start(train, positive_threshold)
        val_users = np.flatnonzero((start > off[:-1]) & (start < off[1:]))
        self.val_rows = start
        if not len(val_users):
            raise ValueError(
                f"dataset {train.name!r}: no user has a positive (rating > {positive_threshold}) after an earlier "
                "interaction in the rows left to fit on, so the choice model has nothing to learn from and validate on"
            )
        self.target_rows = np.flatnonzero(np.arange(len(train.interactions)) < start[train.user_arr])
        if len(val_users) > cfg.choice_val_users:
            val_users = np.sort(self.rng.choice(val_users, cfg.choice_val_users, replace=False))
        self.val_users = val_users
        # Small logs still get MIN_STEPS optimiser steps per epoch.
        self.batch = int(min(cfg.choice_batch, max(1, -(-len(self.target_rows) // MIN_STEPS))))

        # Negatives: half uniform, half by popularity; logQ corrects the logits for it.
        draw_prob = 0.5 / train.n_items + 0.5 * counts / max(counts.sum(), 1.0)
        self.draw_cdf = np.cumsum(draw_prob)
        self.log_q = np.log(draw_prob).astype(np.float32)

        dim = cfg.choice_factors
        self.params = {
            "p": np.zeros((train.n_users, dim), np.float32),
            "q": (0.01 * self.rng.standard_normal((train.n_items, dim))).astype(np.float32),
            "y": np.zeros((train.n_items, dim), np.float32),
            "a": np.zeros((train.n_users, self.features.shape[1]), np.float32),
            "b": (log_pop - log_pop.mean()).astype(np.float32),
        }
        self.adam = _Adam(self.params, cfg.choice_lr, cfg.choice_l2)

    def run(self) -> FittedChoice:
        """Epochs until the validation log-likelihood has not improved for ``choice_patience``
        epochs; the best epoch's model, each user frozen at the end of their log."""
        history: list[float] = []
        best = {k: v.copy() for k, v in self.params.items()}
        for epoch in range(self.cfg.choice_epochs):
            loss = self.epoch()
            history.append(self.val_loglik(self.params))
            if history[-1] >= max(history):
                best = {k: v.copy() for k, v in self.params.items()}
            elif epoch - int(np.argmax(history)) >= self.cfg.choice_patience:
                break
        users = np.arange(len(best["p"]))
        frozen = self.user_vectors(users, self.seq.offsets[1:], best)[0]
        stats = {
            "epochs": len(history),
            "best_epoch": int(np.argmax(history)) + 1,
            "val_loglik": max(history),
            "val_loglik_by_epoch": [round(v, 4) for v in history],
            "val_users": int(len(self.val_users)),
            "batch": self.batch,
            "train_loss": loss,
            "fit_s": time.perf_counter() - self.start_time,
        }
        return FittedChoice(frozen, best["q"], best["a"], self.features, best["b"], stats)

    def user_vectors(self, users: np.ndarray, ends: np.ndarray, pr: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """p_u + c_u for choices made at rows ``ends`` (context: the rows before), with the context used."""
        ctx_items, ctx_w = self.seq.context_of(users, ends)
        return pr["p"][users] + np.einsum("bl,bld->bd", ctx_w, pr["y"][ctx_items]), ctx_items, ctx_w

    def val_loglik(self, pr: dict) -> float:
        """Mean log-probability of the validation choices over the items each user had not consumed."""
        total = 0.0
        every = np.arange(self.n_items)
        chunk = max(1, min(512, 2**22 // self.n_items))  # bounded (users x items) temporaries
        for lo in range(0, len(self.val_users), chunk):
            users = self.val_users[lo:lo + chunk]
            ends = self.val_rows[users]
            logits = self.user_vectors(users, ends, pr)[0] @ pr["q"].T + pr["a"][users] @ self.features.T + pr["b"]
            targets = self.seq.items[ends]
            before = self.seq.consumed_before(users, ends, every, self.n_items)
            before[np.arange(len(users)), targets] = False  # a log that repeats an item
            total += float(log_choice_probability(logits, targets, before).sum())
        return total / len(self.val_users)

    def epoch(self) -> float:
        """One pass over the training targets in random order; returns the mean loss."""
        rows = self.rng.permutation(self.target_rows)
        total = 0.0
        for lo in range(0, len(rows), self.batch):
            total += self.step(rows[lo:lo + self.batch])
        return total / len(rows)

    def step(self, batch: np.ndarray) -> float:
        """One sampled-softmax Adam step on ``batch`` (row indices); returns the summed loss."""
        pr, feats, log_q = self.params, self.features, self.log_q
        q, b = pr["q"], pr["b"]
        users, pos = self.seq.users[batch], self.seq.items[batch]
        n = len(batch)
        draws = np.searchsorted(self.draw_cdf, self.rng.random(self.cfg.choice_negatives) * self.draw_cdf[-1])
        neg = np.unique(np.minimum(draws, self.n_items - 1))
        h, ctx_items, ctx_w = self.user_vectors(users, batch, pr)
        au = pr["a"][users]
        l_pos = np.einsum("bd,bd->b", h, q[pos]) + np.einsum("bg,bg->b", au, feats[pos]) + b[pos] - log_q[pos]
        l_neg = h @ q[neg].T + au @ feats[neg].T + (b[neg] - log_q[neg])[None, :]
        l_neg[self.seq.consumed_before(users, batch, neg, self.n_items)] = -np.inf  # no longer a choice then
        top = np.maximum(l_neg.max(axis=1), l_pos)
        e_pos = np.exp(l_pos - top)
        e_neg = np.exp(l_neg - top[:, None])
        z = e_pos + e_neg.sum(axis=1)
        loss = float(np.sum(np.log(z) + top - l_pos))
        g_pos = (e_pos / z - 1.0) / n  # d mean loss / d l_pos
        g_neg = e_neg / (z[:, None] * n)  # d mean loss / d l_neg
        dh = g_pos[:, None] * q[pos] + g_neg @ q[neg]
        grads = {k: np.zeros_like(v) for k, v in pr.items()}
        grads["q"][neg] += g_neg.T @ h
        grads["b"][neg] += g_neg.sum(axis=0)
        _scatter(pos, [(g_pos[:, None] * h, grads["q"]), (g_pos, grads["b"])])
        _scatter(users, [(dh, grads["p"]), (g_pos[:, None] * feats[pos] + g_neg @ feats[neg], grads["a"])])
        pairs = (ctx_w[:, :, None] * dh[:, None, :]).reshape(-1, dh.shape[1])
        _scatter(ctx_items.reshape(-1), [(pairs, grads["y"])])
        self.adam.step(grads)
        return loss
