"""Aggregating per-seed results and writing them (JSON, CSV, PNG, table).

Every file is written atomically (temporary file in the same folder, then
``os.replace``), so an interrupted run never leaves a half-written
``results.json`` that a later script would misread.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

OFFLINE_METRICS = ("ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20", "hit@1", "hit@5", "hit@10")
ONLINE_METRICS = ("ctr", "mean_rating", "session_length", "return")
#: Columns of the printed table (the full set is in results.json / CSV).
TABLE_METRICS = ("ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20", "hit@10", "ctr", "mean_rating", "session_length", "return")


def aggregate(policy: str, runs: list[dict], upper_bound: bool, stats: dict) -> dict:
    """One results row: mean and ``<metric>_std`` of every metric over seeds."""
    row: dict = {"policy": policy, "upper_bound": upper_bound, "seeds": len(runs)}
    keys = [k for k in (*OFFLINE_METRICS, *ONLINE_METRICS) if any(k in r for r in runs)]
    for key in keys:
        values = np.array([r[key] for r in runs if key in r], dtype=np.float64)
        row[key] = float(values.mean())
        row[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
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
            std = r.get(f"{m}_std", 0.0)
            cells.append(f"{r[m]:.4f}" + (f"±{std:.4f}" if r.get("seeds", 1) > 1 else ""))
        body.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([line(header), rule, *(line(c) for c in body)])


def write_report(rows: list[dict], out_dir: str | Path, config: dict) -> dict[str, Path]:
    """Write results.json, results.csv, results.png and config.json into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "csv": out / "results.csv",
        "png": out / "results.png",
        "config": out / "config.json",
    }
    write_json(paths["json"], rows)
    atomic_write(paths["csv"], lambda fh: fh.write(_csv_text(rows).encode()))
    write_json(paths["config"], config)
    atomic_write(paths["png"], lambda fh: _plot(rows, fh))
    return paths


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], object]) -> None:
    """Run ``write`` on a temporary file beside ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: object) -> None:
    """``data`` as indented JSON (numpy values, paths, NaN made plain), atomically."""
    atomic_write(Path(path), lambda fh: fh.write(json.dumps(_jsonable(data), indent=2, default=str).encode()))


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


def _plot(rows: list[dict], fh: io.BufferedWriter) -> None:
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
