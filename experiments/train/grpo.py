"""Stage 2 training: GRPO in the simulator with TRL's GRPOTrainer.

The policy starts from a *saved folder* (the SFT model, or the base model
for the RL-only ablation): with ``beta > 0`` TRL rebuilds the reference
model from ``config._name_or_path``, so that path must be the anchor. Each
reward term is its own reward function (TRL logs ``rewards/<term>/mean``)
with its weight from the config.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from experiments.config import RunConfig
from experiments.train.common import (
    CSVLogger,
    TrimHeap,
    check_model_dir,
    data_digest,
    finished_run,
    mark_finished,
    quiet_logs,
    resume_point,
    save_model_atomic,
    trainer_kwargs,
    use_cpu,
)


def grpo_args(cfg: RunConfig, output_dir: Path, weights: list[float]) -> Any:
    """GRPOConfig for one step = ``prompts_per_step`` prompts x ``num_generations`` completions,
    generated together, then trained ``micro_batch`` completions at a time
    (gradient accumulation: the same update with less activation memory)."""
    from trl import GRPOConfig

    r = cfg.rl
    dtype = "float32" if use_cpu(cfg) else (cfg.model.dtype or "bfloat16")
    micro = r.micro_batch or r.num_generations  # sequences per forward/backward: bounds activation memory
    return GRPOConfig(
        **trainer_kwargs(cfg, output_dir, r.save_steps),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=r.prompts_per_step * r.num_generations // micro,
        num_generations=r.num_generations,
        max_completion_length=r.max_completion_length,
        learning_rate=r.learning_rate,
        beta=r.beta,
        temperature=r.temperature,
        max_steps=r.steps,
        reward_weights=weights,
        shuffle_dataset=False,
        model_init_kwargs={"dtype": dtype},
        log_completions=False,
    )


def score_completions_only() -> None:
    """Make TRL's chunked LM head score only the completion tokens on every
    device. TRL compacts the labelled positions only on Triton devices (so
    that compilers elsewhere see fixed tile shapes) and otherwise projects
    every prompt position through the 49k-word head too: with ~600-token
    note prompts and 64-token notes, ~10x the head's work (2 GRPO steps of
    the default preset: 108 -> 88 s, peak RSS 6.5 -> 5.6 GB). The compact
    path is plain torch; the log-probabilities it returns are the same."""
    import trl.trainer.utils as trl_utils

    use_triton = getattr(trl_utils, "_use_triton", None)
    if use_triton is None or getattr(use_triton, "compacts_everywhere", False):
        return  # another TRL: nothing to adjust, or already adjusted

    def compact(device: torch.device) -> bool:
        return device.type == "cpu" or use_triton(device)

    compact.compacts_everywhere = True  # type: ignore[attr-defined]
    trl_utils._use_triton = compact


def prompts_identity(cfg: RunConfig, train_ds: Any, start: Path) -> Any:
    """What a GRPO run's prompts depend on, for reusing its folder: the rows'
    digest for a dataset in memory; for a live prompt stream (unbounded: it
    cannot be read through) the settings that make it - world, walks, judge
    and note prompts - and the data the start model was trained on."""
    if hasattr(train_ds, "__len__"):
        return data_digest(train_ds)
    done = Path(start).parent / "done.json"
    trained_on = json.loads(done.read_text()).get("settings", {}).get("data") if done.exists() else None
    return {"world": asdict(cfg.data), "simulator": cfg.simulator, "warmup": asdict(cfg.warmup),
            "judge": asdict(cfg.judge), "prompt": asdict(cfg.prompt), "start_data": trained_on}


def train_grpo(
    cfg: RunConfig,
    start: Path,
    train_ds: Any,
    reward_funcs: list[Callable],
    weights: list[float],
    out_dir: Path,
    on_trainer: Callable[[Any], None] | None = None,
    callbacks: list | None = None,
) -> dict:
    """Run GRPO from the saved model at ``start``; save to ``out_dir/model``.

    ``train_ds`` is usually an ``IterableDataset`` streaming prompts from the
    live simulation. ``on_trainer`` is called with the trainer before
    training (the memory reward binds its follow-up ranker to the policy
    there). Interrupted runs resume from the newest checkpoint, including
    the position in the prompt stream (TRL replays the seeded stream).
    """
    from trl import GRPOTrainer

    out_dir = Path(out_dir)
    start = check_model_dir(Path(start), what="GRPO start model")
    settings = {"rl": asdict(cfg.rl), "reward": asdict(cfg.reward), "weights": list(weights), "start": str(start),
                "data": prompts_identity(cfg, train_ds, start)}
    if (done := finished_run(out_dir, settings)) is not None:
        return done
    args = grpo_args(cfg, out_dir / "checkpoints", weights)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(start))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    score_completions_only()
    trainer = GRPOTrainer(
        model=str(start),
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        callbacks=[CSVLogger(out_dir / "metrics.csv"), TrimHeap(), *(callbacks or [])],
    )
    quiet_logs(trainer)
    if on_trainer is not None:
        on_trainer(trainer)
    resume = resume_point(out_dir, settings, cfg.rl.steps)
    began = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.data.seed)  # generation sampling draws from the global RNG inside TRL; keep it local
        trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - began
    save_model_atomic(trainer.model, tokenizer, out_dir / "model")
    history = [h for h in trainer.state.log_history if "reward" in h]
    facts = {
        "steps": int(trainer.state.global_step),
        "seconds": round(seconds, 2),
        "resumed_from": resume,
        "start": str(start),
        "beta": cfg.rl.beta,
        "first_reward": history[0]["reward"] if history else None,
        "last_reward": history[-1]["reward"] if history else None,
    }
    mark_finished(out_dir, settings, facts, cfg.keep_checkpoints)
    return facts
