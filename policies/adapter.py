"""Any :class:`~policies.base.Policy` as the agents of the PettingZoo ParallelEnv.

:class:`PolicyAgents` joins a policy, which scores batches of users, to the
headline dict API, where every user is an agent with its own observation and
action. Driven by the same seed, it gives exactly the trajectory of
:func:`policies.loop.play` on the batched env (tested).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from policies.base import Policy
from policies.loop import check_scores
from starec_env.batched import top_slate
from starec_env.parallel import StarecParallelEnv
from starec_env.types import PAD, Feedback, RankingBatch

Observations = dict[str, dict[str, np.ndarray]]
#: The dict observation's keys a RankingBatch is built from.
BATCH_KEYS = ("candidates", "history", "history_ratings")


class PolicyAgents:
    """One policy acting for every agent of a STARec ``ParallelEnv``::

        agents = PolicyAgents(policy, env)
        obs, infos = env.reset(seed=0)
        while env.agents:
            obs, rewards, terminations, truncations, infos = env.step(agents.act(obs))
            agents.observe(infos)

    Observations to batch (:meth:`batch`): the acting agents' dict
    observations are stacked into one :class:`~starec_env.types.RankingBatch`
    in the dict's order. ``candidates``, ``history`` and ``history_ratings``
    are its arrays (the history's padding code ``n_items`` turned back into
    :data:`~starec_env.types.PAD`); ``candidate_genres`` and
    ``candidate_popularity`` are derived from item ids a policy can look up
    itself, so they are not used. The one thing the observation lacks is the
    user's dataset index (policies key per-user state on it); the agent's
    name gives it through the env's own mapping (``env.agent_row`` and
    ``env.batched.users``), which is why the adapter holds the env and not
    only its observations. Under ``fixed_agents=True`` agents that have left
    still get an observation; they are not scored (``env.batched.alive``).

    Scores to actions (:meth:`act`): the policy's (B, C) scores, checked for
    shape, become each acting agent's action, one score per candidate; the
    env shows the ``slate_size`` best. Agents that have just left (their last
    observation arrives with their termination) get no action, departed
    fixed agents zeros, which the env ignores.

    Infos to feedback (:meth:`observe`): the ``clicked`` / ``rating`` infos of
    the agents that acted, with the slate they were shown (the env's own
    :func:`~starec_env.batched.top_slate` of the scores sent), go to
    ``policy.observe`` as one :class:`~starec_env.types.Feedback`. Rewards stay
    with the caller: the Policy interface learns from clicks and ratings.

    Errors: an env that is not a STARec ParallelEnv (wrappers are unwrapped)
    or has feature observations (no item ids) is refused at construction;
    unknown agent names are the env's :class:`~starec_env.errors.EnvError`;
    an observation without the dict keys, a policy returning another shape
    than (B, C), and infos missing an acting agent's click are ValueErrors
    naming the agent or policy.
    """

    def __init__(self, policy: Policy, env: Any) -> None:
        base = getattr(env, "unwrapped", env)
        if not isinstance(base, StarecParallelEnv):
            raise TypeError(
                f"PolicyAgents drives a STARec ParallelEnv (starec_env.parallel_env(...)), got {type(env).__name__}"
            )
        if base.features_obs:
            raise ValueError(
                "PolicyAgents reads the dict observation (item ids); this env was built with "
                "observation='features', which has none"
            )
        self.policy = policy
        self.env = base
        self._acted: tuple[list[str], RankingBatch, np.ndarray] | None = None  # what act() sent, until observe()

    def batch(self, observations: Observations) -> tuple[list[str], RankingBatch]:
        """The acting agents among ``observations`` (in its order) and their :class:`RankingBatch`."""
        if not isinstance(observations, dict):
            raise TypeError(f"observations: expected the env's dict {{agent: observation}}, got {type(observations).__name__}")
        env = self.env
        rows = np.array([env.agent_row(agent) for agent in observations], dtype=np.int64)
        live = np.asarray(env.batched.alive, dtype=bool)[rows]
        names = [agent for agent, acting in zip(observations, live.tolist()) if acting]
        rows = rows[live]
        n_cand, h = env.batched.n_candidates, env.batched.history_len
        if not names:
            empty = np.zeros((0, n_cand), np.int64)
            return names, RankingBatch(env.batched.users[rows], empty, np.zeros((0, h), np.int64), np.zeros((0, h), np.float32))
        obs = [observations[agent] for agent in names]
        for agent, o in zip(names, obs):
            if not isinstance(o, dict) or not set(BATCH_KEYS) <= set(o):
                got = sorted(o) if isinstance(o, dict) else type(o).__name__
                raise ValueError(f"observation of {agent!r}: expected the env's dict with keys {BATCH_KEYS}, got {got}")
        history = np.stack([o["history"] for o in obs]).astype(np.int64, copy=False)
        return names, RankingBatch(
            users=env.batched.users[rows],
            candidates=np.stack([o["candidates"] for o in obs]).astype(np.int64, copy=False),
            history=np.where(history == env.dataset.n_items, PAD, history),
            history_ratings=np.stack([o["history_ratings"] for o in obs]).astype(np.float32, copy=False),
        )

    def act(self, observations: Observations) -> dict[str, np.ndarray]:
        """Score the acting agents' candidates; returns the action of every agent in ``env.agents``."""
        names, batch = self.batch(observations)
        n_cand = self.env.batched.n_candidates
        scores = check_scores(self.policy, batch, self.policy.score(batch)) if names else np.zeros((0, n_cand))
        self._acted = (names, batch, scores)
        actions = dict(zip(names, scores))
        if len(names) < len(self.env.agents):  # fixed agents that have left: listed, acting for nobody
            actions.update((agent, np.zeros(n_cand)) for agent in self.env.agents if agent not in actions)
        return actions

    def observe(self, infos: dict[str, dict]) -> None:
        """Hand the clicks and ratings in ``infos`` (from ``env.step(self.act(obs))``) to ``policy.observe``."""
        if self._acted is None:
            raise RuntimeError("observe() needs the actions of act() first: call act(obs), env.step, then observe(infos)")
        names, batch, scores = self._acted
        self._acted = None
        if not names:
            return
        missing = [agent for agent in names if "clicked" not in infos.get(agent, {})]
        if missing:
            raise ValueError(
                f"no click/rating info for agent(s) {missing[:5]}: pass the infos env.step returned for the actions of act()"
            )
        shown = np.take_along_axis(batch.candidates, top_slate(scores, self.env.batched.slate_size), axis=1)
        clicked = np.array([infos[agent]["clicked"] for agent in names], dtype=np.int64)
        rating = np.array([infos[agent]["rating"] for agent in names], dtype=np.float32)
        self.policy.observe(batch, Feedback(batch.users, shown, clicked, rating))
