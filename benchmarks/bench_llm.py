"""Cost of LLM thinking: scoring path vs. fast generation vs. slow thinking.

For each model, in one run on the same users and prompts:

* ranking latency per user (decision) of ``starec-fast`` (no-generation
  scoring path), ``starec`` (fast generated ranking) and ``starec-slow``
  (chain-of-thought ranking);
* generation throughput (completion tokens/s) at batch 1 vs. batch 16.

Printed as ratios against the targets of issue 3: scoring <= 1/10 of the slow
path's latency, batch-16 >= 4x batch-1 tokens/s.

    python -m benchmarks.bench_llm                      # both models, short settings
    python -m benchmarks.bench_llm --models tiny --users 16 --out bench.json
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from policies.base import PolicyContext
from policies.llm.agents import LLMAgentConfig
from policies.llm.backend import LLMBackend, get_backend
from policies.registry import make_policy
from starec_env.data import load_dataset
from starec_env.protocol import LeaveOneOut

RANKERS = {"score": "starec-fast", "fast": "starec", "slow": "starec-slow"}
THROUGHPUT_PROMPT = [{"role": "user", "content": "Tell me a long story about a family watching old movies together."}]


def ranking_latency(model: str, args: argparse.Namespace) -> dict[str, float]:
    """Seconds per user decision for each ranking path (same users, same prompts)."""
    world = load_dataset("synthetic", n_users=200, n_items=300, seed=0)
    protocol = LeaveOneOut(world, n_users=args.users, seed=0)
    options = {
        "model": model,
        "threads": args.threads,
        "batch_size": 16,
        "max_new_tokens": args.fast_tokens,
        "max_new_tokens_slow": args.slow_tokens,
        "prompt": {"max_history": args.history},
    }
    out = {}
    for path, name in RANKERS.items():
        policy = make_policy(name, PolicyContext(world, seed=0, options=options))
        policy.fit(protocol.split)
        policy.score(protocol.batch.take(np.arange(1)))  # warm-up (and the scoring path's calibration)
        before = policy.stats().get("llm_completion_tokens", 0)
        start = time.perf_counter()
        policy.score(protocol.batch)
        out[f"{path}_s_per_user"] = (time.perf_counter() - start) / len(protocol.batch)
        tokens = policy.stats().get("llm_completion_tokens", 0) - before
        out[f"{path}_completion_tokens_per_user"] = tokens / len(protocol.batch)
    return out


def throughput(model: str, args: argparse.Namespace) -> dict[str, float]:
    """Completion tokens per second at batch 1 and batch 16 (same prompt)."""
    shared = get_backend(model, threads=args.threads, batch_size=16)
    out = {}
    for batch, n_prompts in ((1, args.batch1_prompts), (16, 16)):
        backend = LLMBackend(shared.model, shared.tokenizer, batch_size=batch)
        backend.generate([THROUGHPUT_PROMPT], max_new_tokens=2)  # warm-up
        backend.reset_stats()
        backend.generate([THROUGHPUT_PROMPT] * n_prompts, max_new_tokens=args.gen_tokens)
        stats = backend.stats()
        out[f"tokens_per_s_batch{batch}"] = stats["llm_completion_tokens"] / stats["llm_seconds"]
    return out


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results = {}
    for model in args.models:
        row = {**ranking_latency(model, args), **throughput(model, args)}
        row["score_over_slow"] = row["score_s_per_user"] / row["slow_s_per_user"]
        row["fast_over_slow"] = row["fast_s_per_user"] / row["slow_s_per_user"]
        row["batch16_over_batch1"] = row["tokens_per_s_batch16"] / row["tokens_per_s_batch1"]
        results[model] = row
    return results


def report(results: dict[str, dict[str, float]]) -> str:
    lines = [
        f"{'model':<14}{'score s/user':>13}{'fast s/user':>12}{'slow s/user':>12}"
        f"{'score/slow':>11}{'tok/s b1':>10}{'tok/s b16':>10}{'b16/b1':>8}"
    ]
    for model, r in results.items():
        lines.append(
            f"{model:<14}{r['score_s_per_user']:>13.3f}{r['fast_s_per_user']:>12.3f}{r['slow_s_per_user']:>12.3f}"
            f"{r['score_over_slow']:>11.3f}{r['tokens_per_s_batch1']:>10.1f}{r['tokens_per_s_batch16']:>10.1f}"
            f"{r['batch16_over_batch1']:>8.2f}"
        )
    lines.append("targets: score/slow <= 0.100, b16/b1 >= 4.00")
    for model, r in results.items():
        ok_score = "met" if r["score_over_slow"] <= 0.1 else "MISSED"
        ok_batch = "met" if r["batch16_over_batch1"] >= 4.0 else "MISSED"
        lines.append(f"{model}: scoring-path target {ok_score}, batching target {ok_batch}")
    return "\n".join(lines)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as fh:
        json.dump(data, fh, indent=2)
    os.replace(fh.name, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=lambda s: s.split(","), default=["smollm2-135m", "tiny"])
    p.add_argument("--users", type=int, default=8, help="users (decisions) per ranking path")
    p.add_argument("--history", type=int, default=10, help="history items shown in prompts")
    p.add_argument("--fast-tokens", type=int, default=LLMAgentConfig.max_new_tokens, help="max new tokens of a fast ranking")
    p.add_argument("--slow-tokens", type=int, default=LLMAgentConfig.max_new_tokens_slow,
                   help="max new tokens of a slow ranking (default: the agents' own)")
    p.add_argument("--gen-tokens", type=int, default=32, help="new tokens per sequence for tokens/s")
    p.add_argument("--batch1-prompts", type=int, default=4, help="sequences generated one by one")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: automatic)")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    results = run(args)
    print(report(results))
    if args.out:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
