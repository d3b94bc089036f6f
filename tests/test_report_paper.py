"""The paper-style report: table formatting and the protocol sanity checks."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from experiments.report_paper import ReportError, random_ndcg, render_report, sanity_checks, write_paper_report


def _row(name: str, ndcg10: float, upper: bool = False, **stats) -> dict:
    row = {"policy": name, "upper_bound": upper, "seeds": 3}
    for k in ("ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20", "hit@10"):
        row[k], row[k + "_std"] = ndcg10, 0.01
    row["stats"] = stats
    return row


def test_random_ndcg_matches_hand_computation() -> None:
    mean, _ = random_ndcg(20, 10)
    assert mean == pytest.approx(sum(1 / math.log2(r + 2) for r in range(10)) / 20)


def test_sanity_checks_pass_and_fail() -> None:
    expected, _ = random_ndcg(20, 10)
    good = [_row("random", expected), _row("pop", 0.45), _row("bpr-full", 0.63), _row("oracle", 0.9, upper=True)]
    assert all(ok for _, ok, _ in sanity_checks(good, 20, 1000, real_data=True))
    bad = [_row("random", expected + 0.1), _row("pop", 0.7), _row("bpr-full", 0.63), _row("oracle", 0.5, upper=True)]
    verdicts = {what: ok for what, ok, _ in sanity_checks(bad, 20, 1000, real_data=True)}
    assert verdicts == {"random ≈ analytic NDCG@10": False, "oracle (upper bound) on top": False,
                        "pop below bpr-full (real data)": False}
    assert len(sanity_checks(bad, 20, 1000, real_data=False)) == 2  # pop vs BPR only judged on real data


def test_report_file(tmp_path) -> None:
    rows = [_row("sasrec-full", 0.7, train_fraction=1.0, fit_s=12.34, score_s=0.5),
            _row("starec", 0.6, llm_prompt_tokens=1000, llm_completion_tokens=234)]
    config = {"config": {"seeds": [0, 1, 2]}, "facts": {"dataset": {"name": "ml-100k"}, "simulator": {"source": "fitted"},
                                                        "protocol": [{"users": 942, "candidates": 20}]}}
    (tmp_path / "results.json").write_text(json.dumps(rows))
    (tmp_path / "config.json").write_text(json.dumps(config))
    text = write_paper_report(tmp_path).read_text()
    assert text == render_report(rows, config)
    assert "| sasrec-full | 70.00 ± 1.00 |" in text and "| 100.00% | 12.3 | 0.50 | - |" in text
    assert "| 1,234 |" in text
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ReportError, match="config.json: line 1"):
        write_paper_report(tmp_path)
    with pytest.raises(ReportError, match="not found"):
        write_paper_report(tmp_path / "missing")


def test_readme_block_is_replaced_and_missing_block_is_an_error(tmp_path) -> None:
    from experiments.report_paper import update_readme

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:ml100k -->\nold table\n<!-- /results:ml100k -->\noutro\n")
    update_readme(readme, "ml100k", "# Title\n\n| a | b |\n", "python -m experiments.run --x")
    text = readme.read_text()
    assert "old table" not in text and "| a | b |" in text and "python -m experiments.run --x" in text
    assert text.startswith("intro\n") and text.endswith("<!-- /results:ml100k -->\noutro\n")
    with pytest.raises(ReportError, match="no block"):
        update_readme(readme, "other", "x", "cmd")


def test_claims_about_the_trained_student_are_judged_and_training_is_reported() -> None:
    from experiments.report_paper import claim_checks

    rows = [_row("pop", 0.58), _row("genre", 0.63), _row("starec-sft", 0.60), _row("starec", 0.605), _row("sasrec-full", 0.70)]
    verdicts = {what: (verdict, detail) for what, verdict, detail in claim_checks(rows)}
    assert set(verdicts) == {"starec above starec-sft", "starec above pop", "starec above genre", "starec-sft above pop",
                             "starec above sasrec-full"}  # only the claims whose rows ran
    assert verdicts["starec above sasrec-full"][0] == "DOES NOT HOLD"
    assert verdicts["starec above pop"] == ("HOLDS", "NDCG@10 60.50 vs 58.00, difference +2.50, standard error 0.82 "
                                                     "(from the spread of 3 seeds), +3.1 SE")
    assert verdicts["starec above starec-sft"][0] == "WITHIN NOISE"
    assert verdicts["starec above genre"][0] == "DOES NOT HOLD"
    training = {
        "distill": {"teacher": "oracle", "model": "smollm2-135m", "users": 300, "examples": 10, "train_tokens": 4500,
                    "examples_by_format": {"judge": 7, "note": 3}, "sft": {"steps": 4, "seconds": 12.5},
                    "seconds": 20.0, "data_fraction": 0.3, "train_interactions_total": 1000, "prompt_interactions": 44},
        "rl": {"steps": 3, "seconds": 9.0, "beta": 0.001, "first_reward": -0.5, "last_reward": 0.25},
    }
    config = {"config": {"seeds": [0, 1, 2]}, "facts": {"dataset": {"name": "synthetic"}, "simulator": {"source": "synthetic"},
                                                        "protocol": [{"users": 100, "candidates": 20}], "training": training}}
    text = render_report(rows, config)
    assert "- DOES NOT HOLD: starec above genre (NDCG@10 60.50 vs 63.00" in text
    assert "10 SFT rows (7 judge, 3 note, 4,500 tokens); 4 SFT steps in 12.5 s" in text
    assert "30.00% of all training interactions; the prompts show 44 of them (4.40%)." in text
    assert "GRPO `rl` from the SFT model (beta 0.001): 3 steps in 9.0 s; mean reward of the first step -0.500, of the last 0.250." in text


def test_claims_pair_per_user_results_when_the_rows_kept_them() -> None:
    """Same users, same candidates: the standard error comes from per-user differences, seed by seed."""
    from experiments.report import PER_USER
    from experiments.report_paper import claim_checks

    rng = np.random.default_rng(0)
    base = [rng.random(300) for _ in range(3)]
    better = dict(_row("starec", 0.0), **{PER_USER: [b + 0.02 + 0.01 * rng.standard_normal(300) for b in base]})
    worse = dict(_row("genre", 0.0), **{PER_USER: base})
    better["ndcg@10"] = float(np.mean(better[PER_USER]))
    worse["ndcg@10"] = float(np.mean(base))
    (what, verdict, detail), = claim_checks([better, worse])
    assert what == "starec above genre" and verdict == "HOLDS"
    assert "paired over 900 user rankings" in detail
    worse[PER_USER] = base[:2]  # not the same seeds: fall back to the seeds' spread
    assert "spread of 3 seeds" in claim_checks([better, worse])[0][2]
