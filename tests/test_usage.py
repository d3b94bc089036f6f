"""A run measures its own cost: wall seconds and peak RSS per stage, memory handed back between stages."""
from __future__ import annotations

import gc

import numpy as np
import pytest

from experiments.report_paper import usage_lines
from experiments.usage import StageUsage
from starec_env.resources import peak_rss_mib, reset_peak_rss, trim_heap


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 2**10


def test_each_stage_reports_its_own_peak_and_outer_stages_include_inner_ones():
    usage = StageUsage()
    with usage.stage("outer"):
        with usage.stage("big"):
            block = np.ones(300 * 2**20 // 8)  # 300 MiB, every page touched
            del block
        with usage.stage("small"):
            pass
    summary = usage.summary()
    stages = {s["stage"]: s for s in summary["stages"]}
    assert [s["stage"] for s in summary["stages"]] == ["big", "small", "outer"]
    assert stages["outer"]["peak_rss_mib"] >= stages["big"]["peak_rss_mib"]
    assert summary["peak_rss_mib"] >= stages["big"]["peak_rss_mib"]
    assert summary["wall_s"] >= stages["outer"]["seconds"] >= stages["big"]["seconds"]
    if not summary["per_stage_peaks"]:
        pytest.skip("this kernel cannot reset the peak RSS: stage peaks run from the process start")
    assert stages["big"]["peak_rss_mib"] - stages["small"]["peak_rss_mib"] > 250


def test_running_stages_are_reported_up_to_now():
    usage = StageUsage()
    with usage.stage("all"):
        with usage.stage("eval"):
            summary = usage.summary()
    assert [(s["stage"], s.get("running")) for s in summary["stages"]] == [("all", True), ("eval", True)]
    usage.restart()
    assert usage.summary()["stages"] == []


def test_trim_heap_returns_freed_memory_to_the_os():
    if not trim_heap():
        pytest.skip("the C library has no malloc_trim")
    objs = [bytes(1000) + bytes([i % 256]) for i in range(200_000)]  # ~200 MiB of malloc'd (not pymalloc) blocks
    keep = objs[::50]  # live blocks spread over the heap: glibc cannot just shrink its top
    del objs
    gc.collect()
    before = _rss_mib()
    assert trim_heap()
    assert before - _rss_mib() > 100
    assert len(keep) == 4000


def test_peak_rss_reset_restarts_from_the_current_size():
    block = np.ones(200 * 2**20 // 8)
    del block
    high = peak_rss_mib()
    if not reset_peak_rss():
        pytest.skip("this kernel cannot reset the peak RSS")
    assert peak_rss_mib() < high - 150


def test_report_lines_name_each_stage_but_not_the_whole_loop():
    usage = {"wall_s": 5400.0, "peak_rss_mib": 8192.0, "per_stage_peaks": True,
             "stages": [{"stage": "distill", "seconds": 720.0, "peak_rss_mib": 4096.0},
                        {"stage": "all", "seconds": 5399.0, "peak_rss_mib": 8192.0, "running": True}]}
    lines = usage_lines(usage)
    assert lines[0] == "- The whole process: 90.0 min wall, peak RSS 8.00 GiB."
    assert lines[1:] == ["  - distill: 12.0 min, peak RSS of the stage 4.00 GiB"]
    assert usage_lines(None) == []


def test_terminal_line_names_the_stage_its_wall_and_peak():
    usage = StageUsage()
    line = usage.describe({"stage": "rl", "seconds": 90.0, "peak_rss_mib": 3072.0})
    assert line == "stage rl: 1.5 min wall, peak RSS 3.00 GiB"
    usage.per_stage = False
    assert usage.describe({"stage": "rl", "seconds": 90.0, "peak_rss_mib": None}) == "stage rl: 1.5 min wall"
    assert usage.describe({"stage": "rl", "seconds": 90.0, "peak_rss_mib": 1024.0}).endswith("1.00 GiB (process so far)")
