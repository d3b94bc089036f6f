"""Stage 1 training: supervised anchoring on teacher traces with TRL's SFTTrainer.

Token-level NLL on the completion only (prompt-completion data), full
fine-tune or LoRA. A LoRA run is merged before saving, so the saved folder
is a plain model that GRPO (and its reference model) can load by path.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from experiments.train.common import CSVLogger, finished_run, last_checkpoint, mark_finished, save_model_atomic, trainer_kwargs
from experiments.config import RunConfig


def lora_config(cfg: RunConfig) -> Any:
    """The peft adapter config, or None for a full fine-tune."""
    if not cfg.model.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.model.lora_r,
        lora_alpha=cfg.model.lora_alpha,
        lora_dropout=cfg.model.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def train_sft(cfg: RunConfig, model: Any, tokenizer: Any, train_ds: Any, out_dir: Path) -> dict:
    """Fine-tune ``model`` on ``train_ds`` (TRL conversational prompt/completion).

    Checkpoints go to ``out_dir/checkpoints`` and an interrupted run resumes
    from the newest one; the final model is saved atomically to
    ``out_dir/model``. Returns training facts for the report.
    """
    from trl import SFTConfig, SFTTrainer

    out_dir = Path(out_dir)
    d = cfg.distill
    settings = {"distill": asdict(d), "model": asdict(cfg.model), "examples": len(train_ds)}
    if (done := finished_run(out_dir, settings)) is not None:
        return done
    args = SFTConfig(
        **trainer_kwargs(cfg, out_dir / "checkpoints", d.save_steps),
        per_device_train_batch_size=d.batch_size,
        gradient_accumulation_steps=d.grad_accum,
        learning_rate=d.learning_rate,
        num_train_epochs=d.epochs,
        max_steps=d.max_steps,
        max_length=d.max_length,
        completion_only_loss=True,
        model_init_kwargs=None,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
        callbacks=[CSVLogger(out_dir / "metrics.csv")],
    )
    resume = last_checkpoint(out_dir / "checkpoints")
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    trained = trainer.model
    if cfg.model.lora:
        trained = trained.merge_and_unload()
    save_model_atomic(trained, tokenizer, out_dir / "model")
    facts = {
        "steps": int(trainer.state.global_step),
        "train_loss": float(result.training_loss),
        "seconds": round(seconds, 2),
        "resumed_from": resume,
        "examples": len(train_ds),
        "lora": cfg.model.lora,
    }
    mark_finished(out_dir, settings, facts)
    return facts
