"""Writing results under bad conditions: bad folders, interrupts, two writers, tampering.

The result files of a run are one set (experiments.report): either the whole
new set with its manifest, or the old set untouched, never a mix; a folder
that cannot take them is refused by name before any work; files get the
umask's mode.
"""
from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

import experiments.report as report
from experiments.report import MANIFEST, RESULT_FILES, OutputError, check_out_dir, verify_results, write_json, write_report
from experiments.report_paper import ReportError, write_paper_report
from starec_env.files import atomic_write


def _rows(tag: str, n: int = 2) -> list[dict]:
    return [{"policy": f"{tag}{i}", "upper_bound": False, "seeds": 2, "ndcg@10": 0.1 * i, "ndcg@10_std": 0.01,
             "ctr": 0.5, "ctr_se": 0.02, "stats": {"fit_s": 1.0}} for i in range(n)]  # fmt: skip


def _config(tag: str) -> dict:
    return {"config": {"policies": [f"{tag}0", f"{tag}1"], "seeds": [0, 1]},
            "facts": {"dataset": {"name": "synthetic"}, "protocol": [{"users": 10, "candidates": 20}]}}  # fmt: skip


def _coherent(out: Path) -> str:
    """The run id of the set in ``out``, after checking every file belongs to it."""
    manifest = verify_results(out)
    assert manifest is not None
    config = json.loads((out / "config.json").read_text())
    rows = json.loads((out / "results.json").read_text())
    assert config["run_id"] == manifest["run_id"]
    assert [r["policy"] for r in rows] == config["config"]["policies"]
    return manifest["run_id"]


# ------------------------------------------------------------ folders that cannot take results
# (id, make the bad --out under tmp, fragment of the message)
BAD_OUT = [
    ("out-is-a-file", lambda tmp: (tmp.joinpath("f").write_text("x"), tmp / "f")[1], "exists and is not a folder"),
    ("out-under-a-file", lambda tmp: (tmp.joinpath("g").write_text("x"), tmp / "g" / "run")[1], "cannot write there"),
    ("out-is-a-dangling-link", lambda tmp: (tmp.joinpath("l").symlink_to(tmp / "gone" / "x"), tmp / "l")[1], "cannot write there"),
]


@pytest.mark.parametrize(("case", "make", "fragment"), BAD_OUT, ids=[c[0] for c in BAD_OUT])
def test_bad_out_folder_is_named(tmp_path: Path, case, make, fragment) -> None:
    out = make(tmp_path)
    for attempt in (lambda: check_out_dir(out), lambda: write_report(_rows("a"), out, _config("a"))):
        with pytest.raises(OutputError) as err:
            attempt()
        assert str(out) in str(err.value) and "--out" in str(err.value) and fragment in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_folder_is_named(tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot write there"):
            check_out_dir(out)
    finally:
        out.chmod(0o755)


# --------------------------------------------------------------------------- file modes
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_result_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        write_report(_rows("a"), tmp_path, _config("a"))
        write_json(tmp_path / "facts.json", {"x": 1})
    finally:
        os.umask(old)
    for name in [*RESULT_FILES.values(), MANIFEST, "facts.json"]:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_replacing_a_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write(path, lambda fh: fh.write(b"new"))
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o640


# ---------------------------------------------------------------- interrupts and tampering
def test_interrupt_while_preparing_keeps_the_old_set(tmp_path: Path, monkeypatch) -> None:
    write_report(_rows("old"), tmp_path, _config("old"))
    before = _coherent(tmp_path)

    def interrupted(rows, fh):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "_plot", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(_rows("new"), tmp_path, _config("new"))
    assert _coherent(tmp_path) == before and not list(tmp_path.glob(".staging-*")) and not list(tmp_path.glob(".*.tmp"))


def test_interrupt_while_moving_files_in_leaves_no_valid_set_and_heals(tmp_path: Path, monkeypatch) -> None:
    write_report(_rows("old"), tmp_path, _config("old"))
    real_replace, moved = os.replace, []

    def replace_then_stop(src, dst):
        if moved:
            raise KeyboardInterrupt  # Ctrl-C after the first file went in
        moved.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(report.os, "replace", replace_then_stop)
    with pytest.raises(KeyboardInterrupt):
        write_report(_rows("new"), tmp_path, _config("new"))
    monkeypatch.setattr(report.os, "replace", real_replace)
    with pytest.raises(OutputError, match="being written when the run stopped"):
        verify_results(tmp_path)
    with pytest.raises(ReportError, match="being written when the run stopped"):
        write_paper_report(tmp_path)
    write_report(_rows("again"), tmp_path, _config("again"))  # the next write clears the leftovers
    assert _coherent(tmp_path) and not list(tmp_path.glob(".staging-*"))


# (id, damage done to a finished set, fragment of the message)
TAMPERED = [
    ("results-replaced", lambda out: (out / "results.json").write_text("[]"), "results.json: changed since run"),
    ("png-from-another-run", lambda out: (out / "results.png").write_bytes(b"\x89PNG other"), "results.png: changed since run"),
    ("file-deleted", lambda out: (out / "results.csv").unlink(), "results.csv: listed in manifest.json but unreadable"),
    ("manifest-garbage", lambda out: (out / MANIFEST).write_text("{not json"), "manifest.json: unreadable manifest"),
    ("manifest-without-files", lambda out: (out / MANIFEST).write_text("{}"), "manifest.json: unreadable manifest"),
]


@pytest.mark.parametrize(("case", "damage", "fragment"), TAMPERED, ids=[c[0] for c in TAMPERED])
def test_a_set_that_is_not_one_runs_is_refused(tmp_path: Path, case, damage, fragment) -> None:
    write_report(_rows("a"), tmp_path, _config("a"))
    damage(tmp_path)
    with pytest.raises(OutputError, match=fragment):
        verify_results(tmp_path)
    with pytest.raises(ReportError, match=fragment):
        write_paper_report(tmp_path)


def test_a_folder_without_results_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="results.json: not found"):
        write_paper_report(tmp_path)


def test_older_folders_without_manifest_are_read_with_a_warning(tmp_path: Path, caplog) -> None:
    write_report(_rows("a"), tmp_path, _config("a"))
    (tmp_path / MANIFEST).unlink()
    assert verify_results(tmp_path) is None
    assert write_paper_report(tmp_path).exists()
    assert "has no manifest.json" in caplog.text


def test_two_writers_into_one_folder_leave_one_whole_set(tmp_path: Path) -> None:
    """Runs finishing together take turns: whatever order, the files agree with each other."""
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for _ in range(4):
                write_report(_rows(tag, n=2 + len(tag)), tmp_path, _config(tag) | {"config": {"policies": [f"{tag}{i}" for i in range(2 + len(tag))]}})
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in ("a", "bb", "ccc")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and _coherent(tmp_path)


def test_nan_metrics_are_written_as_valid_json(tmp_path: Path) -> None:
    rows = _rows("a")
    rows[0]["ctr_se"] = float("nan")
    write_report(rows, tmp_path, _config("a"))
    text = (tmp_path / "results.json").read_text()
    assert "NaN" not in text and json.loads(text)[0]["ctr_se"] is None
