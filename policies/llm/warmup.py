"""Memory warm-up: slow thinking over a user's recent history before a ranking.

In the paper's offline protocol the agent ranks the held-out candidates once,
so without a warm-up its preference memory would always be empty and slow
thinking would never run. Before an agent first ranks a user, it therefore
*walks* the last ``steps`` interactions of the user's history in time order.
At each step it ranks a candidate set made as in the protocol (the item the
user actually took among ``candidates - 1`` items the user never touched),
sees what the user chose and how they rated it, reflects and rewrites the
memory. The ranking then reads the final memory.

Only the history the ranking itself sees is walked (the batch's history,
i.e. everything before the held-out target), and negatives come from items
the user never interacted with, so the held-out item and everything after
it never appear during the walk.

Walks are keyed on ``(seed, user)`` and memories are cached on disk per
model checkpoint and settings (:class:`MemoryCache`), so repeated
evaluations and other evaluation seeds reuse them. Each cache file is also
the memory log: one JSON line per user with the memory after every step.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from starec_env.configtools import config_from_dict
from starec_env.files import atomic_write
from starec_env.protocol import sample_unseen
from starec_env.types import PAD, RankingBatch

#: Random stream of walk negatives (separate from every other draw of the seed).
WALK_STREAM = 0x3A1C


@dataclass(frozen=True)
class WarmupConfig:
    """``steps``: interactions walked (the paper's history length for slow
    thinking, k); ``candidates``: size of each walk step's candidate set;
    ``max_new_tokens``: the reflection budget. ``steps = 0`` turns the
    warm-up off. (The walks' seed is the agent's ``walk_seed``: the world's
    seed, not the evaluation seed, so every evaluation seed reuses the same
    memories.)"""

    steps: int = 2
    candidates: int = 5
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"warmup.steps must be >= 0, got {self.steps}")
        if self.candidates < 2:
            raise ValueError(f"warmup.candidates must be >= 2 (the chosen item and a negative), got {self.candidates}")
        if self.max_new_tokens < 8:
            raise ValueError(f"warmup.max_new_tokens must be >= 8 (a note needs room), got {self.max_new_tokens}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WarmupConfig":
        return config_from_dict(cls, data, "warmup")


@dataclass(frozen=True)
class Walk:
    """One user's walk: per step, the history before it, the candidate set and
    the position of the item the user took there, with its rating."""

    user: int
    items: tuple[int, ...]  # the walked items, in time order
    histories: list[np.ndarray]
    history_ratings: list[np.ndarray]
    candidates: list[np.ndarray]
    chosen: list[int]
    ratings: list[float]

    @property
    def key(self) -> str:
        """Identifies the walk's content (a changed history gives a new walk)."""
        return f"{self.user}:{','.join(map(str, self.items))}:{','.join(f'{r:g}' for r in self.ratings)}"


def plan_walk(
    dataset: Any, user: int, history: np.ndarray, ratings: np.ndarray, config: WarmupConfig, seed: int = 0
) -> Walk:
    """The walk over the last ``config.steps`` items of ``history`` (item
    indices, oldest first, PAD entries ignored). Negatives avoid every item
    the user ever interacted with; draws are keyed on (seed, user)."""
    keep = np.asarray(history) != PAD
    items = np.asarray(history, dtype=np.int64)[keep]
    rates = np.asarray(ratings, dtype=np.float32)[keep]
    k = min(config.steps, len(items))
    rng = np.random.default_rng([seed, WALK_STREAM, int(user)])
    seen = dataset.item_arr[dataset.user_offsets[user] : dataset.user_offsets[user + 1]]
    seen = np.union1d(seen, items)
    hists, hrates, cands, chosen, stars = [], [], [], [], []
    for t in range(len(items) - k, len(items)):
        negatives = sample_unseen(rng, dataset.n_items, seen, config.candidates - 1)
        pos = int(rng.integers(len(negatives) + 1))
        hists.append(items[:t])
        hrates.append(rates[:t])
        cands.append(np.insert(negatives, pos, items[t]))
        chosen.append(pos)
        stars.append(float(rates[t]))
    return Walk(int(user), tuple(int(i) for i in items[len(items) - k :]), hists, hrates, cands, chosen, stars)


def step_batch(walks: list[Walk], step: int, history_len: int) -> RankingBatch:
    """The rankings of every walk's ``step``-th step as one batch (histories
    left-padded to ``history_len``)."""
    n = len(walks)
    hist = np.full((n, history_len), PAD, dtype=np.int64)
    rates = np.zeros((n, history_len), dtype=np.float32)
    for row, walk in enumerate(walks):
        h = walk.histories[step][-history_len:]
        if len(h):
            hist[row, history_len - len(h) :] = h
            rates[row, history_len - len(h) :] = walk.history_ratings[step][-history_len:]
    cands = np.stack([w.candidates[step] for w in walks])
    return RankingBatch(np.array([w.user for w in walks], dtype=np.int64), cands, hist, rates)


def model_fingerprint(name: str, seed: int = 0) -> str:
    """Identifies a checkpoint: a local folder by its path and the size and
    modification time of its files (retraining in place changes it), a
    built-in name by the name (and seed, for the seeded toy model)."""
    path = Path(name)
    if not path.is_dir():
        return f"{name}#{seed}"
    parts = [str(path.resolve())]
    for f in sorted(path.iterdir()):
        if f.is_file():
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


class MemoryCache:
    """Warm-up memories on disk: one JSON-lines file per (checkpoint, settings).

    Each line is one user's walk: ``{"user", "walk", "steps": [{"item",
    "chosen_rank", "rating", "memory"}, ...], "memory"}``. Lines are appended
    whole and flushed; a torn last line (a killed run) is ignored on load.
    ``folder=None`` keeps memories in this process only.
    """

    def __init__(self, folder: str | Path | None, settings: dict) -> None:
        blob = json.dumps(settings, sort_keys=True, default=str)
        self.key = hashlib.sha256(blob.encode()).hexdigest()[:12]
        self.settings = settings
        self.path = Path(folder) / f"memories-{self.key}.jsonl" if folder is not None else None
        self._entries: dict[str, dict] = {}
        self.hits = 0
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and "walk_key" in entry and "memory" in entry:
                    self._entries[entry["walk_key"]] = entry

    def get(self, walk: Walk) -> dict | None:
        entry = self._entries.get(walk.key)
        self.hits += entry is not None
        return entry

    def put(self, walk: Walk, steps: list[dict], memory: str) -> None:
        entry = {"walk_key": walk.key, "user": walk.user, "walk": list(walk.items), "steps": steps, "memory": memory}
        self._entries[walk.key] = entry
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            text = json.dumps(self.settings, indent=2, sort_keys=True, default=str).encode()
            atomic_write(self.path.with_suffix(".json"), lambda fh: fh.write(text))
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()

    def __len__(self) -> int:
        return len(self._entries)


def cache_settings(model: str, model_seed: int, config: WarmupConfig, walk_seed: int, extra: dict) -> dict:
    """What a cached memory depends on: the checkpoint, the walk and the prompts."""
    return {"model": model_fingerprint(model, model_seed), "warmup": asdict(config), "walk_seed": walk_seed, **extra}
