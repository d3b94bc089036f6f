"""BPR-MF (Rendle et al. 2009) in torch: the paper's classic learned baseline.

"sample" trains on the sampled evaluation users only (the paper's small-data
setting), "full" on every user's training interactions. Training is seeded
through one ``torch.Generator`` (initialisation, shuffling and negative
sampling), so two runs with the same seed give identical scores.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from policies.base import Policy, PolicyContext
from policies.options import at_least, check_types, read, takes
from policies.rule_based import TIE_BREAK, VariantOption, item_counts, popularity_prior
from starec_env.data.model import Dataset
from starec_env.types import RankingBatch, TrainSplit


@dataclass
class BPRConfig:
    """Hyper-parameters (overridable per policy from the experiment config)."""

    dim: int = 64
    epochs: int = 20
    batch_size: int = 2048
    lr: float = 0.01
    l2: float = 1e-2
    init_std: float = 0.01

    def __post_init__(self) -> None:
        check_types(self)
        at_least(self, 1, "dim", "epochs", "batch_size")
        at_least(self, 0.0, "l2")
        for name in ("lr", "init_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a value > 0, got {getattr(self, name)!r}")


class BPRPolicy(Policy):
    """Matrix factorisation trained with the pairwise BPR loss.

    Users unseen in training (e.g. non-sampled users under "sample", fresh
    users online) are scored by the learned item bias, i.e. a learned
    popularity, with training popularity as the tie-breaker.
    """

    def __init__(self, dataset: Dataset, variant: str, cfg: BPRConfig, seed: int) -> None:
        self.dataset = dataset
        self.variant = variant
        self.cfg = cfg
        self.seed = seed
        self.user_emb: torch.Tensor | None = None
        self.item_emb: torch.Tensor | None = None
        self.item_bias: torch.Tensor | None = None
        self.known_users = np.zeros(dataset.n_users, dtype=bool)
        self.prior = popularity_prior(dataset.item_popularity)
        self._stats: dict = {}

    def fit(self, split: TrainSplit) -> None:
        inter = split.for_variant(self.variant)
        n_users, n_items = self.dataset.n_users, self.dataset.n_items
        self.prior = popularity_prior(item_counts(n_items, inter))
        pairs = np.unique(inter[["user", "item"]].to_numpy(np.int64), axis=0)
        if not len(pairs):
            raise ValueError(f"BPR ({self.variant}): no training interactions")
        self.known_users = np.zeros(n_users, dtype=bool)
        self.known_users[pairs[:, 0]] = True
        seen_keys = torch.from_numpy(pairs[:, 0] * n_items + pairs[:, 1])  # sorted by np.unique
        users_t, items_t = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])

        gen = torch.Generator().manual_seed(self.seed)
        cfg = self.cfg
        user_emb = torch.nn.Parameter(torch.empty(n_users, cfg.dim).normal_(0.0, cfg.init_std, generator=gen))
        item_emb = torch.nn.Parameter(torch.empty(n_items, cfg.dim).normal_(0.0, cfg.init_std, generator=gen))
        item_bias = torch.nn.Parameter(torch.zeros(n_items))
        opt = torch.optim.Adam([user_emb, item_emb, item_bias], lr=cfg.lr)

        start = time.perf_counter()
        losses = []
        for _ in range(cfg.epochs):
            order = torch.randperm(len(pairs), generator=gen)
            total = 0.0
            for lo in range(0, len(pairs), cfg.batch_size):
                idx = order[lo:lo + cfg.batch_size]
                u, i = users_t[idx], items_t[idx]
                j = _sample_negatives(u, n_items, seen_keys, gen)
                pu, qi, qj = user_emb[u], item_emb[i], item_emb[j]
                diff = (pu * (qi - qj)).sum(1) + item_bias[i] - item_bias[j]
                reg = pu.pow(2).sum() + qi.pow(2).sum() + qj.pow(2).sum()
                loss = -torch.nn.functional.logsigmoid(diff).mean() + cfg.l2 * reg / len(idx)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            losses.append(total / len(pairs))
        self.user_emb, self.item_emb, self.item_bias = user_emb.detach(), item_emb.detach(), item_bias.detach()
        self._stats = {
            "train_s": round(time.perf_counter() - start, 3),
            "train_interactions": int(len(pairs)),
            "train_fraction": round(split.fraction(self.variant), 4),
            "final_loss": round(losses[-1], 5),
        }

    def score(self, batch: RankingBatch) -> np.ndarray:
        if self.item_emb is None:
            raise RuntimeError("BPR policy used before fit(split): train it on a protocol's TrainSplit first")
        cands = torch.from_numpy(np.ascontiguousarray(batch.candidates, dtype=np.int64))
        users = torch.from_numpy(np.ascontiguousarray(batch.users, dtype=np.int64))
        known = torch.from_numpy(self.known_users[batch.users])
        with torch.no_grad():
            dot = torch.einsum("bd,bcd->bc", self.user_emb[users], self.item_emb[cands])
            dot = torch.where(known[:, None], dot, torch.zeros_like(dot))
            scores = (dot + self.item_bias[cands]).double().numpy()
        return scores + TIE_BREAK * self.prior[batch.candidates]

    def stats(self) -> dict:
        return dict(self._stats)


def _sample_negatives(users: torch.Tensor, n_items: int, seen_keys: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Uniform items the user has not interacted with (a few rejection rounds)."""
    items = torch.randint(n_items, users.shape, generator=gen)
    for _ in range(5):
        keys = users * n_items + items
        pos = torch.searchsorted(seen_keys, keys).clamp(max=len(seen_keys) - 1)
        clash = seen_keys[pos] == keys
        if not bool(clash.any()):
            break
        items = torch.where(clash, torch.randint(n_items, users.shape, generator=gen), items)
    return items


def _make(ctx: PolicyContext, variant: str) -> Policy:
    variant = read(VariantOption, ctx.options, variant=variant).variant
    return BPRPolicy(ctx.dataset, variant, read(BPRConfig, ctx.options), ctx.seed)


@takes(BPRConfig, VariantOption)
def make_bpr_sample(ctx: PolicyContext) -> Policy:
    return _make(ctx, "sample")


@takes(BPRConfig, VariantOption)
def make_bpr_full(ctx: PolicyContext) -> Policy:
    return _make(ctx, "full")
