"""Evaluation: every policy under the offline protocol and in online simulated sessions.

One seed = one protocol draw (users, negatives), one policy initialisation
and one set of simulated episodes. The world (dataset, simulator,
:mod:`experiments.world`) is built once per run from ``data.seed``, so seeds
vary the evaluation, not the world; the episodes are played by
:func:`policies.loop.play`.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from experiments.config import TRAINED_ROWS, RunConfig
from experiments.report import PER_USER, aggregate
from experiments.world import World, env_config, load_world, make_env
from policies.base import Policy, PolicyContext
from policies.loop import play
from policies.registry import Factory, is_llm_policy, make_policy
from starec_env.protocol import LeaveOneOut
from starec_env.types import RankingBatch

if TYPE_CHECKING:
    from starec_env.batched import BatchedEnv


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


def run_online(policy: Policy, env: BatchedEnv, seed: int) -> dict:
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
        protocol = cfg.protocol.leave_one_out(world.dataset, seed)
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

