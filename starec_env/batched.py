"""The batched fast path: all agents' arrays in, arrays out.

Each step every live user gets ``n_candidates`` unconsumed items, the agents
score them, the env shows each user the top ``slate_size`` items by score,
the simulator answers (click + rating), the reward function scores the step
and the user state moves on. The PettingZoo dict API is a thin layer over
this class, so both give identical results for the same seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

import numpy as np

from starec_env.config import EnvConfig
from starec_env.data.model import Dataset
from starec_env.simulator import CandidateSampler, UserSimulator, UserState, build_simulator
from starec_env.types import PAD, Feedback, RankingBatch, StepOutcome

RewardFn = Callable[[StepOutcome], np.ndarray]
REWARD_GROUP = "starec.rewards"
_AGENT_STREAM = 0xA6E7  # user sampling for the agents, independent of episode draws


class EnvError(ValueError):
    """Invalid use of the environment (bad action shape, stepping a finished episode...)."""


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
    from starec_env.data import load_dataset

    seed = 0 if cfg.seed is None else int(cfg.seed)
    if cfg.dataset == "synthetic":
        options = dict(cfg.world)
        options.setdefault("n_users", cfg.n_users or 1000)
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
            from starec_env.protocol import LeaveOneOut

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

    # -- public API -----------------------------------------------------------

    @property
    def n_agents(self) -> int:
        return len(self.users)

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
            users = np.asarray(users, dtype=np.int64)
            if users.ndim != 1 or len(users) == 0 or users.min() < 0 or users.max() >= self.dataset.n_users:
                raise EnvError(f"users must be a non-empty 1-d array of indices in [0, {self.dataset.n_users})")
            self.users = users
        self.state = self.simulator.start(self.dataset, self.users)
        self._row_starts = np.arange(self.n_agents, dtype=np.int64) * self.n_candidates  # flat index of each row
        if self.offline:
            self.batch = self.protocol.batch
            return self.batch
        history, ratings = self._initial_history()
        servable = self.dataset.n_items - self.state.n_consumed >= self.n_candidates
        self.state.alive &= servable
        candidates = np.zeros((self.n_agents, self.n_candidates), np.int64)
        rows = np.flatnonzero(self.state.alive)
        candidates[rows] = self.sampler.sample(self.state, rows, self.n_candidates, self._rng)
        self.batch = RankingBatch(self.users, candidates, history, ratings)
        return self.batch

    def step(self, scores: np.ndarray) -> StepResult:
        """Show each live user the top ``slate_size`` candidates by ``scores`` (N, C)."""
        if self.state is None or self.batch is None:
            raise EnvError("call reset() before step()")
        scores = np.asarray(scores, dtype=np.float64)
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
        from starec_env.text import text_view

        if self.batch is None:
            raise EnvError("call reset() before text_view()")
        b = self.batch
        return text_view(self.dataset, int(b.users[row]), b.history[row], b.history_ratings[row], b.candidates[row])

    # -- internals ------------------------------------------------------------

    def _select_users(self, n_users: int | None, seed: int) -> np.ndarray:
        total = self.dataset.n_users
        if n_users is None or n_users == total:
            return np.arange(total, dtype=np.int64)
        if n_users > total:
            raise EnvError(f"n_users={n_users} agents requested but dataset {self.dataset.name!r} has {total} users")
        rng = np.random.default_rng([seed, _AGENT_STREAM])
        return np.sort(rng.choice(total, n_users, replace=False))

    def _initial_history(self) -> tuple[np.ndarray, np.ndarray]:
        """Each agent's last ``history_len`` logged interactions, left-padded."""
        off = self.dataset.user_offsets
        end = off[self.users + 1]
        idx = end[:, None] - self.history_len + np.arange(self.history_len)[None, :]
        valid = idx >= off[self.users][:, None]
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
        exhausted = was_alive & (self.dataset.n_items - st.n_consumed < self.n_candidates)
        terminated = was_alive & (left | exhausted)
        truncated = was_alive & ~terminated & (st.steps >= self.max_cycles)
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
        return StepResult(self.batch, rewards, terminated, truncated, feedback, st.alive.copy(), outcome)

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
        self.state.alive = np.zeros(self.n_agents, bool)
        feedback = Feedback(self.users, slate, clicked, rating)
        return StepResult(batch, rewards, was_alive.copy(), np.zeros(self.n_agents, bool), feedback, self.state.alive.copy(), outcome)
