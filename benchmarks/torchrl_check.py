"""TorchRL's ``PettingZooWrapper`` over the parallel env: ``check_env_specs`` and a seeded rollout.

Run: ``python -m benchmarks.torchrl_check`` (needs ``torchrl``, which is not
part of the ``rl`` extra: ``pip install torchrl==0.14.1 torch==2.13.0``
installs it beside the pinned torch without replacing it).

TorchRL sends an action for every agent of a group at every step, and by
default ends the episode when *any* agent is done. So the env is built with
``fixed_agents=True`` (departed users stay listed, terminated, with zero
observation and reward) and wrapped with ``done_on_any=False`` (the episode
ends when every user is done). The script checks the specs, rolls out twice
with the same seed and checks both rollouts are equal, and prints the
rollout's shape and return.
"""
from __future__ import annotations

import argparse
import warnings

import torch

import starec_env


def make(users: int, max_cycles: int, seed: int):
    from torchrl.envs.libs.pettingzoo import PettingZooWrapper

    env = starec_env.parallel_env(n_users=users, max_cycles=max_cycles, seed=0,
                                  observation="features", fixed_agents=True)
    return PettingZooWrapper(env, done_on_any=False, return_state=True, seed=seed)


def main() -> None:
    from torchrl.envs.utils import check_env_specs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--max-cycles", type=int, default=20)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="PettingZoo in TorchRL is tested")  # we run 1.27.0, checked here
    env = make(args.users, args.max_cycles, args.seed)
    check_env_specs(env, seed=args.seed)
    rollouts = []
    for _ in range(2):
        env = make(args.users, args.max_cycles, args.seed)
        torch.manual_seed(args.seed)  # TorchRL's random actions come from torch's generator
        rollouts.append(env.rollout(args.steps, break_when_any_done=False))
    first, second = rollouts
    group = next(iter(env.group_map))
    same = all(torch.equal(first.get(k), second.get(k)) for k in first.keys(True, True))
    reward = first.get(("next", group, "reward"))
    dones = int(first.get(("next", "done")).sum())
    print(f"check_env_specs passed; group {group!r} of {len(env.group_map[group])} agents, "
          f"observation {tuple(env.observation_spec[group, 'observation'].shape)}, state {tuple(env.observation_spec['state'].shape)}")
    print(f"rollout {tuple(first.batch_size)}: return per agent {float(reward.sum()) / args.users:.2f}, "
          f"{dones} episode ends, two seeded rollouts equal: {same}")
    if not same:
        raise SystemExit("seeded rollouts differ")


if __name__ == "__main__":
    main()
