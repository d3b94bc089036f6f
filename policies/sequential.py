"""Sequential baselines of the paper: GRU4Rec and SASRec (torch, CPU-friendly).

Both models read a user's item history (most recent last) and produce one
hidden state per position; the state at the last position, dotted with the
(tied) item embeddings, scores every candidate. They share one trainer:

* training sequences are each user's training interactions in time order, cut
  into windows of ``max_len + 1`` items from the end, so every transition is a
  training target exactly once (long ML histories are not thrown away);
* the loss is full-softmax cross-entropy over the catalogue at every position
  (``loss="ce"``; Klenitskiy & Vasilev 2023 show it trains SASRec much better
  than the original one sampled negative per position, which ``loss="bce"``
  keeps; full softmax suits catalogues of MovieLens size);
* each user's last training item is held out for early stopping, ranked
  against ``val_negatives`` uniformly drawn items exactly as the offline
  protocol ranks its target (NDCG@10), and the best epoch's weights are kept.

Scoring needs no per-user lookup: it runs on ``RankingBatch.history`` (what the
protocol and the environment provide), so users unseen in training are scored
from their batch history, and users with no history at all fall back to the
training popularity of the candidates.

Randomness: shuffles, validation negatives and sampled negatives come from
generators seeded by the policy context; weight init and dropout use torch's
global generator, which is therefore seeded only inside
``torch.random.fork_rng`` so the caller's torch RNG state is left untouched.
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policies.base import Policy, PolicyContext
from policies.options import check_types, takes
from starec_env.configtools import config_from_dict
from starec_env.metrics import ndcg_single, rank_of
from starec_env.types import PAD, RankingBatch, TrainSplit

ARCHS = ("gru4rec", "sasrec")
LOSSES = ("ce", "bce")
VARIANTS = ("sample", "full")


@dataclass
class SeqConfig:
    """Hyper-parameters of a sequential recommender (a TOML table maps onto it).

    Defaults follow the SASRec paper's ML settings (64-d, 2 blocks, dropout
    0.2, length 50) at CPU-friendly cost; ``epochs`` is a cap, training
    normally ends by early stopping after ``patience`` epochs without a
    validation gain.
    """

    dim: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.2
    max_len: int = 50
    loss: str = "ce"
    lr: float = 3e-3
    weight_decay: float = 0.0
    train_batch_size: int = 128
    epochs: int = 200
    patience: int = 5
    val_negatives: int = 100
    threads: int | None = None
    score_chunk: int = 4096

    def __post_init__(self) -> None:
        check_types(self)
        if self.loss not in LOSSES:
            raise ValueError(f"SeqConfig.loss: expected one of {LOSSES}, got {self.loss!r}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"SeqConfig.lr must be > 0 and weight_decay >= 0, got {self.lr!r} and {self.weight_decay!r}")
        for name in ("dim", "layers", "heads", "max_len", "train_batch_size", "epochs", "patience", "score_chunk", "val_negatives"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SeqConfig.{name}: expected a positive integer, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"SeqConfig.heads: must divide dim={self.dim}, got {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SeqConfig.dropout: expected a value in [0, 1), got {self.dropout!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"SeqConfig.threads: expected a positive integer or None, got {self.threads!r}")

    @classmethod
    def from_dict(cls, options: dict) -> "SeqConfig":
        """Build from a config table; unknown keys are an error, not silently ignored."""
        return config_from_dict(cls, options, "sequential-model")


# --------------------------------------------------------------------------- models


class _SeqModel(nn.Module):
    """Item embeddings (row 0 = padding) shared by input and output layers."""

    def __init__(self, n_items: int, cfg: SeqConfig) -> None:
        super().__init__()
        self.item_emb = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, std=cfg.dim**-0.5)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded shifted item ids (0 = pad) -> (B, L, D) states."""
        raise NotImplementedError


class GRU4Rec(_SeqModel):
    """GRU over the item sequence (Hidasi et al. 2016), CE over all items.

    The GRU runs on right-aligned copies of the sequences: with padding at the
    end, a causal recurrence gives exact states at every real position without
    packing.
    """

    def __init__(self, n_items: int, cfg: SeqConfig) -> None:
        super().__init__(n_items, cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.dim, cfg.dim, num_layers=cfg.layers, batch_first=True,
                          dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.out = nn.Linear(cfg.dim, cfg.dim)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        L = seq.shape[1]
        shift = L - (seq > 0).sum(dim=1, keepdim=True)  # pads at the front of each row
        ar = torch.arange(L, device=seq.device)
        to_right = (ar + shift) % L  # row j of the right-aligned copy
        right = torch.gather(seq, 1, to_right)
        h, _ = self.gru(self.drop(self.item_emb(right)))
        back = (ar - shift) % L
        h = torch.gather(h, 1, back.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        return self.out(self.drop(h))


class _Block(nn.Module):
    """Pre-LN causal self-attention block with a point-wise feed-forward net."""

    def __init__(self, cfg: SeqConfig) -> None:
        super().__init__()
        self.heads, self.p = cfg.heads, cfg.dropout
        self.ln1, self.ln2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.ffn = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.dim, cfg.dim))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.p if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, D)))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRec(_SeqModel):
    """Causal self-attention over the sequence (Kang & McAuley 2018).

    Learned absolute positions with left padding, as in the original, so the
    most recent item always sits at the last position.
    """

    def __init__(self, n_items: int, cfg: SeqConfig) -> None:
        super().__init__(n_items, cfg)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        nn.init.normal_(self.pos_emb.weight, std=cfg.dim**-0.5)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(cfg.dim)
        self.register_buffer("causal", torch.ones(cfg.max_len, cfg.max_len, dtype=torch.bool).tril(), persistent=False)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        L = seq.shape[1]
        real = seq > 0
        # attend to earlier real items; a pad query attends to itself only (no empty softmax row)
        allowed = self.causal[:L, :L] & real[:, None, :]
        allowed = (allowed | torch.eye(L, dtype=torch.bool, device=seq.device))[:, None]
        x = self.item_emb(seq) * self.item_emb.embedding_dim**0.5 + self.pos_emb.weight[-L:]
        x = self.drop(x) * real.unsqueeze(-1)
        for block in self.blocks:
            x = block(x, allowed)
        return self.ln(x)


_MODELS: dict[str, type[_SeqModel]] = {"gru4rec": GRU4Rec, "sasrec": SASRec}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class _SeqData:
    """Training windows and validation rows, item ids shifted by +1 (0 = pad)."""

    inputs: np.ndarray  # (W, L)
    targets: np.ndarray  # (W, L), 0 where there is no target
    val_hist: np.ndarray  # (V, L)
    val_cands: np.ndarray  # (V, 1 + val_negatives), target in column 0
    popularity: np.ndarray  # (n_items,) training interaction counts
    n_interactions: int


def _left_pad(rows: list[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(rows), length), dtype=np.int64)
    for r, seq in enumerate(rows):
        seq = seq[-length:]
        if len(seq):
            out[r, length - len(seq):] = seq
    return out


def build_sequences(interactions, n_items: int, max_len: int, val_negatives: int,
                    rng: np.random.Generator) -> _SeqData:
    """Cut time-ordered user histories into training windows plus a validation row per user.

    Users with at least 3 items give their last item to validation; every
    remaining transition ``s[t] -> s[t+1]`` becomes exactly one training target.
    """
    inter = interactions.sort_values(["user", "timestamp"], kind="stable")
    users = inter["user"].to_numpy(np.int64)
    items = inter["item"].to_numpy(np.int64) + 1
    bounds = np.flatnonzero(np.diff(users)) + 1
    win_in: list[np.ndarray] = []
    win_out: list[np.ndarray] = []
    val_hist: list[np.ndarray] = []
    val_target: list[int] = []
    for seq in np.split(items, bounds) if len(items) else []:
        if len(seq) >= 3:
            val_hist.append(seq[:-1])
            val_target.append(int(seq[-1]))
            seq = seq[:-1]
        for end in range(len(seq), 1, -max_len):
            window = seq[max(0, end - max_len - 1):end]
            win_in.append(window[:-1])
            win_out.append(window[1:])
    if not win_in:
        raise ValueError("sequential model: no training user has 2 or more interactions to learn from")
    target = np.asarray(val_target, dtype=np.int64)[:, None]
    seen = [np.append(h, t) for h, t in zip(val_hist, val_target)]
    negatives = _unseen_negatives(rng, n_items, seen, val_negatives)
    return _SeqData(
        inputs=_left_pad(win_in, max_len),
        targets=_left_pad(win_out, max_len),
        val_hist=_left_pad(val_hist, max_len),
        val_cands=np.concatenate([target, negatives], axis=1),
        popularity=np.bincount(items - 1, minlength=n_items).astype(np.float64),
        n_interactions=len(items),
    )


def _unseen_negatives(rng: np.random.Generator, n_items: int, seen: list[np.ndarray], k: int) -> np.ndarray:
    """(len(seen), k) shifted item ids drawn uniformly among items each row has not seen.

    Mirrors the protocol's negatives; a few rejection rounds, after which a
    row whose user saw nearly the whole catalogue keeps its rare clashes.
    """
    rows = np.repeat(np.arange(len(seen), dtype=np.int64), [len(s) for s in seen])
    seen_keys = np.unique(rows * (n_items + 1) + np.concatenate(seen)) if len(seen) else np.zeros(0, np.int64)
    out = rng.integers(1, n_items + 1, size=(len(seen), k))
    row_ids = np.arange(len(seen), dtype=np.int64)[:, None]
    for _ in range(10):
        keys = row_ids * (n_items + 1) + out
        pos = np.searchsorted(seen_keys, keys).clip(max=max(0, len(seen_keys) - 1))
        clash = seen_keys[pos] == keys if len(seen_keys) else np.zeros(out.shape, dtype=bool)
        if not clash.any():
            break
        out[clash] = rng.integers(1, n_items + 1, size=int(clash.sum()))
    return out


# --------------------------------------------------------------------------- policy


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block (the setting is process-wide)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SequentialPolicy(Policy):
    """A GRU4Rec or SASRec model trained on one training variant of the protocol split."""

    def __init__(self, arch: str, variant: str, cfg: SeqConfig | None = None, seed: int = 0) -> None:
        if arch not in ARCHS:
            raise ValueError(f"unknown sequential architecture {arch!r}: expected one of {ARCHS}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown training variant {variant!r}: expected one of {VARIANTS}")
        self.arch, self.variant, self.cfg, self.seed = arch, variant, cfg or SeqConfig(), seed
        self.name = f"{arch}-{variant}"
        self.model: _SeqModel | None = None
        self.popularity: np.ndarray | None = None
        self.history: list[dict] = []
        self._stats: dict = {}
        self._score_s = 0.0

    def fit(self, split: TrainSplit) -> None:
        cfg = self.cfg
        start = time.perf_counter()
        rng = np.random.default_rng([self.seed, 0x5E0])
        n_items = split.dataset.n_items
        data = build_sequences(split.for_variant(self.variant), n_items, cfg.max_len, cfg.val_negatives, rng)
        self.popularity = data.popularity
        with _torch_threads(cfg.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**62)))
            neg_gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            model = _MODELS[self.arch](n_items, cfg)
            best_state, best_epoch, best_val = self._train(model, data, rng, neg_gen)
        model.load_state_dict(best_state)
        self.model = model.eval()
        self._stats = {
            "train_s": time.perf_counter() - start,
            "epochs": len(self.history),
            "best_epoch": best_epoch,
            "val_score": best_val,
            "train_fraction": split.fraction(self.variant),
            "train_interactions": data.n_interactions,
            "train_windows": len(data.inputs),
            "params": sum(p.numel() for p in model.parameters()),
        }

    def _train(self, model: _SeqModel, data: _SeqData, rng: np.random.Generator,
               neg_gen: torch.Generator) -> tuple[dict, int, float]:
        """Epochs of shuffled mini-batches; returns the best weights by validation NDCG@10."""
        cfg = self.cfg
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        inputs, targets = torch.from_numpy(data.inputs), torch.from_numpy(data.targets)
        n_items = model.item_emb.num_embeddings - 1
        best_val, best_epoch, best_state = -np.inf, 0, copy.deepcopy(model.state_dict())
        self.history = []
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            total, count = 0.0, 0
            for idx in np.array_split(rng.permutation(len(inputs)), max(1, -(-len(inputs) // cfg.train_batch_size))):
                seq, tgt = inputs[idx], targets[idx]
                mask = tgt > 0
                h = model.encode(seq)[mask]
                pos = tgt[mask]
                if cfg.loss == "ce":
                    logits = h @ model.item_emb.weight[1:].T
                    loss = F.cross_entropy(logits, pos - 1)
                else:
                    neg = torch.randint(1, n_items + 1, pos.shape, generator=neg_gen)
                    pos_logit = (h * model.item_emb(pos)).sum(-1)
                    neg_logit = (h * model.item_emb(neg)).sum(-1)
                    loss = F.softplus(-pos_logit).mean() + F.softplus(neg_logit).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    model.item_emb.weight[0].zero_()
                total += loss.item() * len(pos)
                count += len(pos)
            # without held-out rows, fall back to the training loss as the stopping criterion
            val = self._validate(model, data) if len(data.val_hist) else -total / max(1, count)
            self.history.append({"epoch": epoch, "loss": total / max(1, count), "val_score": val})
            if val > best_val:
                best_val, best_epoch, best_state = val, epoch, copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= cfg.patience:
                break
        return best_state, best_epoch, best_val

    def _validate(self, model: _SeqModel, data: _SeqData) -> float:
        model.eval()
        scores = self._forward_scores(model, data.val_hist, data.val_cands)
        return float(ndcg_single(rank_of(scores, np.zeros(len(scores), dtype=np.int64)), 10).mean())

    @torch.no_grad()
    def _forward_scores(self, model: _SeqModel, hist: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """Scores of shifted candidate ids given left-padded shifted histories, in chunks."""
        out = np.empty(cands.shape, dtype=np.float32)
        step = self.cfg.score_chunk
        for lo in range(0, len(hist), step):
            h = model.encode(torch.from_numpy(hist[lo:lo + step]))[:, -1]
            e = model.item_emb(torch.from_numpy(cands[lo:lo + step]))
            out[lo:lo + step] = torch.einsum("bd,bcd->bc", h, e).numpy()
        return out

    def score(self, batch: RankingBatch) -> np.ndarray:
        if self.model is None or self.popularity is None:
            raise RuntimeError(f"{self.name}: call fit(split) before score(batch)")
        start = time.perf_counter()
        n_items = len(self.popularity)
        cands = np.asarray(batch.candidates, dtype=np.int64)
        hist = np.asarray(batch.history, dtype=np.int64)
        if (cands < 0).any() or (cands >= n_items).any() or (hist < PAD).any() or (hist >= n_items).any():
            raise ValueError(f"{self.name}: batch item indices outside the trained catalogue of {n_items} items")
        # histories are left-padded with PAD; keep the last max_len items, shift ids so 0 = pad
        shifted = np.where(hist == PAD, 0, hist + 1)[:, -self.cfg.max_len:]
        if shifted.shape[1] < self.cfg.max_len:
            shifted = np.pad(shifted, ((0, 0), (self.cfg.max_len - shifted.shape[1], 0)))
        with _torch_threads(self.cfg.threads):
            scores = self._forward_scores(self.model, np.ascontiguousarray(shifted), cands + 1)
        empty = ~(shifted > 0).any(axis=1)
        scores[empty] = np.log1p(self.popularity[cands[empty]])
        self._score_s += time.perf_counter() - start
        return scores

    def stats(self) -> dict:
        return {**self._stats, "score_s": self._score_s}


def _make(arch: str, variant: str, ctx: PolicyContext) -> SequentialPolicy:
    return SequentialPolicy(arch, variant, SeqConfig.from_dict(dict(ctx.options)), seed=ctx.seed)


@takes(SeqConfig)
def make_gru4rec_sample(ctx: PolicyContext) -> SequentialPolicy:
    return _make("gru4rec", "sample", ctx)


@takes(SeqConfig)
def make_gru4rec_full(ctx: PolicyContext) -> SequentialPolicy:
    return _make("gru4rec", "full", ctx)


@takes(SeqConfig)
def make_sasrec_sample(ctx: PolicyContext) -> SequentialPolicy:
    return _make("sasrec", "sample", ctx)


@takes(SeqConfig)
def make_sasrec_full(ctx: PolicyContext) -> SequentialPolicy:
    return _make("sasrec", "full", ctx)
