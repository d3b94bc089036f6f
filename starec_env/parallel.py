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

With ``observation="features"`` the observation is instead a flat float32
Box of per-candidate features (:mod:`starec_env.features`), no ids.

Per-agent observations are row views of freshly built batched arrays, which
keeps the dict API fast. Infos are deterministic: ``clicked`` (item index or
-1) and ``rating`` (0 without click) after each step. Language-model
policies read ``env.text_view(agent)`` (an :class:`~starec_env.text.AgentTextView`).

``fixed_agents=True`` keeps every agent listed until all are done: departed
users report terminated, zero observation and reward, ``{}`` infos, and their
actions are ignored (the layout SuperSuit's vector env and TorchRL's
wrapper expect). ``state()`` / ``state_space`` give the global state for
centralised critics; ``render_mode`` "ansi" / "human" draws one user's slate.
Every misuse (stepping before ``reset()`` or after the episode, actions
for unknown or departed agents, wrong shapes, non-numeric or NaN scores)
raises :class:`~starec_env.errors.EnvError` naming the agent.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec, parallel_to_aec_wrapper

from starec_env.batched import BatchedEnv, StepResult, as_scores
from starec_env.config import EnvConfig
from starec_env.data.model import Dataset
from starec_env.errors import EnvError, check_int
from starec_env.render import RENDER_MODES, check_render_mode, render
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

    metadata = {"name": "starec_v0", "render_modes": list(RENDER_MODES), "is_parallelizable": True, "render_fps": 1}

    def __init__(
        self,
        cfg: EnvConfig | None = None,
        *,
        dataset: Dataset | str | None = None,
        simulator: Any = None,
        render_mode: str | None = None,
        **config: Any,
    ) -> None:
        self.render_mode = check_render_mode(render_mode)
        self.batched = BatchedEnv(cfg, dataset=dataset, simulator=simulator, **config)
        ds, b = self.batched.dataset, self.batched
        ids = ds.users["user_id"].to_numpy()[b.users]
        self.possible_agents = [f"user_{uid}" for uid in ids]
        self._row = {agent: row for row, agent in enumerate(self.possible_agents)}
        self._obs = ObservationBuilder(ds, b.n_candidates, b.history_len)
        self.features_obs = b.cfg.observation == "features"
        self.fixed_agents = b.cfg.fixed_agents
        self._space = b.feature_builder.observation_space if self.features_obs else self._obs.observation_space
        self.agents: list[str] = []
        self._rows = np.zeros(0, np.int64)  # rows of the agents acting next step
        self._focus = 0  # the row render() shows

    # -- spaces (one shared object for every agent) ----------------------------

    def observation_space(self, agent: str) -> spaces.Space:
        return self._space

    def action_space(self, agent: str) -> spaces.Box:
        return self._obs.action_space

    @property
    def state_space(self) -> spaces.Box:
        """Space of :meth:`state` (see :meth:`~starec_env.batched.BatchedEnv.global_state`)."""
        return self.batched.state_space

    def state(self) -> np.ndarray:
        """Global state for centralised critics: shared click counts plus aggregate user state."""
        return self.batched.global_state()

    @property
    def max_cycles(self) -> int:
        return self.batched.max_cycles

    @max_cycles.setter
    def max_cycles(self, value: int) -> None:
        self.batched.max_cycles = value

    @property
    def dataset(self) -> Dataset:
        return self.batched.dataset

    @property
    def simulator(self):
        return self.batched.simulator

    # -- episode ---------------------------------------------------------------

    def reset(self, seed: int | None = None, options: dict | None = None):
        """Start an episode; ``seed`` reseeds the episode stream (the world stays, see EnvConfig.seed).

        ``options`` has no meaning here; it is accepted because PettingZoo's API test passes one.
        """
        if seed is not None:
            check_int("reset(seed)", seed, minimum=0)
        batch = self.batched.reset(seed=seed)
        self._rows = np.flatnonzero(self.batched.alive)
        self._focus = int(self._rows[0]) if len(self._rows) else 0
        listed = np.arange(self.batched.n_agents) if self.fixed_agents else self._rows
        self.agents = [self.possible_agents[r] for r in listed.tolist()]
        obs = self._observations(batch, listed, self._rows)
        return obs, {agent: {} for agent in self.agents}

    def step(self, actions: dict[str, np.ndarray]):
        if self.batched.state is None:
            raise EnvError("call reset() before step()")
        if not self.agents:
            raise EnvError("every user is done: the episode is over; call reset() to start a new one")
        scores = self._scores(actions)
        acting = self._rows
        res = self.batched.step(scores)
        rows = np.arange(self.batched.n_agents) if self.fixed_agents else acting
        agents = self.agents
        obs = self._observations(res.batch, rows, acting)
        rewards = dict(zip(agents, res.rewards[rows].tolist()))
        gone = ~res.outcome.alive[rows]  # fixed agents only: departed before this step
        terms = dict(zip(agents, (res.terminated[rows] | gone).tolist()))
        truncs = dict(zip(agents, res.truncated[rows].tolist()))
        infos = self._infos(res, rows, agents, gone)
        self._rows = acting[res.alive[acting]]
        if len(self._rows):
            self._focus = self._focus if res.alive[self._focus] else int(self._rows[0])
        if not self.fixed_agents or not len(self._rows):
            self.agents = [self.possible_agents[r] for r in self._rows.tolist()]
        return obs, rewards, terms, truncs, infos

    def text_view(self, agent: str):
        """Profile, history and candidates of ``agent`` with titles/genres/years (for LLM policies)."""
        return self.batched.text_view(self.agent_row(agent))

    def agent_row(self, agent: str) -> int:
        """Row of ``agent`` in the batched arrays (``self.batched``)."""
        try:
            return self._row[agent]
        except (KeyError, TypeError):
            raise EnvError(f"unknown agent {agent!r}; agents are named like {self.possible_agents[0]!r}") from None

    def render(self) -> str | None:
        """A text frame of one user's last slate, click and rating ("ansi": returned; "human": printed)."""
        return render(self.render_mode, self.batched, self._focus, self.possible_agents[self._focus])

    def close(self) -> None:
        return None

    # -- internals -------------------------------------------------------------

    def _scores(self, actions: dict[str, np.ndarray]) -> np.ndarray:
        """(N, C) scores from the agents' actions; every misuse is an EnvError naming the agent."""
        if not isinstance(actions, dict):
            raise EnvError(f"actions: expected a dict {{agent: scores}}, got {type(actions).__name__}")
        listed = self.agents
        missing = [a for a in listed if a not in actions]
        if missing:
            raise EnvError(f"no action for live agent(s) {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if len(actions) != len(listed):
            self._reject_extra(actions)
        acting = self._rows
        names = listed if len(acting) == len(listed) else [self.possible_agents[r] for r in acting.tolist()]
        n_cand = self.batched.n_candidates
        try:
            stacked = np.asarray([actions[a] for a in names])
        except (ValueError, TypeError):
            stacked = None
        if stacked is None or stacked.shape != (len(names), n_cand) or stacked.dtype.kind not in "biuf":
            for a in names:
                if as_scores(actions[a], f"action of {a!r}").shape != (n_cand,):
                    raise EnvError(f"action of {a!r} has shape {np.shape(actions[a])}; expected ({n_cand},) scores")
            stacked = np.stack([as_scores(actions[a], a) for a in names]) if names else np.zeros((0, n_cand))
        if not np.isfinite(np.add.reduce(stacked, axis=None)):
            bad = names[int(np.flatnonzero(~np.isfinite(stacked).all(axis=1))[0])]
            raise EnvError(f"action of {bad!r} contains NaN/inf; expected finite scores")
        scores = np.zeros((self.batched.n_agents, n_cand), np.float64)
        scores[acting] = stacked
        return scores

    def _reject_extra(self, actions: dict) -> None:
        listed = set(self.agents)
        for agent in actions:
            if agent in listed:
                continue
            if agent in self._row:
                raise EnvError(f"action for {agent!r}, who has left the episode; send actions only for env.agents")
            self.agent_row(agent)  # raises: unknown agent

    def _observations(self, batch: RankingBatch, rows: np.ndarray, acting: np.ndarray) -> dict[str, Any]:
        """Per-agent observations of ``rows``: row views of the batched arrays.

        Rows not in ``acting`` (fixed agents who left earlier) get zeros.
        """
        names = [self.possible_agents[r] for r in rows.tolist()]
        if self.features_obs:
            feats = self.batched.features(None if len(rows) == len(batch) else rows)
            if len(acting) != len(rows):
                feats[~np.isin(rows, acting)] = 0.0
            return dict(zip(names, feats))
        part = batch if len(rows) == len(batch) else batch.take(rows)
        arrays = self._obs.arrays(part)
        if len(acting) != len(rows):
            gone = ~np.isin(rows, acting)
            for arr in arrays:
                arr[gone] = 0
        # A dict display with constant keys builds each small dict fastest.
        return {
            agent: {"candidates": c, "history": h, "history_ratings": r, "candidate_genres": g, "candidate_popularity": p}
            for agent, c, h, r, g, p in zip(names, *arrays)
        }

    def _infos(self, res: StepResult, rows: np.ndarray, agents: list[str], gone: np.ndarray) -> dict[str, dict]:
        clicked = res.feedback.clicked[rows].tolist()
        rating = res.feedback.rating[rows].tolist()
        infos = {a: {"clicked": c, "rating": r} for a, c, r in zip(agents, clicked, rating)}
        for i in np.flatnonzero(gone).tolist():
            infos[agents[i]] = {}
        return infos


def parallel_env(**config: Any) -> StarecParallelEnv:
    """The multi-agent environment (PettingZoo ParallelEnv); options are EnvConfig fields."""
    return StarecParallelEnv(**config)


def raw_env(**config: Any) -> parallel_to_aec_wrapper:
    """The AEC form without PettingZoo's order-enforcing wrapper."""
    return parallel_to_aec_wrapper(StarecParallelEnv(**config))


def env(**config: Any):
    """The AEC form (agents act in turn), wrapped to enforce PettingZoo's call order."""
    return parallel_to_aec(StarecParallelEnv(**config))
