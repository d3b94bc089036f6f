"""Real-data simulator: fitting cost and fidelity, beside BPR on the same protocol.

Run: ``python -m benchmarks.bench_simulator`` (ML-100K from the installed
``recbole`` wheel and a generated RecBole dataset, see
:mod:`benchmarks.recbole_world`); ``--recbole DIR`` adds any folder of RecBole
atomic files, ``--no-bpr`` skips the BPR comparison. For each dataset it
fits the simulator on the rows the offline protocol does not hold out and
prints, all measured in this run:

- fit wall and CPU seconds, the fit's peak traced allocation (tracemalloc)
  and the process's peak RSS;
- on the protocol's held-out positives (1 among 20 candidates, 1,000 users,
  seed 0): NDCG@10 of the simulator's oracle, of popularity and of bpr-full
  trained on the same split; the log-likelihood per held-out choice (model,
  popularity, uniform) and the click-probability calibration error;
- the replay: rating-histogram distance and simulated vs. data popularity
  Gini.

Targets (issue 14): oracle >= bpr-full; rating-histogram distance <= 0.10;
|Gini simulated - data| <= 0.05. Wall time on a shared machine also counts
waiting for the CPU, so CPU seconds are printed beside it.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

from benchmarks.recbole_world import write_world
from policies.base import PolicyContext
from policies.registry import make_policy
from starec_env.data import load_dataset
from starec_env.protocol import LeaveOneOut
from starec_env.simulator import build_simulator, fidelity_report


def bench(name: str, data_dir: Path | None, with_bpr: bool) -> dict:
    """Fit, fidelity report and (optionally) bpr-full on one dataset; the printed figures."""
    dataset = load_dataset(name, data_dir)
    tracemalloc.start()
    wall, cpu = time.perf_counter(), time.process_time()
    sim = build_simulator(dataset, seed=0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    protocol = LeaveOneOut(dataset, n_users=1000, seed=0)
    report = fidelity_report(dataset, sim, seed=0, protocol=protocol)
    held = report["heldout"]
    row = {
        "dataset": dataset.name, "users": dataset.n_users, "items": dataset.n_items, "rows": len(dataset.interactions),
        "fit_wall_s": wall, "fit_cpu_s": cpu, "fit_traced_mib": traced, "peak_rss_mib": report["peak_rss_mb"],
        "oracle": held["ndcg"]["oracle_choice"]["ndcg@10"], "pop": held["ndcg"]["popularity"]["ndcg@10"],
        "loglik": held["loglik"], "ece": held["calibration"]["ece"], "top_ece": held["calibration"]["top_choice"]["ece"],
        "hist_tv": report["rating_tv_distance"],
        "gini": (report["popularity"]["data"]["gini"], report["popularity"]["simulated"]["gini"]),
        "epochs": sim.fit_stats["choice"]["epochs"],
    }
    if with_bpr:
        bpr = make_policy("bpr-full", PolicyContext(dataset=dataset, seed=0))
        bpr.fit(protocol.split)
        row["bpr_full"] = protocol.evaluate(bpr.score(protocol.batch))["ndcg@10"]
    return row


def show(row: dict) -> None:
    ll = row["loglik"]
    data_gini, sim_gini = row["gini"]
    print(f"\n{row['dataset']}: {row['users']} users, {row['items']} items, {row['rows']} interactions")
    print(f"  fit {row['fit_wall_s']:.1f} s wall / {row['fit_cpu_s']:.1f} s CPU ({row['epochs']} choice epochs), "
          f"fit peak traced {row['fit_traced_mib']:.0f} MiB, process peak RSS {row['peak_rss_mib']:.0f} MiB")
    bpr = row.get("bpr_full")
    versus = f", bpr-full {100 * bpr:.2f} ({'PASS' if row['oracle'] >= bpr else 'FAIL'}: oracle >= bpr-full)" if bpr is not None else ""
    print(f"  NDCG@10 x 100 on held-out positives: oracle {100 * row['oracle']:.2f}, popularity {100 * row['pop']:.2f}{versus}")
    print(f"  log-likelihood per held-out choice: {ll['catalogue']:.3f} (popularity {ll['popularity']:.3f}, "
          f"uniform {ll['uniform']:.3f}); calibration error {row['ece']:.4f}, top candidate {row['top_ece']:.4f}")
    print(f"  rating-histogram distance {row['hist_tv']:.3f} ({'PASS' if row['hist_tv'] <= 0.10 else 'FAIL'}: <= 0.10); "
          f"Gini {data_gini:.3f} data vs {sim_gini:.3f} simulated "
          f"({'PASS' if abs(sim_gini - data_gini) <= 0.05 else 'FAIL'}: within 0.05)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_simulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recbole", action="append", default=[], metavar="DIR", help="a folder of RecBole atomic files (repeatable)")
    parser.add_argument("--no-ml100k", action="store_true", help="skip ML-100K")
    parser.add_argument("--no-generated", action="store_true", help="skip the generated RecBole dataset")
    parser.add_argument("--no-bpr", action="store_true", help="skip the bpr-full comparison")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [] if args.no_ml100k else [("ml-100k", None)]
        if not args.no_generated:
            runs.append(("recbole", write_world(Path(tmp) / "bookshop")))
        runs += [("recbole", Path(d)) for d in args.recbole]
        for name, folder in runs:
            show(bench(name, folder, not args.no_bpr))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
