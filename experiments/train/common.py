"""Shared training plumbing: CSV logs, trainer arguments, checkpoints, saving.

TRL's defaults (bf16, gradient checkpointing) are wrong for a CPU: bf16 is
~50x slower than fp32 without AVX-512/AMX and checkpointing only trades
speed for memory we have. Both trainers get their common arguments here.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from experiments.config import RunConfig
from experiments.report import write_json
from experiments.train.dist import is_main_process, wait_for_everyone
from policies.llm.models import use_bf16
from starec_env.files import atomic_write
from starec_env.resources import trim_heap

#: Files that make a saved folder loadable as a model.
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "adapter_model.safetensors")


class CheckpointError(RuntimeError):
    """A model folder or checkpoint is missing or unusable (names the folder and what is wrong)."""


class TrimHeap(TrainerCallback):
    """Hands the heap pages freed by each (sub)step back to the OS.

    Training steps allocate tensors of every sequence length; glibc keeps
    the freed pieces, so without this the resident size of a CPU run grows
    step after step although the live tensors do not (6 SFT steps of the
    default preset: peak 5.3 GB without, 4.8 GB with, for ~14 % more time)."""

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        trim_heap()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        trim_heap()


class CSVLogger(TrainerCallback):
    """Appends every trainer log (loss, each reward term, KL, ...) to a CSV.

    On (re)start, rows logged after the step being resumed from are dropped
    (they will be replayed), so a resumed run keeps one continuous file. The
    header grows when a new metric appears; every write is atomic and only
    the main process writes (multi-process runs through ``accelerate``).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: list[dict] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.rows = [r for r in read_csv(self.path) if float(r.get("step", 0)) <= state.global_step]

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        self.rows.append({"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})
        columns: list[str] = []
        for r in self.rows:
            columns.extend(k for k in r if k not in columns)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in columns} for r in self.rows)
        atomic_write(self.path, lambda fh: fh.write(buf.getvalue().encode()))


def quiet_terminal(log_dir: Path | None = None) -> None:
    """No per-file "Loading weights" / "Writing model shards" bars and no
    deprecation chatter from inside TRL on the terminal of a training stage.
    With ``log_dir``, transformers' own log lines (checkpoint-loading reports,
    cache notices) go to ``log_dir/transformers.log`` instead of the terminal:
    they belong with the run, not in the user's summary."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
    if log_dir is None:
        return
    logger = hf_logging.get_logger()  # the library's root logger
    for handler in [h for h in logger.handlers if getattr(h, "starec_run_log", False)]:
        logger.removeHandler(handler)
        handler.close()
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(Path(log_dir) / "transformers.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.starec_run_log = True  # type: ignore[attr-defined]
    hf_logging.disable_default_handler()
    logger.addHandler(handler)


def quiet_logs(trainer: Any) -> Any:
    """Keep the trainer's progress bar but not its raw log dicts on the
    terminal: every logged value goes to metrics.csv (:class:`CSVLogger`) and
    TensorBoard instead (see :func:`quiet_terminal` too)."""
    from transformers import PrinterCallback, ProgressCallback

    class QuietProgress(ProgressCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            return None

    quiet_terminal()
    shown = any(isinstance(cb, ProgressCallback) for cb in trainer.callback_handler.callbacks)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if shown:
        trainer.add_callback(QuietProgress())
    return trainer


def read_csv(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def use_cpu(cfg: RunConfig) -> bool:
    if cfg.device == "auto":
        return not torch.cuda.is_available()
    return cfg.device == "cpu"


def mixed_bf16(cfg: RunConfig) -> bool:
    """bf16 autocast for training, by ``[model] precision`` (see
    :func:`policies.llm.models.use_bf16`); a model loaded in another dtype
    than bf16 on a GPU keeps it."""
    if use_cpu(cfg):
        return use_bf16(cfg.model.precision, "cpu")
    if cfg.model.precision == "auto" and cfg.model.dtype not in (None, "bfloat16"):
        return False
    return use_bf16(cfg.model.precision, "cuda")


def trainer_kwargs(cfg: RunConfig, output_dir: Path, save_steps: int) -> dict:
    """Arguments both TRL configs share (CPU-safe precision, logging, saving)."""
    cpu = use_cpu(cfg)
    bf16 = mixed_bf16(cfg)
    return dict(
        output_dir=str(output_dir),
        use_cpu=cpu,
        bf16=bf16,
        fp16=False,
        gradient_checkpointing=False,
        activation_checkpointing=False,
        logging_steps=1,
        save_strategy="steps",
        save_steps=max(1, save_steps),
        save_total_limit=2,
        report_to=["tensorboard"],
        seed=cfg.data.seed,
        data_seed=cfg.data.seed,
        dataloader_num_workers=0,
        disable_tqdm=not cfg.progress,
    )


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest usable ``checkpoint-N`` folder, or None for a fresh run.

    A checkpoint without its trainer state or weights (a run killed while
    saving) is an error naming the folder, rather than a resume that
    silently restarts from scratch or a deep traceback.
    """
    from transformers.trainer_utils import get_last_checkpoint

    if not Path(output_dir).is_dir():
        return None
    last = get_last_checkpoint(str(output_dir))
    if last is None:
        return None
    if not (Path(last) / "trainer_state.json").exists():
        raise CheckpointError(
            f"checkpoint {last} has no trainer_state.json (interrupted while saving?); "
            f"delete that folder to resume from the previous checkpoint"
        )
    check_model_dir(Path(last), what="checkpoint")
    return last


#: Settings a resumed run may change: how long it trains (more steps continue from the last checkpoint).
LENGTH_KEYS = ("steps", "max_steps", "epochs")


def data_digest(rows: Any) -> str:
    """A digest of a training set's rows: part of a run's settings, so a
    finished stage or its checkpoints are reused only for the very same data
    (prompt layout, walks, teacher, world) and not just for equal trainer
    settings."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def resume_point(out_dir: Path, settings: dict, steps: int) -> str | None:
    """The checkpoint a training run of ``steps`` steps (<= 0: set by epochs)
    in ``out_dir`` continues from, or None.

    The settings of a folder's checkpoints are kept beside them
    (``run_settings.json``); a run only resumes checkpoints made with the same
    settings up to its length (:data:`LENGTH_KEYS`) and not past its last
    step. Anything else - other settings, checkpoints of an older STARec
    without their settings, a checkpoint beyond the requested steps - is a
    :class:`CheckpointError` naming the folder, not a silent mix of two runs.
    """
    out_dir = Path(out_dir)
    record = out_dir / "run_settings.json"
    wanted = json.loads(json.dumps(settings, default=str))
    resume = last_checkpoint(out_dir / "checkpoints")
    if resume is not None:
        if not record.exists():
            raise CheckpointError(f"{out_dir / 'checkpoints'} holds checkpoints without their settings (an older run?); "
                                  f"use a new --out or delete that folder")
        changed = _changed_keys(json.loads(record.read_text()), wanted)
        if changed:
            raise CheckpointError(f"{out_dir / 'checkpoints'} holds checkpoints of a run with other settings "
                                  f"({', '.join(changed)}); use a new --out or delete that folder")
        if 0 < steps < int(Path(resume).name.rsplit("-", 1)[-1]):
            raise CheckpointError(f"{resume} is past the {steps} steps asked for; use a new --out or delete that folder")
    write_json(record, wanted)
    return resume


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, ignoring :data:`LENGTH_KEYS`."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_keys(a, b, f"{prefix}{key}.")
        elif key not in LENGTH_KEYS and a != b:
            out.append(f"{prefix}{key}")
    return out


def check_model_dir(path: Path, what: str = "model folder") -> Path:
    """Fail early and clearly when ``path`` is not a loadable saved model."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{what} {path} does not exist; run the stage that produces it first")
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise CheckpointError(f"{what} {path} has no config.json: not a saved model")
    weights = [f for f in _WEIGHT_FILES if (path / f).exists()]
    if not weights:
        raise CheckpointError(f"{what} {path} has no weights (expected one of {list(_WEIGHT_FILES)})")
    if (path / "model.safetensors").exists():
        from safetensors import safe_open

        try:
            with safe_open(str(path / "model.safetensors"), framework="pt") as fh:
                fh.keys()
        except Exception as exc:  # safetensors raises several types for a damaged file
            raise CheckpointError(f"{what} {path}: model.safetensors is corrupt ({exc})") from None
    return path


def save_model_atomic(model: Any, tokenizer: Any, target: Path) -> Path:
    """Save model + tokenizer to a temp folder, then swap it into place
    (main process only; the others wait until the folder is there)."""
    target = Path(target)
    if not is_main_process():
        wait_for_everyone()
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    wait_for_everyone()
    return target


def finished_run(out_dir: Path, settings: dict) -> dict | None:
    """The facts of a training run in ``out_dir`` that already finished with
    exactly these ``settings`` (rerunning a finished stage is then a no-op;
    changed settings, e.g. more steps, resume from the newest checkpoint)."""
    done = Path(out_dir) / "done.json"
    if not done.exists():
        return None
    data = json.loads(done.read_text())
    if data.get("settings") != json.loads(json.dumps(settings, default=str)):
        return None
    check_model_dir(Path(out_dir) / "model", what="finished model")
    return {**data["facts"], "resumed_from": "finished"}


def mark_finished(out_dir: Path, settings: dict, facts: dict, keep_checkpoints: str) -> None:
    """Record a finished stage, then drop the resume checkpoints it no longer
    needs (``keep_checkpoints``: "all", "last" or "none"; each one holds the
    optimizer state, ~3x the model): a finished stage is reused from
    ``model/`` alone, and only a later run with more steps resumes from a
    kept checkpoint."""
    if not is_main_process():
        return
    write_json(Path(out_dir) / "done.json", {"settings": json.loads(json.dumps(settings, default=str)), "facts": facts})
    if keep_checkpoints == "all":
        return
    folder = Path(out_dir) / "checkpoints"
    keep = last_checkpoint(folder) if keep_checkpoints == "last" and folder.is_dir() else None
    for old in sorted(folder.glob("checkpoint-*")):
        if str(old) != keep:
            shutil.rmtree(old, ignore_errors=True)
