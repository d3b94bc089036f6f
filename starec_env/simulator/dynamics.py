"""User state dynamics: what changes in a user while the simulation runs.

- no re-consumption: a bit-packed (agents x items) matrix of consumed items
  (one bit per pair: 100k users x 1,000 items take 12.5 MB, so the random
  look-ups stay cache-friendly); consumed items are never offered as
  candidates again;
- genre fatigue: a decaying per-genre count of recent consumption that lowers
  the utility of items of the same genres (it shifts the user's genre block);
- patience: drops on slates the user ignores, moves with the ratings given;
  at zero the user leaves (terminated);
- popularity coupling: decayed click counts shared by all users raise the
  appeal of what others clicked (the multi-agent interaction).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from starec_env.data.model import Dataset
from starec_env.simulator.config import SimulatorConfig

_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], np.uint8)  # set bits per byte


@dataclass
class UserState:
    """Per-agent simulation state (row b = agent b); ``consumed`` is bit-packed, see :meth:`is_consumed`."""

    users: np.ndarray
    consumed: np.ndarray
    n_consumed: np.ndarray
    fatigue: np.ndarray
    patience: np.ndarray
    alive: np.ndarray
    item_clicks: np.ndarray
    n_items: int
    steps: int = 0

    @classmethod
    def start(cls, dataset: Dataset, users: np.ndarray, n_genres: int, cfg: SimulatorConfig) -> "UserState":
        """Fresh state: every item in a user's logged history counts as consumed."""
        users = np.asarray(users, dtype=np.int64)
        n = len(users)
        off = dataset.user_offsets
        counts = off[users + 1] - off[users]
        rows = np.repeat(np.arange(n), counts)
        first = np.repeat(off[users] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        items = dataset.item_arr[first + np.arange(len(rows))]
        consumed = np.zeros((n, (dataset.n_items + 7) // 8), np.uint8)
        np.bitwise_or.at(consumed, (rows, items >> 3), (1 << (items & 7)).astype(np.uint8))
        state = cls(
            users=users,
            consumed=consumed,
            n_consumed=np.zeros(n, np.int64),
            fatigue=np.zeros((n, n_genres), np.float32),
            patience=np.full(n, cfg.patience, np.float32),
            alive=np.ones(n, bool),
            item_clicks=np.zeros(dataset.n_items, np.float64),
            n_items=dataset.n_items,
        )
        state.n_consumed = _POPCOUNT[consumed].sum(axis=1, dtype=np.int64)
        return state

    def is_consumed(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether ``items`` (broadcastable against ``rows``) were consumed by those rows' users."""
        items = np.asarray(items)
        return (self.consumed[rows, items >> 3] >> (items & 7).astype(np.uint8)) & 1 == 1

    def consumed_rows(self, rows: np.ndarray) -> np.ndarray:
        """Unpacked (len(rows), n_items) bool matrix (for analyses and exact fallbacks)."""
        return np.unpackbits(self.consumed[rows], axis=1, count=self.n_items, bitorder="little").astype(bool)

    def effective_users(self, user_emb: np.ndarray, cfg: SimulatorConfig) -> np.ndarray:
        """User vectors shifted by genre fatigue (utility = vector @ item embedding)."""
        vec = user_emb[self.users]
        if cfg.fatigue_weight:
            vec[:, : self.fatigue.shape[1]] -= np.float32(cfg.fatigue_weight) * self.fatigue
        return vec

    def popularity_boost(self, coupling: float) -> np.ndarray | None:
        """Extra appeal per item from everyone's recent clicks (None when uncoupled).

        ``log1p(n_items * share)`` is the same for every item under uniform
        clicking, so only *relative* popularity among users matters, whatever
        the number of agents.
        """
        if not coupling:
            return None
        total = self.item_clicks.sum()
        if total <= 0:
            return None
        share = self.item_clicks * (len(self.item_clicks) / total)
        return (coupling * np.log1p(share)).astype(np.float32)

    def apply(self, clicked: np.ndarray, rating: np.ndarray, genre_rows: np.ndarray, cfg: SimulatorConfig) -> np.ndarray:
        """Update with this step's outcome (``clicked`` item or -1); returns who left."""
        hit = np.flatnonzero(clicked >= 0)
        items = clicked[hit]
        self.consumed[hit, items >> 3] |= (1 << (items & 7)).astype(np.uint8)
        self.n_consumed[hit] += 1
        self.fatigue *= np.float32(cfg.fatigue_decay)
        self.fatigue[hit] += genre_rows
        self.item_clicks *= cfg.coupling_decay
        self.item_clicks += np.bincount(items, minlength=len(self.item_clicks))
        delta = np.full(len(clicked), -cfg.no_click_cost - cfg.step_cost, np.float32)
        delta[hit] = cfg.rating_gain * (rating[hit] - 3.0) - cfg.step_cost
        self.patience = np.minimum(self.patience + delta, np.float32(cfg.patience))
        left = self.alive & (self.patience <= 0)
        self.steps += 1
        return left


class CandidateSampler:
    """Draws candidate items a user has not consumed, without duplicates.

    Each draw is popularity-weighted with probability ``pop_mix`` (the item
    of a random logged interaction) and uniform otherwise. Vectorised over
    users: it draws ``n_candidates + margin`` items per user and walks the
    draw slots in order, reading and then setting each (user, item) bit of
    the packed consumed matrix - a bit already set is a consumed item or a
    repeat - and keeps the first ``n_candidates`` good draws. Users left
    short get a second, longer round; the very few still short are completed
    exactly (see :meth:`_top_up`). The touched rows are restored at the end.
    """

    def __init__(self, interaction_items: np.ndarray, n_items: int, pop_mix: float) -> None:
        self.n_items = int(n_items)
        logged = np.asarray(interaction_items, dtype=np.int32)
        if pop_mix >= 1.0 and len(logged):
            self.pool = logged
        elif pop_mix <= 0.0 or not len(logged):
            self.pool = np.arange(self.n_items, dtype=np.int32)
        else:
            # Uniform part as whole catalogue copies ("virtual interactions").
            copies = max(1, round(len(logged) * (1.0 - pop_mix) / (pop_mix * self.n_items)))
            self.pool = np.concatenate([logged, np.tile(np.arange(self.n_items, dtype=np.int32), copies)])
        counts = np.bincount(self.pool, minlength=self.n_items)
        # Never-drawn items keep a tiny weight so an exact top-up can always fill a row.
        self.log_prob = np.log(np.maximum(counts / len(self.pool), 1e-12))

    def draw(self, shape: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return self.pool[rng.integers(0, len(self.pool), shape)]

    def sample(self, state: UserState, rows: np.ndarray, n_candidates: int, rng: np.random.Generator) -> np.ndarray:
        """(len(rows), n_candidates) distinct items the rows' users have not consumed."""
        packed = state.consumed
        flat = packed.reshape(-1)
        saved = packed[rows]
        out = np.zeros((len(rows), n_candidates), np.int64)
        filled = np.zeros(len(rows), np.int64)
        todo = np.arange(len(rows))
        for k in (n_candidates + max(4, n_candidates // 2), 3 * n_candidates):
            sub_filled = filled[todo]
            sub_out = out[todo]
            self._pass(flat, rows[todo] * packed.shape[1], sub_out, sub_filled, k, rng)
            out[todo], filled[todo] = sub_out, sub_filled
            todo = todo[filled[todo] < n_candidates]
            if not len(todo):
                break
        if len(todo):
            out[todo] = self._top_up(state, rows[todo], out[todo], filled[todo], rng)
        packed[rows] = saved
        return out

    def _pass(self, flat: np.ndarray, base: np.ndarray, out: np.ndarray, filled: np.ndarray, k: int,
              rng: np.random.Generator) -> None:
        """One round of ``k`` draws per row, appending good ones to ``out`` (updates ``filled``)."""
        n_cand = out.shape[1]
        cand = self.draw((k, len(base)), rng)  # slot-major: each slot is one contiguous row
        keep = np.empty(cand.shape, bool)
        count = filled.astype(np.int16)
        for slot in range(k):
            good = _mark(flat, base, cand[slot]) == 0
            count += good
            np.logical_and(good, count <= n_cand, out=keep[slot])
        slot_idx, row_idx = np.nonzero(keep)
        rank = np.cumsum(keep, axis=0, dtype=np.int16)[slot_idx, row_idx] - 1
        out[row_idx, filled[row_idx] + rank] = cand[slot_idx, row_idx]
        np.minimum(count, n_cand, out=filled, casting="unsafe")

    def _top_up(self, state: UserState, rows: np.ndarray, out: np.ndarray, filled: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
        """Fill the rest of short rows exactly: Gumbel-top-k over the items still free.

        Sorting log-probability + Gumbel noise is sequential sampling without
        replacement from the same draw distribution restricted to free items,
        i.e. what further rejection draws would give, in one vectorised pass.
        """
        n_cand = out.shape[1]
        chunk = max(1, 2**22 // self.n_items)
        slots = np.arange(n_cand)[None, :]
        for lo in range(0, len(rows), chunk):
            part = slice(lo, lo + chunk)
            keys = self.log_prob + rng.gumbel(size=(len(rows[part]), self.n_items))
            keys[state.consumed_rows(rows[part])] = -np.inf  # consumed, or already picked above
            top = np.argpartition(-keys, n_cand - 1, axis=1)[:, :n_cand]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
            need = n_cand - filled[part]
            out[part][slots >= filled[part][:, None]] = top[slots < need[:, None]]
        return out


def _mark(flat: np.ndarray, base: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Set the (row, item) bits; returns each bit's previous value (non-zero = was set)."""
    cells = base + (items >> 3)
    bits = np.left_shift(1, items & 7).astype(np.uint8)
    cur = flat[cells]
    flat[cells] = cur | bits
    return cur & bits
