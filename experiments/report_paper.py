"""The paper-style benchmark table and protocol sanity checks, from a finished run.

``python -m experiments.run`` writes ``results.json`` and ``config.json``;
this module turns them into the table a reviewer compares with the paper
(NDCG x 100, mean ± std over seeds, training data fraction, wall times and
LLM tokens per agent) and checks that the protocol is not broken: a random
ranker must sit at the analytic expectation, the oracle on top, popularity
below BPR-full on real data. For runs with trained rows it states whether
the issue's claims hold (SFT + RL above SFT only, above pop and genre) and
what training used and cost. Usage::

    python -m experiments.report_paper runs/latest   # writes runs/latest/report.md
    python -m experiments.report_paper runs/ml100k --readme README.md --section ml100k \
        --command "python -m experiments.run --config benchmarks/ml100k_classic.toml --out runs/ml100k"

The second form also replaces the README block between
``<!-- results:ml100k -->`` and ``<!-- /results:ml100k -->`` with the table,
so the numbers in the README are generated, never typed.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from pathlib import Path

import numpy as np

from experiments.report import MANIFEST, PER_USER, OutputError, verify_results
from starec_env.files import atomic_write
from starec_env.metrics import ndcg_single

PAPER_METRICS = ("ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20", "hit@10")


class ReportError(ValueError):
    """A run folder lacks the files or fields the report needs."""


def random_ndcg(n_candidates: int, k: int) -> tuple[float, float]:
    """Mean and per-user std of NDCG@k for a uniformly random rank among ``n_candidates``."""
    values = ndcg_single(np.arange(n_candidates), k)
    return float(values.mean()), float(values.std())


def sanity_checks(rows: list[dict], n_candidates: int, n_users: int, real_data: bool) -> list[tuple[str, bool, str]]:
    """(check, passed, detail) for every check the rows allow (absent policies are skipped)."""
    by_name = {r["policy"]: r for r in rows}
    checks: list[tuple[str, bool, str]] = []
    if "random" in by_name:
        mean, std = random_ndcg(n_candidates, 10)
        seeds = max(1, int(by_name["random"].get("seeds", 1)))
        tol = 4 * std / math.sqrt(n_users * seeds)  # 4 standard errors of the mean
        got = by_name["random"]["ndcg@10"]
        checks.append(("random ≈ analytic NDCG@10", abs(got - mean) <= tol,
                       f"{got:.4f} vs expected {mean:.4f} ± {tol:.4f} for 1 of {n_candidates}"))
    policies = [r for r in rows if not r.get("upper_bound")]
    for r in rows:
        if r.get("upper_bound") and policies:
            best = max(policies, key=lambda p: p["ndcg@10"])
            checks.append((f"{r['policy']} (upper bound) on top", r["ndcg@10"] >= best["ndcg@10"],
                           f"{r['ndcg@10']:.4f} vs best policy {best['policy']} {best['ndcg@10']:.4f}"))
    if real_data and "pop" in by_name and "bpr-full" in by_name:
        pop, bpr = by_name["pop"]["ndcg@10"], by_name["bpr-full"]["ndcg@10"]
        checks.append(("pop below bpr-full (real data)", pop < bpr, f"{pop:.4f} vs {bpr:.4f}"))
    return checks


#: Claims about trained rows: (better, worse) pairs compared on NDCG@10.
CLAIMS = (("starec", "starec-sft"), ("starec", "pop"), ("starec", "genre"), ("starec-sft", "pop"),
          ("starec-sft", "starec-base"), ("starec-sft", "starec-rl-only"), ("starec", "starec-noreflect"),
          ("starec", "itemknn"), ("starec", "bpr-full"), ("starec", "sasrec-full"))


def paired_se(a: dict, b: dict) -> tuple[float, str] | None:
    """Standard error of the NDCG@10 difference from per-user differences,
    paired seed by seed (both rows ranked the same users and candidates);
    None when the rows lack per-user results or were not paired."""
    ua, ub = a.get(PER_USER), b.get(PER_USER)
    if not ua or not ub or len(ua) != len(ub) or any(len(x) != len(y) for x, y in zip(ua, ub)):
        return None
    diffs = np.concatenate([np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64) for x, y in zip(ua, ub)])
    if len(diffs) < 2:
        return None
    return float(diffs.std(ddof=1) / math.sqrt(len(diffs))), f"paired over {len(diffs)} user rankings"


def claim_checks(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(claim, verdict, detail) for each of :data:`CLAIMS` whose rows ran.

    The verdict is HOLDS when the difference is at least two standard errors,
    DOES NOT HOLD when it is at most minus two, WITHIN NOISE in between. The
    standard error comes from per-user differences paired by user and seed
    where the rows kept them, else from the seeds' spread."""
    by_name = {r["policy"]: r for r in rows}
    checks = []
    for better, worse in CLAIMS:
        if better not in by_name or worse not in by_name:
            continue
        a, b = by_name[better], by_name[worse]
        diff = a["ndcg@10"] - b["ndcg@10"]
        paired = paired_se(a, b)
        if paired is not None:
            se, how = paired
        else:
            seeds = max(1, int(a.get("seeds", 1)))
            se = math.hypot(a.get("ndcg@10_std", 0.0), b.get("ndcg@10_std", 0.0)) / math.sqrt(seeds) if seeds > 1 else 0.0
            how = f"from the spread of {seeds} seeds" if seeds > 1 else "one seed: no error estimate"
        if se > 0:
            verdict = "HOLDS" if diff >= 2 * se else "DOES NOT HOLD" if diff <= -2 * se else "WITHIN NOISE"
        else:
            verdict = "HOLDS" if diff > 0 else "DOES NOT HOLD"
        detail = (f"NDCG@10 {100 * a['ndcg@10']:.2f} vs {100 * b['ndcg@10']:.2f}, difference {100 * diff:+.2f}"
                  + (f", standard error {100 * se:.2f} ({how}), {diff / se:+.1f} SE" if se > 0 else f" ({how})"))
        checks.append((f"{better} above {worse}", verdict, detail))
    return checks


def training_lines(training: dict) -> list[str]:
    """What the training stages used and cost (from distill.json / rl.json / rl-only.json)."""
    lines = []
    d = training.get("distill")
    if d:
        formats = ", ".join(f"{v} {k}" for k, v in (d.get("examples_by_format") or {}).items())
        sft = d.get("sft", {})
        total = max(1, int(d.get("train_interactions_total", 0)))
        shown = d.get("prompt_interactions")
        tokens = f", {d['train_tokens']:,} tokens" if d.get("train_tokens") else ""
        lines.append(
            f"- Distillation ({d.get('teacher')} teacher, student {d.get('model')}): {d.get('users')} training users, "
            f"{d.get('examples')} SFT rows ({formats}{tokens}); {sft.get('steps')} SFT steps in {sft.get('seconds')} s "
            f"(stage total {d.get('seconds')} s). Data used: the training interactions of those users are "
            f"{100 * d.get('data_fraction', 0.0):.2f}% of all training interactions"
            + (f"; the prompts show {shown:,} of them ({100 * shown / total:.2f}%)." if shown is not None else ".")
        )
    for name in ("rl", "rl-only"):
        r = training.get(name)
        if r:
            start = "the SFT model" if name == "rl" else "the untrained model"
            first, last = r.get("first_reward"), r.get("last_reward")
            trend = f"; mean reward of the first step {first:.3f}, of the last {last:.3f}" if first is not None and last is not None else ""
            lines.append(f"- GRPO `{name}` from {start} (beta {r.get('beta')}): {r.get('steps')} steps in {r.get('seconds')} s{trend}.")
    return lines


def warmup_lines(config: dict, rows: list[dict]) -> list[str]:
    """The memory warm-up's settings and what it cost per warmed user (last seed)."""
    cfg = config.get("config", {})
    warm = cfg.get("warmup")
    costs = []
    for r in rows:
        st = r.get("stats", {})
        users, hits = st.get("warmed_users", 0), st.get("warm_cache_hits", 0)
        if not users:
            if hits:
                costs.append(f"  - {r['policy']}: all {hits} memories reused from the cache (walked by an earlier row or run)")
            continue
        tokens = sum(st.get(f"warm_{m}_{k}", 0) for m in ("judge", "reflect") for k in ("prompt_tokens", "completion_tokens"))
        generated = st.get("warm_reflect_completion_tokens", 0)
        seconds = st.get("warm_judge_seconds", 0) + st.get("warm_reflect_seconds", 0)
        costs.append(f"  - {r['policy']}: {users} users walked, {tokens / users:,.0f} tokens per user "
                     f"({generated / users:,.0f} generated), {seconds / users:.2f} s per user; "
                     f"{st.get('warm_cache_hits', 0)} memories reused from the cache")
    if not warm or not costs:
        return []
    return [f"- Each user's last {warm['steps']} interactions walked before the held-out ranking, {warm['candidates']} "
            f"candidates per step, reflections of at most {warm['max_new_tokens']} tokens. Cost of the last seed:",
            *costs]


def probe_lines(probe: dict | None) -> list[str]:
    """The memory probe (:mod:`experiments.memory_probe`): NDCG@10 by the memory the judge reads."""
    if not probe:
        return []
    head = f"- {probe['row']} on {probe['users']} users (seed {probe['seed']}), NDCG@10 by the note in its prompt:"
    return [head, *(f"  - {name}: {100 * value:.2f}" for name, value in probe["ndcg@10"].items())]


def usage_lines(usage: dict | None) -> list[str]:
    """Wall time and peak resident memory of the run's process, stage by stage
    (:mod:`experiments.usage`)."""
    if not usage:
        return []

    def gib(mib: float | None) -> str:
        return "?" if mib is None else f"{mib / 2**10:.2f} GiB"

    kind = "peak RSS of the stage" if usage.get("per_stage_peaks") else "peak RSS of the process so far"
    stages = [s for s in usage.get("stages", []) if s.get("stage") != "all"]
    lines = [f"- The whole process: {_minutes(usage.get('wall_s', 0.0))} wall, peak RSS {gib(usage.get('peak_rss_mib'))}."]
    lines += [f"  - {s['stage']}: {_minutes(s.get('seconds', 0.0))}, {kind} {gib(s.get('peak_rss_mib'))}" for s in stages]
    return lines


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _cell(row: dict, metric: str) -> str:
    if metric not in row:
        return "-"
    text = f"{100 * row[metric]:.2f}"
    if row.get("seeds", 1) > 1:
        text += f" ± {100 * row.get(metric + '_std', 0.0):.2f}"
    return text


def _cost_cells(stats: dict) -> list[str]:
    frac = stats.get("train_fraction")
    tokens = sum(stats.get(k, 0) for k in ("llm_prompt_tokens", "llm_completion_tokens"))
    return [
        "-" if frac is None else f"{100 * frac:.2f}%",
        "-" if "fit_s" not in stats else f"{stats['fit_s']:.1f}",
        "-" if "score_s" not in stats else f"{stats['score_s']:.2f}",
        f"{int(tokens):,}" if tokens else "-",
    ]


def markdown_table(rows: list[dict]) -> str:
    """The paper's table: NDCG x 100 per agent plus what each agent cost."""
    header = ["agent", *(m.replace("ndcg", "NDCG").replace("hit", "Hit") for m in PAPER_METRICS),
              "train data", "fit s", "score s", "LLM tokens"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        name = r["policy"] + (" (upper bound)" if r.get("upper_bound") else "")
        cells = [name, *(_cell(r, m) for m in PAPER_METRICS), *_cost_cells(r.get("stats", {}))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_report(rows: list[dict], config: dict) -> str:
    """Markdown: run facts, the table, and the sanity checks with their verdicts."""
    facts = config.get("facts", {})
    protocol = (facts.get("protocol") or [{}])[0]
    dataset = facts.get("dataset", {})
    name = dataset.get("name", config.get("config", {}).get("data", {}).get("dataset", "?"))
    try:
        n_users, n_cands = int(protocol["users"]), int(protocol["candidates"])
    except (KeyError, TypeError, ValueError):
        raise ReportError("config.json lacks facts.protocol[0].users/candidates: was it written by experiments.run?") from None
    seeds = config.get("config", {}).get("seeds", [])
    lines = [
        f"# Offline leave-one-out benchmark: {name}",
        "",
        f"{n_users} evaluation users, 1 held-out positive among {n_cands} candidates, "
        f"seeds {seeds}; NDCG/hit × 100, mean ± std over seeds. "
        "'train data' is the share of training interactions a learned agent used; "
        "times are wall seconds of the last seed.",
        "",
        markdown_table(rows),
        "",
        "## Sanity checks",
        "",
    ]
    real = (facts.get("simulator") or {}).get("source") == "fitted"  # fitted to real data, not a known truth
    checks = sanity_checks(rows, n_cands, n_users, real)
    lines += [f"- {'PASS' if ok else 'FAIL'}: {what} ({detail})" for what, ok, detail in checks] or ["- (no checkable agents)"]
    claims = claim_checks(rows)
    if claims:
        lines += ["", "## Claims about the trained student", ""]
        lines += [f"- {verdict}: {what} ({detail})" for what, verdict, detail in claims]
    training = training_lines(facts.get("training") or {})
    if training:
        lines += ["", "## Training", "", *training]
    warm = warmup_lines(config, rows)
    if warm:
        lines += ["", "## Memory warm-up (slow thinking before the offline ranking)", "", *warm]
    probe = probe_lines(facts.get("memory_probe"))
    if probe:
        lines += ["", "## Does the ranking read the memory?", "", *probe]
    usage = usage_lines(facts.get("usage"))
    if usage:
        lines += ["", "## Cost of the run", "", *usage]
    return "\n".join(lines) + "\n"


def write_paper_report(run_dir: str | Path) -> Path:
    """Read ``results.json`` + ``config.json`` from ``run_dir`` and write ``report.md`` beside them.

    The files must be one run's (checked against ``manifest.json``); a folder
    written before manifests existed is read with a warning.
    """
    run_dir = Path(run_dir)
    try:
        if verify_results(run_dir) is None and (run_dir / "results.json").exists():
            logging.getLogger(__name__).warning(
                "%s has no %s (written by an older STARec): cannot check that its files are one run's", run_dir, MANIFEST
            )
    except OutputError as err:
        raise ReportError(str(err)) from None
    loaded = []
    for fname in ("results.json", "config.json"):
        path = run_dir / fname
        try:
            loaded.append(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ReportError(f"{path}: not found; run `python -m experiments.run --out {run_dir}` first") from None
        except json.JSONDecodeError as err:
            raise ReportError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from None
    rows, config = loaded
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "policy" in r for r in rows):
        raise ReportError(f"{run_dir / 'results.json'}: expected a list of rows with a 'policy' field")
    out = run_dir / "report.md"
    text = render_report(rows, config)
    atomic_write(out, lambda fh: fh.write(text.encode()))
    return out


def update_readme(readme: str | Path, section: str, report: str, command: str) -> None:
    """Replace the README block marked ``<!-- results:SECTION -->`` ... ``<!-- /results:SECTION -->``."""
    readme = Path(readme)
    start, end = f"<!-- results:{section} -->", f"<!-- /results:{section} -->"
    text = readme.read_text(encoding="utf-8")
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise ReportError(f"{readme}: no block '{start}' ... '{end}' to fill")
    body = report.split("\n", 2)[2] if report.startswith("# ") else report  # drop the report's own title
    body = re.sub(r"^## ", "#### ", body, flags=re.M)  # nest the report's sections under the README's
    block = f"{start}\nGenerated by `python -m experiments.report_paper` from the run of:\n\n```bash\n{command}\n```\n\n{body.strip()}\n"
    new = text[:i] + block + text[j:]
    atomic_write(readme, lambda fh: fh.write(new.encode("utf-8")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.report_paper", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="folder holding results.json and config.json of a run")
    parser.add_argument("--readme", help="also write the table into this README's results block")
    parser.add_argument("--section", default="results", help="name of the README block (<!-- results:NAME -->)")
    parser.add_argument("--command", default="", help="the command that produced the run, shown above the table")
    args = parser.parse_args(argv)
    try:
        path = write_paper_report(args.run_dir)
        if args.readme:
            update_readme(args.readme, args.section, path.read_text(encoding="utf-8"), args.command)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path.read_text())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
