"""Stage 1 training: supervised anchoring on teacher traces with TRL's SFTTrainer.

Two kinds of pre-tokenized rows share one run (:mod:`experiments.train.walks`):
note rows train the reflection by token-level NLL on the teacher's answer;
judge rows train the judgement slots by the listwise loss of
:func:`policies.llm.judge.listwise_loss` (the softmax of a row's slot scores
fitted to the teacher's choice distribution). :class:`JudgeSFTTrainer`
computes both from one forward pass. Full fine-tune or LoRA; a LoRA run is
merged before saving, so the saved folder is a plain model that GRPO (and
its reference model) can load by path.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from experiments.config import RunConfig
from experiments.train.common import (
    CSVLogger,
    TrimHeap,
    data_digest,
    finished_run,
    mark_finished,
    quiet_logs,
    resume_point,
    save_model_atomic,
    trainer_kwargs,
)
from policies.llm.judge import answer_direction, listwise_loss


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


class JudgeCollator:
    """Right-pads a batch of rows: ``input_ids``/``attention_mask``/``labels``,
    ``slots`` (-1 = padding) and ``targets`` (0 on padding)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        n_slots = max(1, max(len(r["slots"]) for r in rows))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        slots = torch.full((len(rows), n_slots), -1, dtype=torch.long)
        targets = torch.zeros((len(rows), n_slots), dtype=torch.float32)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            mask[i, :n] = 1
            labels[i, :n] = torch.tensor(r["labels"])
            if r["slots"]:
                slots[i, : len(r["slots"])] = torch.tensor(r["slots"])
                targets[i, : len(r["targets"])] = torch.tensor(r["targets"], dtype=torch.float32)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "slots": slots, "targets": targets}


def _judge_trainer_class() -> type:
    """SFTTrainer with the judge loss (built lazily: importing trl is slow)."""
    from trl import SFTTrainer

    class JudgeSFTTrainer(SFTTrainer):
        """One forward pass per micro-batch: the listwise loss on judge rows'
        slots (weighted by ``judge_weight``) plus the mean NLL of note rows'
        answer tokens. The full vocabulary logits are built only where a
        label is; slots only meet the yes/no direction of the output head."""

        def __init__(self, *args: Any, answer_ids: tuple[int, int], judge_weight: float = 1.0, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.answer_ids = answer_ids
            self.judge_weight = judge_weight
            self.model_accepts_loss_kwargs = False  # each micro-batch returns its own mean; the Trainer averages

        def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            slots, targets, labels = inputs["slots"], inputs["targets"], inputs["labels"]
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        output_hidden_states=True, logits_to_keep=1, use_cache=False)
            hidden = out.hidden_states[-1]
            loss = hidden.new_zeros((), dtype=torch.float32)
            mode = "train" if model.training else "eval"
            judged = (slots >= 0).any(dim=1)
            if judged.any():
                h = hidden[judged]
                at = slots[judged].clamp(min=0)
                picked = torch.gather(h, 1, at[..., None].expand(-1, -1, h.shape[-1]))
                scores = picked.float() @ answer_direction(model, self.answer_ids).float()
                judge = listwise_loss(scores, targets[judged], slots[judged] >= 0)
                loss = loss + self.judge_weight * judge
                self._metrics[mode]["judge_loss"].append(float(judge.detach()))
            positions = labels[:, 1:] != -100
            if positions.any():
                head = model.get_output_embeddings()
                logits = head(hidden[:, :-1][positions]).float()
                nll = torch.nn.functional.cross_entropy(logits, labels[:, 1:][positions])
                loss = loss + nll
                self._metrics[mode]["note_loss"].append(float(nll.detach()))
            return (loss, out) if return_outputs else loss

    return JudgeSFTTrainer


def train_sft(cfg: RunConfig, model: Any, tokenizer: Any, train_ds: Any, out_dir: Path,
              answer_ids: tuple[int, int] | None = None, callbacks: list | None = None) -> dict:
    """Fine-tune ``model`` on ``train_ds``: TRL conversational prompt/completion
    rows, or, with ``answer_ids`` (the judge's yes/no tokens), the
    pre-tokenized judge and note rows of :mod:`experiments.train.walks`.

    Checkpoints go to ``out_dir/checkpoints`` and an interrupted run resumes
    from the newest one; the final model is saved atomically to
    ``out_dir/model``. Returns training facts for the report.
    """
    from trl import SFTConfig, SFTTrainer

    out_dir = Path(out_dir)
    d = cfg.distill
    settings = {"distill": asdict(d), "model": asdict(cfg.model), "examples": len(train_ds), "data": data_digest(train_ds)}
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
        **({"dataset_kwargs": {"skip_prepare_dataset": True}, "remove_unused_columns": False} if answer_ids else {}),
    )
    extra: dict = {}
    trainer_class: type = SFTTrainer
    if answer_ids is not None:
        trainer_class = _judge_trainer_class()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        extra = {"answer_ids": answer_ids, "judge_weight": d.judge_weight, "data_collator": JudgeCollator(int(pad))}
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
        callbacks=[CSVLogger(out_dir / "metrics.csv"), TrimHeap(), *(callbacks or [])],
        **extra,
    )
    quiet_logs(trainer)
    resume = resume_point(out_dir, settings, d.max_steps)
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
    mark_finished(out_dir, settings, facts, cfg.keep_checkpoints)
    return facts
