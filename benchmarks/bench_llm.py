"""Cost of LLM thinking: judgement slots vs. reflection vs. slow chain-of-thought.

For each model, in one run on the same users, every agent measured as it
actually runs one decision (ranking, then - for agents that reflect - the
memory update after the user's feedback):

* ``judge``: ``starec-fast``'s decision (judgement slots: one forward pass);
* ``starec``: the same ranking plus STARec's slow thinking, the short
  reflection that rewrites the taste note (memory warm-up off, so one
  decision is measured);
* ``slow``: ``starec-think``'s decision = chain-of-thought ranking + reflection;
* the judge decision in fp32 and in bf16 autocast (where the CPU has native
  bf16), and generation throughput (completion tokens/s) at batch 1 vs. 16.

Printed as ratios: judging <= 1/10 of the slow path's latency per decision,
batch-16 >= 4x batch-1 tokens/s. Each agent starts without cached prompt
prefixes.

    python -m benchmarks.bench_llm                      # both models, short settings
    python -m benchmarks.bench_llm --models tiny --users 16 --out bench.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from experiments.report import write_json
from policies.base import PolicyContext
from policies.llm.agents import LLMAgentConfig
from policies.llm.backend import LLMBackend, get_backend
from policies.registry import make_policy
from starec_env.data import load_dataset
from starec_env.protocol import LeaveOneOut
from starec_env.types import Feedback

#: Path -> (agent, options on top of the defaults).
AGENTS = {"judge": ("starec-fast", {}), "starec": ("starec", {"warmup": {"steps": 0}}), "slow": ("starec-think", {})}
MODES = ("judge", "think", "reflect")
THROUGHPUT_PROMPT = [{"role": "user", "content": "Tell me a long story about a family watching old movies together."}]


def agent_options(model: str, args: argparse.Namespace) -> dict:
    """The agents' defaults, plus only what the command line overrides."""
    options: dict = {"model": model, "threads": args.threads, "batch_size": 16}
    for key, value in (("max_new_tokens", args.fast_tokens), ("max_new_tokens_think", args.think_tokens)):
        if value is not None:
            options[key] = value
    if args.history is not None:
        options["prompt"] = {"max_history": args.history, "fast_history": args.history}
    return options


def feedback_for(protocol: LeaveOneOut, scores: np.ndarray, slate: int = 5) -> Feedback:
    """The user clicks the held-out item (with its real rating) from the agent's top ``slate``."""
    batch = protocol.batch
    shown = np.take_along_axis(batch.candidates, np.argsort(-scores, axis=1, kind="stable")[:, :slate], axis=1)
    rating = protocol.dataset.rating_arr[protocol.target_rows].astype(np.float64)
    return Feedback(users=batch.users, shown=shown, clicked=protocol.targets.copy(), rating=rating)


def decision_latency(model: str, args: argparse.Namespace) -> dict[str, float]:
    """Seconds per user decision of each agent, split into ranking and reflection."""
    world = load_dataset("synthetic", n_users=200, n_items=300, seed=0)
    protocol = LeaveOneOut(world, n_users=args.users, seed=0)
    n = len(protocol.batch)
    out: dict[str, float] = {}
    for path, (name, extra) in AGENTS.items():
        policy = make_policy(name, PolicyContext(world, seed=0, options={**agent_options(model, args), **extra}))
        policy.fit(protocol.split)
        policy.backend.clear_prefixes()
        policy.score(protocol.batch.take(np.arange(1)))  # warm-up of the code paths
        policy.backend.reset_stats()
        start = time.perf_counter()
        scores = policy.score(protocol.batch)
        ranked = time.perf_counter()
        policy.observe(protocol.batch, feedback_for(protocol, scores))
        done = time.perf_counter()
        stats = policy.stats()
        out[f"{path}_rank_s"] = (ranked - start) / n
        out[f"{path}_reflect_s"] = (done - ranked) / n
        out[f"{path}_s"] = (done - start) / n
        for mode in MODES:
            for key in ("prompt_tokens", "cached_tokens", "completion_tokens"):
                if f"{mode}_calls" in stats:
                    out[f"{path}_{mode}_{key}_per_user"] = stats.get(f"{mode}_{key}", 0) / n
    return out


def judge_precision(model: str, args: argparse.Namespace) -> dict[str, float]:
    """Seconds per judge decision in fp32 and in bf16 autocast (same users)."""
    world = load_dataset("synthetic", n_users=200, n_items=300, seed=0)
    protocol = LeaveOneOut(world, n_users=args.users, seed=0)
    out = {}
    for precision in ("fp32", "bf16"):
        options = {**agent_options(model, args), "precision": precision}
        policy = make_policy("starec-fast", PolicyContext(world, seed=0, options=options))
        policy.fit(protocol.split)
        policy.score(protocol.batch.take(np.arange(1)))
        start = time.perf_counter()
        policy.score(protocol.batch)
        out[f"judge_{precision}_s"] = (time.perf_counter() - start) / len(protocol.batch)
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
        row = {**decision_latency(model, args), **judge_precision(model, args), **throughput(model, args)}
        row["judge_over_starec"] = row["judge_s"] / row["starec_s"]
        row["judge_over_slow"] = row["judge_s"] / row["slow_s"]
        row["judge_over_slow_rank"] = row["judge_s"] / row["slow_rank_s"]
        row["bf16_speedup"] = row["judge_fp32_s"] / row["judge_bf16_s"]
        row["batch16_over_batch1"] = row["tokens_per_s_batch16"] / row["tokens_per_s_batch1"]
        results[model] = row
    return results


def report(results: dict[str, dict[str, float]]) -> str:
    """Per-decision seconds per agent (ranking + reflection), tokens, ratios and targets."""
    lines = [
        f"{'model':<14}{'judge':>8}{'+reflect':>9}{'slow rank':>10}{'+reflect':>9}{'slow':>8}"
        f"{'judge/slow':>11}{'bf16 x':>7}{'tok/s b1':>9}{'tok/s b16':>10}{'b16/b1':>7}"
    ]
    for model, r in results.items():
        lines.append(
            f"{model:<14}{r['judge_s']:>8.3f}{r['starec_reflect_s']:>9.3f}"
            f"{r['slow_rank_s']:>10.3f}{r['slow_reflect_s']:>9.3f}{r['slow_s']:>8.3f}"
            f"{r['judge_over_slow']:>11.3f}{r['bf16_speedup']:>7.2f}{r['tokens_per_s_batch1']:>9.1f}"
            f"{r['tokens_per_s_batch16']:>10.1f}{r['batch16_over_batch1']:>7.2f}"
        )
    lines.append("(seconds per user decision; +reflect = STARec's note rewrite; slow = starec-think's CoT ranking "
                 "+ reflection; bf16 x = the judge's fp32 / bf16-autocast time)")
    for model, r in results.items():
        tokens = ", ".join(
            f"{key[:-len('_per_user')]}={value:.0f}" for key, value in r.items() if key.endswith("_per_user")
        )
        lines.append(f"{model} tokens per decision: {tokens}")
        lines.append(f"{model} judge / slow ranking alone (no reflection): {r['judge_over_slow_rank']:.3f}")
    lines.append("targets: judge/slow <= 0.100, b16/b1 >= 4.00")
    for model, r in results.items():
        ok_judge = "met" if r["judge_over_slow"] <= 0.1 else "MISSED"
        ok_batch = "met" if r["batch16_over_batch1"] >= 4.0 else "MISSED"
        lines.append(f"{model}: judge-path target {ok_judge}, batching target {ok_batch}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=lambda s: s.split(","), default=["smollm2-135m", "tiny"])
    p.add_argument("--users", type=int, default=8, help="users (decisions) per ranking path")
    p.add_argument("--history", type=int, default=None,
                   help="history items in every prompt (default: the agents' own, compact fast / full slow)")
    p.add_argument("--fast-tokens", type=int, default=None,
                   help=f"max new tokens of a fast ranking (default: the agents' {LLMAgentConfig.max_new_tokens})")
    p.add_argument("--think-tokens", type=int, default=None,
                   help=f"max new tokens of a slow ranking (default: the agents' {LLMAgentConfig.max_new_tokens_think})")
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
