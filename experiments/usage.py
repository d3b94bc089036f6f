"""What a run costs the machine, stage by stage: wall seconds and peak
resident memory, written into the run's facts (``config.json``) and the
paper report, so that the cost of a preset is measured by the run itself.

Between stages the memory a finished stage freed (the SFT trainer's
weights, gradients and optimizer state before GRPO loads its own) is handed
back to the OS, so one stage's peak does not sit under the next one's.
"""
from __future__ import annotations

import gc
import sys
import time
from contextlib import contextmanager
from typing import Iterator

from starec_env.resources import peak_rss_mib, reset_peak_rss, trim_heap


def release_memory() -> None:
    """Free what a finished stage left unreferenced (cycles included) and
    return it to the OS: the CUDA cache if torch is loaded, glibc's heap."""
    gc.collect()
    torch = sys.modules.get("torch")  # never imported here: the classic path runs without torch
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    trim_heap()


class StageUsage:
    """Wall seconds and peak RSS of each stage this process runs.

    A stage's peak is its own where the kernel lets the peak be reset
    (Linux), else the process's peak so far (``per_stage`` says which).
    """

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Forget earlier stages: a new run in this process starts its clock here."""
        self.started = time.perf_counter()
        self.stages: list[dict] = []
        self._open: list[list] = []  # [name, start, peak so far] of the running stages, outermost first
        self._peak = 0.0  # the process's peak over all resets
        self.per_stage = True

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Measure the enclosed stage; a stage run inside another is measured
        on its own and counts toward the outer one's peak too."""
        self._fold_peak()
        self.per_stage = reset_peak_rss() and self.per_stage
        self._open.append([name, time.perf_counter(), 0.0])
        try:
            yield
        finally:
            self._fold_peak()
            name, start, peak = self._open.pop()
            self.stages.append({"stage": name, "seconds": round(time.perf_counter() - start, 1), "peak_rss_mib": _mib(peak)})
            release_memory()

    def _fold_peak(self) -> None:
        """Fold the peak since the last reset into the running stages' and the process's."""
        peak = peak_rss_mib() or 0.0
        self._peak = max(self._peak, peak)
        for entry in self._open:
            entry[2] = max(entry[2], peak)

    def describe(self, record: dict) -> str:
        """One terminal line for a stage record: ``stage distill: 5.0 min wall, peak RSS 4.61 GiB``."""
        peak = record.get("peak_rss_mib")
        rss = "" if peak is None else f", peak RSS {peak / 2**10:.2f} GiB" + ("" if self.per_stage else " (process so far)")
        return f"stage {record['stage']}: {record['seconds'] / 60:.1f} min wall{rss}"

    def summary(self) -> dict:
        """The facts so far: process wall seconds and peak, each finished
        stage, and the ones still running (their figures up to now)."""
        self._fold_peak()
        now = time.perf_counter()
        running = [{"stage": n, "seconds": round(now - s, 1), "peak_rss_mib": _mib(p), "running": True} for n, s, p in self._open]
        return {"wall_s": round(now - self.started, 1), "peak_rss_mib": _mib(self._peak),
                "per_stage_peaks": self.per_stage, "stages": [*self.stages, *running]}


def _mib(value: float) -> float | None:
    return round(value, 1) if value else None


#: The usage of this process's run (``python -m experiments.run``).
USAGE = StageUsage()
