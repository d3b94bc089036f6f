"""The batched fast path: all agents' arrays in, arrays out.

Each step every live user gets ``n_candidates`` unconsumed items, the agents
score them, the env shows each user the top ``slate_size`` items by score,
the simulator answers (click + rating), the reward function scores the step
and the user state moves on. The PettingZoo dict API is a thin layer over
this class, so both give identical results for the same seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import entry_points
from typing import Any, Callable

import numpy as np
from gymnasium import spaces

from starec_env.config import EnvConfig
from starec_env.data import load_dataset
from starec_env.data.model import Dataset
from starec_env.errors import EnvError, check_int
from starec_env.features import EpisodeCounters, FeatureBuilder
from starec_env.protocol import LeaveOneOut
from starec_env.simulator import CandidateSampler, UserSimulator, UserState, build_simulator
from starec_env.text import text_view
from starec_env.types import PAD, Feedback, RankingBatch, StepOutcome

__all__ = ["BatchedEnv", "EnvError", "StepResult", "load_env_dataset", "resolve_reward", "top_slate"]

RewardFn = Callable[[StepOutcome], np.ndarray]
REWARD_GROUP = "starec.rewards"
_AGENT_STREAM = 0xA6E7  # user sampling for the agents, independent of episode draws
#: Smallest synthetic world built for a few agents: a world of one user keeps only the
#: items that user consumed, leaving nothing to recommend.
MIN_SYNTHETIC_USERS = 100


@dataclass(frozen=True)
class StepResult:
    """One batched step: the next batch and per-user (N,) results.

    ``terminated``: the user left (patience exhausted, nothing left to offer,
    or the single offline step); ``truncated``: ``max_cycles`` reached;
    ``alive``: still acting after this step. ``outcome`` is what the reward
    function saw.
    """

    batch: RankingBatch
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    feedback: Feedback
    alive: np.ndarray
    outcome: StepOutcome


#: Names of the user aggregates at the end of :meth:`BatchedEnv.global_state`, each in [0, 1].
STATE_AGGREGATES = ("live_share", "mean_patience", "mean_progress", "mean_consumed_share")


def as_scores(scores: Any, name: str) -> np.ndarray:
    """``scores`` as a float64 array (bools count as 0/1); strings, None and objects are an :class:`EnvError` naming ``name``."""
    try:
        arr = np.asarray(scores)
    except ValueError as err:  # ragged nested sequences
        raise EnvError(f"{name}: expected an array of numeric scores, got {type(scores).__name__} ({err})") from None
    if arr.dtype.kind not in "biuf":
        raise EnvError(f"{name}: expected numeric scores, got dtype {arr.dtype} ({str(scores)[:60]})")
    return arr.astype(np.float64, copy=False)


def top_slate(scores: np.ndarray, k: int) -> np.ndarray:
    """Candidate positions of the ``k`` best scores per row, best first (ties: lower position).

    Scores are compared as float32 (the action space's precision): each is
    mapped to an order-preserving integer and packed with its position into
    one int64 key, so a plain row sort - much faster than ``argsort`` on
    short rows - gives the ranking with deterministic tie-breaking.
    """
    n_cand = scores.shape[1]
    bits = max(1, int(n_cand - 1).bit_length())
    raw = np.ascontiguousarray(scores, dtype=np.float32).view(np.int32)
    ordered = np.where(raw < 0, raw ^ np.int32(0x7FFFFFFF), raw)  # monotone in the float value
    key = np.subtract(np.int64(0x7FFFFFFF), ordered, dtype=np.int64)  # best first
    key <<= bits
    key |= np.arange(n_cand)
    key.sort(axis=1)
    return key[:, :k] & ((1 << bits) - 1)


def resolve_reward(spec: str | RewardFn) -> RewardFn:
    """A reward callable, or its name in the ``starec.rewards`` entry-point group."""
    if callable(spec):
        return spec
    eps = {ep.name: ep for ep in entry_points(group=REWARD_GROUP)}
    if spec not in eps:
        known = ", ".join(sorted(eps)) or "none (is the package installed? run `pip install -e .`)"
        raise ValueError(f"unknown reward {spec!r}; known rewards: {known}; or pass a callable(StepOutcome) -> array")
    return eps[spec].load()


def load_env_dataset(cfg: EnvConfig) -> Dataset:
    """The dataset named by the config (or the Dataset it carries)."""
    if isinstance(cfg.dataset, Dataset):
        return cfg.dataset

    seed = 0 if cfg.seed is None else int(cfg.seed)
    if cfg.dataset == "synthetic":
        options = dict(cfg.world)
        options.setdefault("n_users", max(cfg.n_users or 1000, MIN_SYNTHETIC_USERS))
        return load_dataset("synthetic", seed=seed, **options)
    return load_dataset(cfg.dataset, cfg.data_dir, seed=seed, **cfg.data_options)


class BatchedEnv:
    """Vectorised multi-user recommendation environment (see module doc).

    ``users`` are the dataset user indices of the agents (row b = agent b).
    ``dataset`` is a loader name or a ready Dataset; pass ``simulator`` to
    reuse an already built one. Keyword options override ``cfg`` fields.
    """

    def __init__(
        self,
        cfg: EnvConfig | None = None,
        *,
        dataset: Dataset | str | None = None,
        simulator: UserSimulator | None = None,
        **overrides: Any,
    ) -> None:
        cfg = cfg or EnvConfig()
        if dataset is not None:
            overrides["dataset"] = dataset  # a loader name or a ready Dataset
        if overrides:
            cfg = cfg.replace(**overrides)
        self.cfg = cfg
        self.dataset = load_env_dataset(cfg)
        world_seed = 0 if cfg.seed is None else int(cfg.seed)
        self.simulator = simulator if simulator is not None else build_simulator(self.dataset, cfg.simulator, world_seed)
        pref = self.simulator.preference
        if (pref.n_users, pref.n_items) != (self.dataset.n_users, self.dataset.n_items):
            raise EnvError(
                f"simulator covers {pref.n_users} users x {pref.n_items} items but dataset "
                f"{self.dataset.name!r} has {self.dataset.n_users} x {self.dataset.n_items}: build it on the same dataset"
            )
        if self.dataset.n_items < cfg.n_candidates:
            raise EnvError(
                f"dataset {self.dataset.name!r} has {self.dataset.n_items} items, fewer than n_candidates={cfg.n_candidates}"
            )
        self.offline = cfg.mode == "offline"
        self.reward_fn = resolve_reward(cfg.reward if cfg.reward is not None else ("ndcg" if self.offline else "click_rating"))
        # Candidate utilities cost as much as the rest of a step: computed only
        # for reward functions that read them (unknown callables are assumed to).
        self._needs_utilities = bool(getattr(self.reward_fn, "needs_utilities", True))
        self.max_cycles = cfg.max_cycles
        self.n_candidates, self.slate_size, self.history_len = cfg.n_candidates, cfg.slate_size, cfg.history_len
        self.sampler = CandidateSampler(self.dataset.item_arr, self.dataset.n_items, cfg.candidate_pop_mix)
        self.protocol = None
        if self.offline:
            self.protocol = LeaveOneOut(
                self.dataset, n_negatives=cfg.n_candidates - 1, n_users=cfg.n_users,
                history_len=cfg.history_len, positive_threshold=cfg.positive_threshold, seed=world_seed,
            )
            self.users = self.protocol.users.copy()
        else:
            self.users = self._select_users(cfg.n_users, world_seed)
        self._rng: np.random.Generator | None = None
        self._row_starts = np.zeros(0, np.int64)
        self.state: UserState | None = None
        self.batch: RankingBatch | None = None
        self.counters = EpisodeCounters.zeros(0)
        #: The last step's result (what ``render`` shows); None right after reset.
        self.last: StepResult | None = None

    # -- public API -----------------------------------------------------------

    @property
    def n_agents(self) -> int:
        return len(self.users)

    @property
    def max_cycles(self) -> int:
        return self._max_cycles

    @max_cycles.setter
    def max_cycles(self, value: int) -> None:
        self._max_cycles = check_int("max_cycles", value, minimum=1)

    @cached_property
    def eligible_users(self) -> np.ndarray:
        """Dataset users who can be served: at least ``n_candidates`` items they have not consumed."""
        off = self.dataset.user_offsets
        limit = self.dataset.n_items - self.n_candidates
        rows = np.flatnonzero(np.diff(off) > limit)  # only these can have too few distinct free items
        ok = np.ones(self.dataset.n_users, bool)
        for u in rows.tolist():
            ok[u] = len(np.unique(self.dataset.item_arr[off[u]:off[u + 1]])) <= limit
        return np.flatnonzero(ok)

    @cached_property
    def feature_builder(self) -> FeatureBuilder:
        """The feature layout (built on first use: it fits item embeddings on the logged data)."""
        seed = 0 if self.cfg.seed is None else self.cfg.seed
        return FeatureBuilder(self.dataset, self.n_candidates, self.history_len, seed)

    def features(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(len(rows), D) feature observations of the current batch (all rows by default)."""
        batch, counters = self._current(), self.counters
        if rows is not None:
            batch = batch.take(rows)
            counters = EpisodeCounters(counters.steps[rows], counters.clicks[rows],
                                       counters.miss_streak[rows], counters.last_rating[rows])
        return self.feature_builder.compute(batch, counters, self.max_cycles)

    @cached_property
    def state_space(self) -> spaces.Box:
        """Space of :meth:`global_state`: item click shares, genre click shares, user aggregates."""
        g = self.simulator.preference.n_genres
        dim = self.dataset.n_items + 2 * g + len(STATE_AGGREGATES)
        low = np.concatenate([np.zeros(self.dataset.n_items + g, np.float32), -np.ones(g, np.float32),
                              np.zeros(len(STATE_AGGREGATES), np.float32)])
        return spaces.Box(low, np.ones(dim, np.float32), (dim,), np.float32)

    def global_state(self) -> np.ndarray:
        """The world as a centralised critic sees it (see :data:`STATE_AGGREGATES`).

        ``item_clicks / max``: the decayed shared click counts behind
        popularity coupling; the same summed per genre (share of the total);
        the live users' mean genre fatigue squashed by x / (1 + |x|); then
        the aggregates of :data:`STATE_AGGREGATES`.
        """
        st = self._state()
        clicks = st.item_clicks
        top = clicks.max()
        item_share = clicks / top if top > 0 else np.zeros_like(clicks)
        per_genre = clicks @ self.dataset.item_genres
        total = per_genre.sum()
        genre_share = per_genre / total if total > 0 else per_genre
        live = st.alive
        n_live = int(live.sum())
        fatigue = st.fatigue[live].mean(axis=0) if n_live else np.zeros(st.fatigue.shape[1], np.float32)
        patience = float(np.clip(st.patience[live], 0.0, None).mean() / max(self.cfg.simulator.patience, 1e-9)) if n_live else 0.0
        aggregates = [
            n_live / max(self.n_agents, 1),
            min(patience, 1.0),
            float(np.minimum(self.counters.steps / self.max_cycles, 1.0).mean()) if self.n_agents else 0.0,
            float((st.n_consumed / self.dataset.n_items).mean()) if self.n_agents else 0.0,
        ]
        out = np.concatenate([item_share, genre_share, fatigue / (1.0 + np.abs(fatigue)), aggregates]).astype(np.float32)
        return np.clip(out, self.state_space.low, self.state_space.high)

    @property
    def alive(self) -> np.ndarray:
        if self.state is None:
            raise EnvError("call reset() before reading alive")
        return self.state.alive

    def reset(self, seed: int | None = None, users: np.ndarray | None = None) -> RankingBatch:
        """Start an episode for all agents (or the given dataset ``users``, online only).

        ``seed`` reseeds the episode generator; without it the first reset
        uses ``cfg.seed`` and later resets continue the same stream.
        """
        if seed is not None:
            self._rng = np.random.default_rng(int(seed))
        elif self._rng is None:
            self._rng = np.random.default_rng(self.cfg.seed)
        if users is not None:
            if self.offline:
                raise EnvError("offline mode evaluates the protocol's users; `users` cannot be chosen")
            self.users = self._check_users(users)
        self.state = self.simulator.start(self.dataset, self.users)
        self._row_starts = np.arange(self.n_agents, dtype=np.int64) * self.n_candidates  # flat index of each row
        self.counters = EpisodeCounters.zeros(self.n_agents)
        self.last = None
        if self.offline:
            self.batch = self.protocol.batch
            return self.batch
        history, ratings = self._initial_history(self.users)
        servable = self.dataset.n_items - self.state.n_consumed >= self.n_candidates
        self.state.alive &= servable
        candidates = np.zeros((self.n_agents, self.n_candidates), np.int64)
        rows = np.flatnonzero(self.state.alive)
        candidates[rows] = self.sampler.sample(self.state, rows, self.n_candidates, self._rng)
        self.batch = RankingBatch(self.users, candidates, history, ratings)
        return self.batch

    def replace(self, rows: np.ndarray, users: np.ndarray) -> RankingBatch:
        """Start fresh episodes for dataset ``users`` in agent ``rows`` (online only); others go on.

        The shared world (popularity coupling) carries over: this is how the
        vector env keeps every slot busy when a user leaves.
        """
        st = self._state()
        if self.offline:
            raise EnvError("offline mode evaluates the protocol's users; rows cannot be replaced")
        rows = np.asarray(rows, dtype=np.int64)
        users = self._check_users(users)
        if rows.shape != users.shape or (len(rows) and (rows.min() < 0 or rows.max() >= self.n_agents)):
            raise EnvError(f"rows must be {users.shape} agent rows in [0, {self.n_agents}), got {rows!r}")
        if not len(rows):
            return self.batch
        fresh = self.simulator.start(self.dataset, users)
        st.consumed = np.ascontiguousarray(st.consumed)
        for name in ("consumed", "n_consumed", "fatigue", "patience"):
            getattr(st, name)[rows] = getattr(fresh, name)
        self.users = self.users.copy()
        self.users[rows] = users
        st.users = self.users
        st.alive[rows] = self.dataset.n_items - st.n_consumed[rows] >= self.n_candidates
        self.counters.restart(rows)
        b = self.batch
        history, ratings, candidates = b.history.copy(), b.history_ratings.copy(), b.candidates.copy()
        history[rows], ratings[rows] = self._initial_history(users)
        live = rows[st.alive[rows]]
        candidates[live] = self.sampler.sample(st, live, self.n_candidates, self._rng)
        self.batch = RankingBatch(self.users, candidates, history, ratings)
        return self.batch

    def step(self, scores: np.ndarray) -> StepResult:
        """Show each live user the top ``slate_size`` candidates by ``scores`` (N, C)."""
        if self.state is None or self.batch is None:
            raise EnvError("call reset() before step()")
        scores = as_scores(scores, "scores")
        expected = (self.n_agents, self.n_candidates)
        if scores.shape != expected:
            raise EnvError(f"scores have shape {scores.shape}; expected {expected} (agents x candidates)")
        was_alive = self.state.alive.copy()
        if not was_alive.any():
            raise EnvError("every user is done; call reset() to start a new episode")
        # A finite total proves every score finite (one pass, no temporary); else check exactly.
        if not np.isfinite(np.add.reduce(scores, axis=None)) and not np.isfinite(scores[was_alive]).all():
            raise EnvError("scores of live agents contain NaN/inf; expected finite numbers")
        return self._step_offline(scores, was_alive) if self.offline else self._step_online(scores, was_alive)

    def text_view(self, row: int):
        """LLM-readable view (profile, history, candidates) of agent row ``row`` now."""
        b = self._current()
        return text_view(self.dataset, int(b.users[row]), b.history[row], b.history_ratings[row], b.candidates[row])

    # -- internals ------------------------------------------------------------

    def _state(self) -> UserState:
        if self.state is None:
            raise EnvError("call reset() first: the episode has not started")
        return self.state

    def _current(self) -> RankingBatch:
        if self.batch is None:
            raise EnvError("call reset() first: the episode has not started")
        return self.batch

    def _check_users(self, users: Any) -> np.ndarray:
        users = np.asarray(users)
        n = self.dataset.n_users
        if users.ndim != 1 or len(users) == 0 or users.dtype.kind not in "iu" or users.min() < 0 or users.max() >= n:
            raise EnvError(f"users must be a non-empty 1-d array of integer indices in [0, {n}), got {users!r}")
        return users.astype(np.int64)

    def _select_users(self, n_users: int | None, seed: int) -> np.ndarray:
        """The agents: ``n_users`` servable users drawn with the world seed (all when None)."""
        total = self.dataset.n_users
        eligible = self.eligible_users
        if n_users is None and len(eligible) == total:
            return np.arange(total, dtype=np.int64)
        if n_users is None:
            return eligible.copy()
        if n_users > len(eligible):
            short = total - len(eligible)
            unservable = f", {short} of whom have fewer than n_candidates={self.n_candidates} unconsumed items" if short else ""
            raise EnvError(f"n_users={n_users} agents requested but dataset {self.dataset.name!r} has {total} users{unservable}")
        if n_users == total:
            return np.arange(total, dtype=np.int64)
        rng = np.random.default_rng([seed, _AGENT_STREAM])
        if len(eligible) == total:
            return np.sort(rng.choice(total, n_users, replace=False))
        return np.sort(rng.choice(eligible, n_users, replace=False))

    def _initial_history(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each given user's last ``history_len`` logged interactions, left-padded."""
        off = self.dataset.user_offsets
        end = off[users + 1]
        idx = end[:, None] - self.history_len + np.arange(self.history_len)[None, :]
        valid = idx >= off[users][:, None]
        idx = np.where(valid, idx, 0)
        history = np.where(valid, self.dataset.item_arr[idx], PAD)
        ratings = np.where(valid, self.dataset.rating_arr[idx], np.float32(0.0)).astype(np.float32)
        return history, ratings

    def _step_online(self, scores: np.ndarray, was_alive: np.ndarray) -> StepResult:
        sim, st, batch, rng = self.simulator, self.state, self.batch, self._rng
        order = top_slate(scores, self.slate_size)
        slate = np.take(batch.candidates, order + self._row_starts[:, None], mode="clip")  # in range
        vectors = sim.user_vectors(st)
        slate_util = sim.current_utility(st, slate, vectors)
        util = sim.current_utility(st, batch.candidates, vectors) if self._needs_utilities else None
        clicked, rating = sim.respond(st, slate, slate_util, rng, self.cfg.popularity_coupling, was_alive)
        outcome = StepOutcome(batch, scores, slate, order, clicked, rating, util, None, was_alive)
        rewards = np.where(was_alive, np.asarray(self.reward_fn(outcome), dtype=np.float64), 0.0)

        left = sim.update(st, clicked, rating)
        self.counters.record(was_alive, clicked, rating)
        exhausted = was_alive & (self.dataset.n_items - st.n_consumed < self.n_candidates)
        terminated = was_alive & (left | exhausted)
        truncated = was_alive & ~terminated & (self.counters.steps >= self.max_cycles)
        st.alive = was_alive & ~terminated & ~truncated

        history, ratings = batch.history.copy(), batch.history_ratings.copy()
        hit = np.flatnonzero(clicked >= 0)
        history[hit, :-1] = history[hit, 1:]
        history[hit, -1] = clicked[hit]
        ratings[hit, :-1] = ratings[hit, 1:]
        ratings[hit, -1] = rating[hit]
        rows = np.flatnonzero(st.alive)
        fresh = self.sampler.sample(st, rows, self.n_candidates, rng)
        if len(rows) == self.n_agents:
            candidates = fresh
        else:
            candidates = batch.candidates.copy()
            candidates[rows] = fresh
        self.batch = RankingBatch(self.users, candidates, history, ratings)
        feedback = Feedback(self.users, slate, clicked, rating)
        self.last = StepResult(self.batch, rewards, terminated, truncated, feedback, st.alive.copy(), outcome)
        return self.last

    def _step_offline(self, scores: np.ndarray, was_alive: np.ndarray) -> StepResult:
        """The paper's protocol as one step: reward = NDCG of the held-out target."""
        p, batch = self.protocol, self.batch
        order = top_slate(scores, self.slate_size)
        slate = np.take_along_axis(batch.candidates, order, axis=1)
        util = self.simulator.utility(batch.users, batch.candidates)
        clicked = np.where(was_alive, p.targets, -1)
        rating = np.where(was_alive, self.dataset.rating_arr[p.target_rows], np.float32(0.0))
        outcome = StepOutcome(batch, scores, slate, order, clicked, rating, util, p.target_pos, was_alive)
        rewards = np.where(was_alive, np.asarray(self.reward_fn(outcome), dtype=np.float64), 0.0)
        self.state.steps += 1
        self.counters.record(was_alive, clicked, rating)
        self.state.alive = np.zeros(self.n_agents, bool)
        feedback = Feedback(self.users, slate, clicked, rating)
        self.last = StepResult(batch, rewards, was_alive.copy(), np.zeros(self.n_agents, bool), feedback,
                               self.state.alive.copy(), outcome)
        return self.last
