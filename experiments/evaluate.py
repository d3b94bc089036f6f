"""Evaluation loops: the offline protocol and online simulated sessions.

One seed = one protocol draw (users, negatives), one policy initialisation
and one set of simulated episodes. The world (dataset, simulator) is built
once per run from ``data.seed``, so seeds vary the evaluation, not the world.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any, Iterator

import numpy as np
from tqdm.auto import tqdm

from experiments.config import TRAINED_ROWS, ConfigError, RunConfig
from experiments.report import PER_USER, aggregate
from policies.base import Policy, PolicyContext
from policies.registry import Factory, is_llm_policy, make_policy
from starec_env.data.errors import DataOptionError
from starec_env.data.model import Dataset
from starec_env.protocol import LeaveOneOut
from starec_env.types import Feedback, RankingBatch


@dataclass
class World:
    """The dataset every policy is judged on and the simulator answering it."""

    dataset: Dataset
    simulator: Any


def load_world(cfg: RunConfig) -> World:
    """Load and preprocess the dataset, then fit/build its simulator."""
    from starec_env.data import PreprocessConfig, load_dataset
    from starec_env.simulator import build_simulator

    data = cfg.data
    try:
        pre = PreprocessConfig.from_dict(data.preprocess) if data.preprocess else None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[data.preprocess]: {err}") from None
    try:
        dataset = load_dataset(data.dataset, data.data_dir, preprocess=pre, seed=data.seed, **data.options)
    except DataOptionError as err:  # an option the loader does not take, or a value it cannot use
        raise ConfigError(f"[data.options]: {err}") from None
    return World(dataset, build_simulator(dataset, _simulator_config(cfg), data.seed))


def _simulator_config(cfg: RunConfig):
    """The simulator settings; on real data the fit holds out what the run's
    protocol holds out (each user's last positive by the protocol's threshold)."""
    from starec_env.simulator import SimulatorConfig

    try:
        return SimulatorConfig.from_dict({"holdout_threshold": cfg.protocol.positive_threshold, **cfg.simulator})
    except ValueError as err:
        raise ConfigError(f"[simulator]: {err}") from None


def env_config(cfg: RunConfig, world: World, llm: bool = True):
    """EnvConfig of the online sessions: the run's world and ``[online.env]``
    options, sized for LLM agents (``online.llm_users`` agents, ``[online.llm_env]``
    on top) or, with ``llm=False``, for cheap agents (``online.users``)."""
    from starec_env.config import EnvConfig

    online = cfg.online
    users, extra = (online.llm_users, online.llm_env) if llm else (online.users, {})
    values = {"n_users": min(users, world.dataset.n_users), "history_len": cfg.protocol.history_len, **online.env, **extra}
    values.update(dataset=world.dataset, seed=cfg.data.seed, simulator=_simulator_config(cfg))
    source = "[online.llm_env]" if llm and extra else "[online.env]"
    try:
        return EnvConfig.from_dict(values, source=source)
    except ValueError as err:  # unknown keys name the table already; bad values name the field
        raise ConfigError(str(err) if str(err).startswith(source) else f"{source}: {err}") from None


def is_llm_row(name: str) -> bool:
    """Whether row ``name`` is a language-model agent (sized as such online): a
    built-in LLM agent or a row backed by training (students, the teacher)."""
    return is_llm_policy(name) or name in TRAINED_ROWS


def score_batched(policy: Policy, batch: RankingBatch, batch_size: int, desc: str | None = None) -> np.ndarray:
    """Score a large batch in chunks (bounded memory, a progress bar for slow agents)."""
    n = len(batch)
    out = np.empty(batch.candidates.shape, dtype=np.float64)
    starts = range(0, n, batch_size)
    for lo in tqdm(starts, desc=desc, leave=False, disable=desc is None or len(starts) < 2):
        rows = np.arange(lo, min(n, lo + batch_size))
        out[rows] = policy.score(batch.take(rows))
    return out


def run_offline(policy: Policy, protocol: LeaveOneOut, batch_size: int, desc: str | None = None) -> dict:
    """Offline metrics of an already-fitted policy, plus scoring time and the
    per-user NDCG@10 (every agent ranks the same users and candidates, so two
    agents' differences can be paired user by user)."""
    start = time.perf_counter()
    scores = score_batched(policy, protocol.batch, batch_size, desc)
    metrics = protocol.evaluate(scores)
    metrics["score_s"] = time.perf_counter() - start
    metrics[PER_USER] = [float(v) for v in protocol.per_user(scores)["ndcg@10"]]
    return metrics


def run_online(policy: Policy, env, seed: int) -> dict:
    """One simulated session per env user until every user has left or hit ``max_cycles``.

    Each step the policy scores the live users' candidates, the env shows the
    top slate, and the policy observes the feedback (agents with memory learn
    from it). Returns click-through rate (clicks per shown slate), mean rating
    of clicked items, mean session length (steps) and mean return per user,
    each with ``<metric>_se``, its standard error over the users (sessions
    independent; ratios by the delta method), and the session count.
    """
    n = env.n_agents
    steps, returns, clicks, ratings = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    for step in play(env, policy, seed):
        rows, fb = step.rows, step.result.feedback
        steps[rows] += 1
        returns[rows] += np.asarray(step.result.rewards, dtype=np.float64)[rows]
        clicked = np.asarray(fb.clicked)[rows] >= 0
        clicks[rows] += clicked
        ratings[rows] += np.where(clicked, np.asarray(fb.rating, dtype=np.float64)[rows], 0.0)
    out = {"online_users": n}
    for key, (num, den) in {"ctr": (clicks, steps), "mean_rating": (ratings, clicks)}.items():
        out[key], out[f"{key}_se"] = _ratio(num, den)
    for key, values in {"session_length": steps, "return": returns}.items():
        out[key], out[f"{key}_se"] = float(values.mean()), _standard_error(values)
    return out


def _standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of independent ``values`` (NaN for fewer than 2)."""
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def _ratio(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """sum(num) / sum(den) over users (0 when nothing was counted) and its
    delta-method standard error, the error of the mean of the users'
    residuals ``num - ratio * den`` over the mean denominator."""
    total = den.sum()
    if not total:
        return 0.0, float("nan")
    ratio = float(num.sum() / total)
    return ratio, _standard_error(num - ratio * den) / float(den.mean())


@dataclass(frozen=True)
class Step:
    """One environment step of an episode: the acting ``rows``, the batch they
    ranked, the full (N, C) ``scores`` sent and the env's result."""

    rows: np.ndarray
    batch: RankingBatch
    scores: np.ndarray
    result: Any


def play(env: Any, policy: Policy, seed: int, users: np.ndarray | None = None) -> Iterator[Step]:
    """One episode (agents: dataset ``users``, default the env's) until every
    user has left or hit ``max_cycles``: the live users are scored, the env
    shows the top slate, the policy observes the feedback; yields each step."""
    batch = env.reset(seed=seed, users=users)
    alive = np.asarray(env.alive, dtype=bool).copy()  # users with nothing left to offer start done
    while alive.any():
        rows = np.flatnonzero(alive)
        shown = batch.take(rows)
        scores = np.zeros(batch.candidates.shape, dtype=np.float64)
        scores[rows] = policy.score(shown)
        result = env.step(scores)
        policy.observe(shown, take_feedback(result.feedback, rows))
        yield Step(rows, batch, scores, result)
        batch = result.batch
        alive = np.asarray(result.alive, dtype=bool)


def take_feedback(fb: Feedback, rows: np.ndarray) -> Feedback:
    """The feedback rows of the users that were shown a slate."""
    return type(fb)(**{f.name: np.asarray(getattr(fb, f.name))[rows] for f in fields(fb)})


def benchmark(cfg: RunConfig, world: World | None = None, factories: dict[str, Factory] | None = None) -> tuple[list[dict], dict]:
    """Evaluate every configured policy over every seed; returns (rows, run facts).

    ``factories`` builds the named rows instead of the policy registry (the
    trained students), without changing the registry for anyone else.
    """
    world = world or load_world(cfg)
    for llm in (False, True) if cfg.online.enabled else ():  # refuse bad [online.*env] before any policy runs
        env_config(cfg, world, llm)
    factories = factories or {}
    per_policy: dict[str, list[dict]] = {name: [] for name in cfg.policies}
    upper: dict[str, bool] = {}
    stats: dict[str, dict] = {}
    facts: dict = {"dataset": world.dataset.summary(), "simulator": dict(getattr(world.simulator, "fit_stats", {})), "protocol": []}
    bar = tqdm(total=len(cfg.seeds) * len(cfg.policies), desc="benchmark", disable=not cfg.progress)
    for seed in cfg.seeds:
        protocol = LeaveOneOut(
            world.dataset,
            n_negatives=cfg.protocol.negatives,
            n_users=cfg.protocol.users,
            history_len=cfg.protocol.history_len,
            positive_threshold=cfg.protocol.positive_threshold,
            seed=seed,
        )
        facts["protocol"].append(protocol.summary())
        for name in cfg.policies:
            bar.set_postfix_str(f"seed {seed}: {name}")
            result, policy = evaluate_policy(cfg, world, protocol, name, seed, factories.get(name))
            per_policy[name].append(result)
            upper[name] = bool(policy.upper_bound)
            measured = ("fit_s", "score_s", "online_s", "online_users", "online_max_cycles")
            stats[name] = {**policy.stats(), **{k: result[k] for k in measured if k in result}}
            bar.update()
    bar.close()
    rows = [aggregate(name, per_policy[name], upper[name], stats[name]) for name in cfg.policies]
    return rows, facts


def evaluate_policy(
    cfg: RunConfig, world: World, protocol: LeaveOneOut, name: str, seed: int, factory: Factory | None = None
) -> tuple[dict, Policy]:
    """Build (by ``factory``, else the registry), fit and evaluate one policy
    for one seed (offline, then online)."""
    privileged = name in cfg.privileged
    ctx = PolicyContext(
        dataset=world.dataset,
        seed=seed,
        simulator=world.simulator if privileged else None,
        options=cfg.policy_options(name),
    )
    if factory is None:
        policy = make_policy(name, ctx)
    else:
        policy = factory(ctx)
        policy.name = name
    start = time.perf_counter()
    policy.fit(protocol.split)
    result = {"fit_s": time.perf_counter() - start}
    desc = f"{name} offline" if cfg.progress else None
    result.update(run_offline(policy, protocol, cfg.protocol.batch_size, desc))
    if cfg.online.enabled:
        start = time.perf_counter()
        env = make_env(cfg, world, llm=factory is not None or is_llm_row(name))
        result.update(run_online(policy, env, seed))
        result["online_s"] = time.perf_counter() - start
        result["online_max_cycles"] = env.max_cycles
    return result, policy


def make_env(cfg: RunConfig, world: World, llm: bool = True):
    """The batched env over the run's world (same item indices as the protocol),
    sized for LLM agents unless ``llm=False`` (see :func:`env_config`); the
    training stages drive LLM agents, so theirs is the default."""
    from starec_env.batched import BatchedEnv

    return BatchedEnv(env_config(cfg, world, llm), simulator=world.simulator)
