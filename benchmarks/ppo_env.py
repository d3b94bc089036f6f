"""Shared-policy PPO (Stable-Baselines3) on the feature observation, through the vector adapter.

Run: ``python -m benchmarks.ppo_env`` (extra ``rl``; a few minutes on one thread).
One SB3 policy is shared by ``--envs`` concurrent users of
:class:`~starec_env.sb3.StarecSB3VecEnv` (each a sub-environment, refilled
with a fresh user when one leaves). ``--policy candidate`` (default) is SB3's
``ActorCriticPolicy`` whose actor scores every candidate with one small MLP
over that candidate's features and the user block (weights shared across
candidates, as the candidate-major layout invites); ``--policy mlp`` is the
stock ``MlpPolicy`` over the flat vector, which has to learn each candidate
slot separately and learns more slowly. The script prints and writes to
``--out``:

- training throughput (user-steps/s of PPO collection + updates) and the
  adapter's own stepping rate with random actions, measured in this run;
- ``learning_curve.png``: mean return of the episodes finished in each
  rollout against training steps (with the exploration noise of training,
  so below the deterministic policy's evaluation);
- the mean return ± standard error over ``--episodes`` seeded episodes of
  ``STARec/SingleUser-v0`` (episode seeds 10_000.., never used in training)
  for the trained policy (deterministic) beside random, pop (the
  ``popularity`` feature) and genre (``genre_match + 2 * popularity``, the
  rule of :class:`policies.rule_based.GenreAffinityPolicy`) on the same
  seeds, with PPO's paired difference to each in standard errors;
- ``results.json`` with every figure.

Torch runs on ``--threads`` threads (1 by default: the machine is shared).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from starec_env.features import CANDIDATE_FEATURES, USER_FEATURES
from starec_env.single import SingleUserEnv

EVAL_SEED0 = 10_000
Scorer = Callable[[np.ndarray], np.ndarray]


class CandidateExtractor(nn.Module):
    """Actor: one MLP scores each candidate from (its features, user block); critic: MLP on the flat vector."""

    def __init__(self, n_candidates: int, hidden: int = 64) -> None:
        super().__init__()
        self.c, self.f, u = n_candidates, len(CANDIDATE_FEATURES), len(USER_FEATURES)
        self.latent_dim_pi, self.latent_dim_vf = n_candidates, hidden
        self.scorer = nn.Sequential(nn.Linear(self.f + u, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                    nn.Linear(hidden, 1))
        self.critic = nn.Sequential(nn.Linear(n_candidates * self.f + u, hidden), nn.Tanh(),
                                    nn.Linear(hidden, hidden), nn.Tanh())

    def forward_actor(self, x: torch.Tensor) -> torch.Tensor:
        per = x[:, : self.c * self.f].reshape(-1, self.c, self.f)
        user = x[:, self.c * self.f:].unsqueeze(1).expand(-1, self.c, -1)
        return self.scorer(torch.cat([per, user], dim=-1)).squeeze(-1)

    def forward_critic(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(x), self.forward_critic(x)


class CandidatePolicy(ActorCriticPolicy):
    """SB3 actor-critic whose action means are the per-candidate scores (no mixing across slots)."""

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = CandidateExtractor(self.action_space.shape[0])

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        self.action_net = nn.Identity()
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)


def candidate_column(obs: np.ndarray, name: str, n_candidates: int) -> np.ndarray:
    """Feature ``name`` of every candidate from a flat feature observation."""
    f = len(CANDIDATE_FEATURES)
    return obs[: n_candidates * f].reshape(n_candidates, f)[:, CANDIDATE_FEATURES.index(name)]


def evaluate(env: SingleUserEnv, scorer: Scorer, episodes: int) -> np.ndarray:
    """Return of each seeded episode (seeds EVAL_SEED0 + i) under ``scorer(obs) -> scores``."""
    returns = np.zeros(episodes)
    for i in range(episodes):
        obs, _ = env.reset(seed=EVAL_SEED0 + i)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(scorer(obs))
            returns[i] += reward
            done = terminated or truncated
    return returns


def adapter_rate(make_venv: Callable, steps: int) -> float:
    """User-steps/s of the SB3 adapter alone, random actions (wall time)."""
    venv = make_venv()
    venv.seed(1)
    venv.reset()
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, (steps, venv.num_envs, venv.action_space.shape[0])).astype(np.float32)
    start = time.perf_counter()
    for a in actions:
        venv.step(a)
    return steps * venv.num_envs / (time.perf_counter() - start)


def main() -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecMonitor

    from starec_env.sb3 import StarecSB3VecEnv

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", type=int, default=32, help="concurrent users (sub-environments)")
    ap.add_argument("--timesteps", type=int, default=600_000, help="PPO user-steps")
    ap.add_argument("--world-users", type=int, default=1000, help="users of the synthetic world")
    ap.add_argument("--episodes", type=int, default=100, help="seeded evaluation episodes")
    ap.add_argument("--policy", choices=("candidate", "mlp"), default="candidate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/ppo_env")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env_options = dict(n_users=args.world_users, observation="features", seed=0)

    def make_venv() -> StarecSB3VecEnv:
        return StarecSB3VecEnv(num_envs=args.envs, **env_options)

    rate_env = adapter_rate(make_venv, 500)
    venv = VecMonitor(make_venv())
    curve: list[tuple[int, float]] = []

    class Curve(BaseCallback):
        """Mean return of the episodes that ended in each rollout."""

        def _on_rollout_end(self) -> None:
            finished = [ep["r"] for ep in self.model.ep_info_buffer]
            if finished:
                curve.append((self.num_timesteps, float(np.mean(finished))))

        def _on_step(self) -> bool:
            return True

    policy, policy_kwargs = (CandidatePolicy, {}) if args.policy == "candidate" else ("MlpPolicy", {"net_arch": [128, 128]})
    model = PPO(
        policy, venv, n_steps=128, batch_size=512, n_epochs=5, learning_rate=3e-4, gamma=0.97,
        ent_coef=0.0, policy_kwargs=policy_kwargs, seed=args.seed, verbose=0, stats_window_size=200,
    )
    start = time.perf_counter()
    model.learn(args.timesteps, callback=Curve())
    train_s = time.perf_counter() - start

    env = SingleUserEnv(**env_options)
    n_cand = env.batched.n_candidates
    rng = np.random.default_rng(args.seed)
    scorers: dict[str, Scorer] = {
        "ppo": lambda obs: model.predict(obs, deterministic=True)[0],
        "random": lambda obs: rng.random(n_cand),
        "pop": lambda obs: candidate_column(obs, "popularity", n_cand),
        "genre": lambda obs: candidate_column(obs, "genre_match", n_cand) + 2.0 * candidate_column(obs, "popularity", n_cand),
    }
    returns = {name: evaluate(env, scorer, args.episodes) for name, scorer in scorers.items()}
    se = lambda x: float(np.std(x, ddof=1) / np.sqrt(len(x)))  # noqa: E731
    results = {
        "policy": args.policy, "envs": args.envs, "timesteps": args.timesteps, "train_s": round(train_s, 1),
        "train_user_steps_per_s": round(args.timesteps / train_s),
        "adapter_user_steps_per_s": round(rate_env),
        "episodes": args.episodes,
        "returns": {k: {"mean": float(v.mean()), "se": se(v)} for k, v in returns.items()},
        "ppo_minus": {k: {"mean": float((returns["ppo"] - v).mean()), "se": se(returns["ppo"] - v)}
                      for k, v in returns.items() if k != "ppo"},
        "curve": curve,
        "torch_threads": torch.get_num_threads(),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot_curve(curve, out / "learning_curve.png", results)
    print(f"PPO ({args.policy} policy): {args.timesteps:,} user-steps over {args.envs} concurrent users in {train_s:.0f} s "
          f"({results['train_user_steps_per_s']:,} user-steps/s training; adapter alone "
          f"{results['adapter_user_steps_per_s']:,} user-steps/s, random actions)")
    print(f"mean return over {args.episodes} seeded episodes (± SE); PPO minus each, paired:")
    for name, r in results["returns"].items():
        diff = results["ppo_minus"].get(name)
        extra = f"   PPO - {name}: {diff['mean']:+.2f} ± {diff['se']:.2f} ({diff['mean'] / diff['se']:+.1f} SE)" if diff else ""
        print(f"  {name:<7} {r['mean']:6.2f} ± {r['se']:.2f}{extra}")
    print(f"wrote {out / 'results.json'} and {out / 'learning_curve.png'}")


def plot_curve(curve: list[tuple[int, float]], path: Path, results: dict) -> None:
    """Learning curve with the baselines' evaluation means as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if curve:
        steps, means = zip(*curve)
        ax.plot(steps, means, label="PPO (training episodes, sampled actions)")
    for name, style in (("random", ":"), ("pop", "--"), ("genre", "-.")):
        ax.axhline(results["returns"][name]["mean"], linestyle=style, color="grey", label=f"{name} (eval)")
    ax.set_xlabel("user-steps")
    ax.set_ylabel("episode return")
    ax.set_title(f"Shared-policy PPO ({results['policy']}), {results['envs']} concurrent users")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
