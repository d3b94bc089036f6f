"""Aggregating per-seed results and writing them (JSON, CSV, PNG, table).

A run's results are one set: results.json, results.csv, results.png and
config.json are written into a staging folder inside ``out``, moved into
place under a lock, and sealed by ``manifest.json`` (run id, size and SHA-256
of each file), written last. A reader that finds the manifest and matching
hashes (:func:`verify_results`) reads one coherent run: an interrupted write
leaves no manifest, and two runs writing into one folder take turns. Single
files (training facts, reports) are written atomically (temporary file in
the same folder, then ``os.replace``). New files get the mode the umask
allows, like any file the user creates.
"""
from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import math
import os
import secrets
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from starec_env.files import atomic_write, create_synced

OFFLINE_METRICS = ("ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20", "hit@1", "hit@5", "hit@10")
ONLINE_METRICS = ("ctr", "mean_rating", "session_length", "return")
#: Columns of the printed table (the full set is in results.json / CSV).
TABLE_METRICS = ("ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20", "hit@10", "ctr", "mean_rating", "session_length", "return")


RESULT_FILES = {"json": "results.json", "csv": "results.csv", "png": "results.png", "config": "config.json"}
MANIFEST = "manifest.json"
_STAGING = ".staging-"


class OutputError(OSError):
    """The output folder cannot take the results, or holds a set that is not one run's."""


#: Per-user NDCG@10 of each seed, kept in results rows for paired comparisons.
PER_USER = "ndcg@10_per_user"


def aggregate(policy: str, runs: list[dict], upper_bound: bool, stats: dict) -> dict:
    """One results row: mean and ``<metric>_std`` of every metric over seeds,
    and ``<metric>_se`` where the seeds measured a standard error (online
    metrics: over simulated users), combined as the error of the mean of
    independent seeds."""
    row: dict = {"policy": policy, "upper_bound": upper_bound, "seeds": len(runs)}
    keys = [k for k in (*OFFLINE_METRICS, *ONLINE_METRICS) if any(k in r for r in runs)]
    for key in keys:
        values = np.array([r[key] for r in runs if key in r], dtype=np.float64)
        row[key] = float(values.mean())
        row[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        errors = np.array([r[f"{key}_se"] for r in runs if f"{key}_se" in r], dtype=np.float64)
        if len(errors):
            row[f"{key}_se"] = float(np.sqrt(np.sum(errors**2)) / len(errors))
    if any(PER_USER in r for r in runs):
        row[PER_USER] = [r.get(PER_USER, []) for r in runs]  # one list per seed
    row["stats"] = stats
    return row


def format_table(rows: list[dict], metrics: Iterable[str] = TABLE_METRICS) -> str:
    """A plain-text table; upper bounds are marked so nobody mistakes them for a policy."""
    metrics = [m for m in metrics if any(m in r for r in rows)]
    header = ["policy", *metrics]
    body = []
    for r in rows:
        name = r["policy"] + (" (upper bound)" if r.get("upper_bound") else "")
        cells = [name]
        for m in metrics:
            if m not in r:
                cells.append("-")
                continue
            cells.append(f"{r[m]:.4f}" + _spread(r, m))
        body.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    notes = []
    if any(r.get("seeds", 1) > 1 for r in rows) and any(m in OFFLINE_METRICS for m in metrics):
        notes.append("offline ± std over seeds")
    if any(f"{m}_se" in r for r in rows for m in metrics):
        notes.append("online ± standard error over simulated users")
    return "\n".join([line(header), rule, *(line(c) for c in body), *(["(" + "; ".join(notes) + ")"] if notes else [])])


def online_sizes(rows: list[dict]) -> str:
    """Which rows played how many online sessions of what length ("" without online rows):
    cheap agents and LLM agents are sized apart, so session length and return
    compare only between rows of one size."""
    groups: dict[tuple, list[str]] = {}
    for r in rows:
        stats = r.get("stats", {})
        if "online_users" in stats:
            groups.setdefault((stats["online_users"], stats.get("online_max_cycles")), []).append(r["policy"])
    parts = [f"{', '.join(names)}: {users} users x up to {cycles} steps" for (users, cycles), names in groups.items()]
    return "online sessions per seed - " + "; ".join(parts) if parts else ""


def _spread(row: dict, metric: str) -> str:
    """"±x": the standard error when measured, else the std over seeds (when there are several)."""
    se = row.get(f"{metric}_se")
    if se is not None:
        return "±-" if not math.isfinite(se) else f"±{se:.4f}"
    return f"±{row.get(f'{metric}_std', 0.0):.4f}" if row.get("seeds", 1) > 1 else ""


def write_report(rows: list[dict], out_dir: str | Path, config: dict) -> dict[str, Path]:
    """Write results.json, results.csv, results.png and config.json into ``out_dir`` as one set.

    ``config.json`` gets the set's ``run_id``; the files appear together,
    sealed by ``manifest.json`` (see the module docstring).
    """
    out = check_out_dir(out_dir)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
    png = io.BytesIO()
    _plot(rows, png)
    contents = {
        RESULT_FILES["json"]: _json_bytes(rows),
        RESULT_FILES["csv"]: _csv_text(rows).encode(),
        RESULT_FILES["png"]: png.getvalue(),
        RESULT_FILES["config"]: _json_bytes({**config, "run_id": run_id}),
    }
    write_set(out, contents, run_id)
    return {key: out / name for key, name in RESULT_FILES.items()}


def check_out_dir(out_dir: str | Path) -> Path:
    """``out_dir`` as a folder we can write into (created if missing), or an
    :class:`OutputError` naming it: checked before a run so a bad ``--out``
    does not cost a whole evaluation."""
    out = Path(out_dir)
    where = f"out = {str(out)!r} (--out)"
    if out.exists() and not out.is_dir():
        raise OutputError(f"{where}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".probe-{secrets.token_hex(4)}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{where}: cannot write there ({err.strerror or err})") from None
    return out


def write_set(out: Path, contents: dict[str, bytes], run_id: str) -> None:
    """Put files ``name -> bytes`` into ``out`` together, then seal them with the manifest.

    Under the folder's lock: stage every file (synced to disk), drop the old
    manifest, move the files in, write the new manifest. A staging folder
    left by an interrupted write is removed by the next one.
    """
    with _locked(out):
        for stale in out.glob(_STAGING + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = out / f"{_STAGING}{run_id}"
        staging.mkdir()
        try:
            for name, data in contents.items():
                create_synced(staging / name, lambda fh, data=data: fh.write(data))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        (out / MANIFEST).unlink(missing_ok=True)
        for name in contents:
            os.replace(staging / name, out / name)
        manifest = {
            "run_id": run_id,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in contents.items()},
        }
        atomic_write(out / MANIFEST, lambda fh: fh.write(_json_bytes(manifest)))
        staging.rmdir()


def verify_results(out_dir: str | Path) -> dict | None:
    """The manifest of the result set in ``out_dir`` after checking every file
    against it; None for a folder written before manifests existed (no
    manifest and no sign of an interrupted write). Raises :class:`OutputError`
    for an interrupted or mixed set."""
    out = Path(out_dir)
    path = out / MANIFEST
    if not path.exists():
        if any(out.glob(_STAGING + "*")):
            raise OutputError(f"{out}: the results were being written when the run stopped (no {MANIFEST}); run it again")
        return None
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise OutputError(f"{path}: unreadable manifest ({err})") from None
    for name, want in files.items():
        try:
            data = (out / name).read_bytes()
        except OSError as err:
            raise OutputError(f"{out / name}: listed in {MANIFEST} but unreadable ({err.strerror})") from None
        if hashlib.sha256(data).hexdigest() != want.get("sha256"):
            raise OutputError(f"{out / name}: changed since run {manifest.get('run_id')} wrote it; the set is not one run's")
    return manifest


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``out`` (released when the process dies)."""
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_json(path: Path, data: object) -> None:
    """``data`` as indented JSON (numpy values, paths, NaN made plain), atomically."""
    atomic_write(Path(path), lambda fh: fh.write(_json_bytes(data)))


def _json_bytes(data: object) -> bytes:
    return json.dumps(_jsonable(data), indent=2, default=str).encode()


def _csv_text(rows: list[dict]) -> str:
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k != "stats" and k not in columns)
    stat_keys = sorted({k for r in rows for k in r.get("stats", {})})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([*columns, *(f"stats.{k}" for k in stat_keys)])
    for r in rows:
        writer.writerow([r.get(c, "") for c in columns] + [r.get("stats", {}).get(k, "") for k in stat_keys])
    return buf.getvalue()


def _plot(rows: list[dict], fh: io.BytesIO) -> None:
    """Grouped bars of NDCG@k per policy (error bars = std over seeds), CTR beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [m for m in ("ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20") if any(m in r for r in rows)]
    online = any("ctr" in r for r in rows)
    fig, axes = plt.subplots(1, 2 if online else 1, figsize=(12 if online else 8, 4.5), squeeze=False)
    names = [r["policy"] + ("*" if r.get("upper_bound") else "") for r in rows]
    x = np.arange(len(rows))
    width = 0.8 / max(1, len(ks))
    ax = axes[0, 0]
    for j, k in enumerate(ks):
        ax.bar(x + j * width, [r.get(k, 0.0) for r in rows], width, yerr=[r.get(f"{k}_std", 0.0) for r in rows], label=k)
    ax.set_xticks(x + width * (len(ks) - 1) / 2, names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title("Offline leave-one-out (* = upper bound)")
    ax.legend(fontsize=8)
    if online:
        ax = axes[0, 1]
        ax.bar(x, [r.get("ctr", 0.0) for r in rows], 0.6, yerr=[r.get("ctr_std", 0.0) for r in rows], color="tab:gray")
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title("Online click-through rate")
    fig.tight_layout()
    fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def write_reward_curves(rows: list[dict], path: Path, title: str) -> None:
    """Learning curve of every reward term (``rewards/<term>/mean``) and the
    weighted total over training steps, from a trainer's metrics.csv rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = sorted({k for r in rows for k in r if k.startswith("rewards/") and k.endswith("/mean")})
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key in [*terms, "reward"]:
        points = [(float(r["step"]), float(r[key])) for r in rows if key in r]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", ms=3, lw=2.5 if key == "reward" else 1.2,
                    label="total (weighted)" if key == "reward" else key.split("/")[1])
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=100))
    plt.close(fig)


def _jsonable(value):
    """Plain JSON types (numpy scalars/arrays, paths, NaN -> null)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
