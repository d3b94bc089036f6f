"""PettingZoo ParallelEnv over :class:`~starec_env.batched.BatchedEnv`: one agent per user.

Agents are named ``"user_<id>"`` after the dataset's original user id. Every
agent has the same numeric spaces:

observation (Dict)
    ``candidates``  MultiDiscrete(C) of item indices;
    ``history``     MultiDiscrete(H) of item indices, oldest first, left-padded
                    with the code ``n_items``;
    ``history_ratings`` Box[0, 5](H) (0 where padded);
    ``candidate_genres`` Box[0, 1](C, G) genre indicators (``dataset.genre_names``);
    ``candidate_popularity`` Box[0, 1](C) interaction count / max count.
action
    Box[-1, 1](C) float32 scores; the ``slate_size`` highest-scored candidates
    are shown. Only the order matters, so scores outside [-1, 1] are accepted
    as well (the bounds are there for RL libraries that squash actions).

Per-agent observations are row views of freshly built batched arrays, which
keeps the dict API fast. Infos are deterministic: ``clicked`` (item index or
-1) and ``rating`` (0 without click) after each step. Language-model
policies read ``env.text_view(agent)`` (an :class:`~starec_env.text.AgentTextView`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec, parallel_to_aec_wrapper

from starec_env.batched import BatchedEnv, EnvError, StepResult
from starec_env.config import EnvConfig
from starec_env.data.model import Dataset
from starec_env.types import PAD, RankingBatch

OBS_KEYS = ("candidates", "history", "history_ratings", "candidate_genres", "candidate_popularity")


class ObservationBuilder:
    """Numeric observation space and batched observation arrays for a dataset."""

    def __init__(self, dataset: Dataset, n_candidates: int, history_len: int) -> None:
        n_items = dataset.n_items
        self.n_items = n_items
        self.item_genres = dataset.item_genres
        pop = dataset.item_popularity
        self.popularity = (pop / max(pop.max(), 1.0)).astype(np.float32)
        g = self.item_genres.shape[1]
        self.observation_space = spaces.Dict({
            "candidates": spaces.MultiDiscrete(np.full(n_candidates, n_items, dtype=np.int64)),
            "history": spaces.MultiDiscrete(np.full(history_len, n_items + 1, dtype=np.int64)),
            "history_ratings": spaces.Box(0.0, 5.0, (history_len,), np.float32),
            "candidate_genres": spaces.Box(0.0, 1.0, (n_candidates, g), np.float32),
            "candidate_popularity": spaces.Box(0.0, 1.0, (n_candidates,), np.float32),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (n_candidates,), np.float32)

    def arrays(self, batch: RankingBatch) -> tuple[np.ndarray, ...]:
        """Batched observation arrays in :data:`OBS_KEYS` order (new arrays every call)."""
        history = np.where(batch.history == PAD, self.n_items, batch.history)
        return (
            batch.candidates.astype(np.int64, copy=True),
            history,
            batch.history_ratings.astype(np.float32, copy=True),
            np.take(self.item_genres, batch.candidates, axis=0),
            np.take(self.popularity, batch.candidates),
        )

    def single(self, batch: RankingBatch, row: int) -> dict[str, np.ndarray]:
        """Observation of one batch row (the single-user env's)."""
        return {k: v[0] for k, v in zip(OBS_KEYS, self.arrays(batch.take(np.array([row]))))}


class StarecParallelEnv(ParallelEnv):
    """Multi-agent STARec environment (see module doc). Keyword options are EnvConfig fields."""

    metadata = {"name": "starec_v0", "render_modes": [], "is_parallelizable": True}
    render_mode = None

    def __init__(
        self,
        cfg: EnvConfig | None = None,
        *,
        dataset: Dataset | str | None = None,
        simulator: Any = None,
        **config: Any,
    ) -> None:
        self.batched = BatchedEnv(cfg, dataset=dataset, simulator=simulator, **config)
        ds, b = self.batched.dataset, self.batched
        ids = ds.users["user_id"].to_numpy()[b.users]
        self.possible_agents = [f"user_{uid}" for uid in ids]
        self._row = {agent: row for row, agent in enumerate(self.possible_agents)}
        self._obs = ObservationBuilder(ds, b.n_candidates, b.history_len)
        self.agents: list[str] = []
        self._rows = np.zeros(0, np.int64)

    # -- spaces (one shared object for every agent) ----------------------------

    def observation_space(self, agent: str) -> spaces.Dict:
        return self._obs.observation_space

    def action_space(self, agent: str) -> spaces.Box:
        return self._obs.action_space

    @property
    def max_cycles(self) -> int:
        return self.batched.max_cycles

    @max_cycles.setter
    def max_cycles(self, value: int) -> None:
        self.batched.max_cycles = int(value)

    @property
    def dataset(self) -> Dataset:
        return self.batched.dataset

    @property
    def simulator(self):
        return self.batched.simulator

    # -- episode ---------------------------------------------------------------

    def reset(self, seed: int | None = None, options: dict | None = None):
        batch = self.batched.reset(seed=seed)
        self._rows = np.flatnonzero(self.batched.alive)
        self.agents = [self.possible_agents[r] for r in self._rows.tolist()]
        obs = self._observations(batch, self._rows)
        return obs, {agent: {} for agent in self.agents}

    def step(self, actions: dict[str, np.ndarray]):
        scores = self._scores(actions)
        res = self.batched.step(scores)
        rows, agents = self._rows, self.agents
        obs = self._observations(res.batch, rows)
        rewards = dict(zip(agents, res.rewards[rows].tolist()))
        terms = dict(zip(agents, res.terminated[rows].tolist()))
        truncs = dict(zip(agents, res.truncated[rows].tolist()))
        infos = self._infos(res, rows, agents)
        self._rows = rows[res.alive[rows]]
        self.agents = [self.possible_agents[r] for r in self._rows.tolist()]
        return obs, rewards, terms, truncs, infos

    def text_view(self, agent: str):
        """Profile, history and candidates of ``agent`` with titles/genres/years (for LLM policies)."""
        return self.batched.text_view(self.agent_row(agent))

    def agent_row(self, agent: str) -> int:
        """Row of ``agent`` in the batched arrays (``self.batched``)."""
        try:
            return self._row[agent]
        except KeyError:
            raise EnvError(f"unknown agent {agent!r}; agents are named like {self.possible_agents[0]!r}") from None

    def render(self) -> None:
        return None

    def close(self) -> None:
        return None

    # -- internals -------------------------------------------------------------

    def _scores(self, actions: dict[str, np.ndarray]) -> np.ndarray:
        n_cand = self.batched.n_candidates
        scores = np.zeros((self.batched.n_agents, n_cand), np.float64)
        live = self.agents
        missing = [a for a in live if a not in actions]
        if missing:
            raise EnvError(f"no action for live agent(s) {missing[:5]}{'...' if len(missing) > 5 else ''}")
        try:
            stacked = np.asarray([actions[a] for a in live], dtype=np.float64)
        except ValueError:
            stacked = None
        if stacked is None or stacked.shape != (len(live), n_cand):
            bad = next(a for a in live if np.shape(actions[a]) != (n_cand,))
            raise EnvError(f"action of {bad!r} has shape {np.shape(actions[bad])}; expected ({n_cand},) scores")
        scores[self._rows] = stacked
        return scores

    def _observations(self, batch: RankingBatch, rows: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """Per-agent observations: row views of the batched arrays (keys in :data:`OBS_KEYS` order)."""
        part = batch if len(rows) == len(batch) else batch.take(rows)
        names = [self.possible_agents[r] for r in rows.tolist()]
        # A dict display with constant keys builds each small dict fastest.
        return {
            agent: {"candidates": c, "history": h, "history_ratings": r, "candidate_genres": g, "candidate_popularity": p}
            for agent, c, h, r, g, p in zip(names, *self._obs.arrays(part))
        }

    def _infos(self, res: StepResult, rows: np.ndarray, agents: list[str]) -> dict[str, dict]:
        clicked = res.feedback.clicked[rows].tolist()
        rating = res.feedback.rating[rows].tolist()
        return {a: {"clicked": c, "rating": r} for a, c, r in zip(agents, clicked, rating)}


def parallel_env(**config: Any) -> StarecParallelEnv:
    """The multi-agent environment (PettingZoo ParallelEnv); options are EnvConfig fields."""
    return StarecParallelEnv(**config)


def raw_env(**config: Any) -> parallel_to_aec_wrapper:
    """The AEC form without PettingZoo's order-enforcing wrapper."""
    return parallel_to_aec_wrapper(StarecParallelEnv(**config))


def env(**config: Any):
    """The AEC form (agents act in turn), wrapped to enforce PettingZoo's call order."""
    return parallel_to_aec(StarecParallelEnv(**config))
