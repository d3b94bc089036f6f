"""`python -m experiments.run`: smoke run, outputs, config errors, stages."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.config import ConfigError, load_run_config, parse_seeds
from experiments.run import STAGES, main

TINY = """
policies = ["random", "pop", "genre", "itemknn", "bpr", "oracle"]
seeds = [0, 1]
progress = false

[data.options]
n_users = 80
n_items = 60

[protocol]
users = 40

[online]
users = 20

[online.env]
max_cycles = 3

[policy.bpr]
epochs = 2
"""
REQUIRED = ("policy", "ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20", "hit@1", "hit@5", "hit@10",
            "ctr", "mean_rating", "session_length", "return", "ndcg@10_std", "upper_bound", "stats")


@pytest.fixture
def tiny_toml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _metrics(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "stats"} for r in rows]


def test_smoke_run_writes_results(tiny_toml: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["--config", str(tiny_toml), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "oracle (upper bound)" in printed and "ndcg@10" in printed
    rows = json.loads((out / "results.json").read_text())
    assert [r["policy"] for r in rows] == ["random", "pop", "genre", "itemknn", "bpr", "oracle"]
    for row in rows:
        assert set(REQUIRED) <= set(row), set(REQUIRED) - set(row)
        assert 0.0 <= row["ndcg@1"] <= row["ndcg@5"] <= row["ndcg@10"] <= row["ndcg@20"] <= 1.0
        assert 0.0 <= row["ctr"] <= 1.0 and 1.0 <= row["session_length"] <= 3.0
        assert row["upper_bound"] == (row["policy"] == "oracle")
    assert rows[4]["stats"]["train_s"] > 0
    assert (out / "results.csv").read_text().startswith("policy,")
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["policy"]["bpr"]["epochs"] == 2
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporaries

    again = tmp_path / "again"
    assert main(["--config", str(tiny_toml), "--out", str(again)]) == 0
    assert _metrics(json.loads((again / "results.json").read_text())) == _metrics(rows)


def test_flags_override_toml(tiny_toml: Path, tmp_path: Path) -> None:
    out = tmp_path / "flags"
    code = main(["--config", str(tiny_toml), "--out", str(out), "--policies", "pop,random", "--seeds", "1",
                 "--users", "10", "--no-online", "--set", "policy.bpr.lr=0.5"])
    assert code == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["policy"] for r in rows] == ["pop", "random"] and rows[0]["seeds"] == 1
    assert "ctr" not in rows[0]
    config = json.loads((out / "config.json").read_text())
    assert config["facts"]["protocol"][0]["users"] == 10
    assert config["config"]["policy"]["bpr"] == {"epochs": 2, "lr": 0.5}  # --set merged, TOML kept


def test_toml_typo_names_key_and_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[protocol]\nuser = 100\n")
    assert main(["--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "'user'" in err and "users" in err
    with pytest.raises(ConfigError, match="polices"):
        load_run_config(overrides={"polices": ["pop"]})


@pytest.mark.parametrize(
    "args, message",
    [
        (["--policies", "pop,nope"], "unknown policies"),
        (["--dataset", "ml-10"], "unknown dataset"),
        (["--stage", "train-everything"], "unknown stage"),
        (["--seeds", "a,b"], "--seeds"),
        (["--set", "online.env.slate_sz=3"], "slate_sz"),
        (["--set", "data.options.n_user=3"], "n_user"),
        (["--set", "data.preprocess.kcore=-1"], "kcore"),
        (["--set", "simulator.patiense=2"], "patiense"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str, tiny_toml: Path, tmp_path: Path, capsys) -> None:
    assert main(["--config", str(tiny_toml), "--out", str(tmp_path / "x"), "--users", "5", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def _echo_stage(cfg) -> int:
    """A stage registered by path, as training stages are."""
    assert cfg.model == "tiny" and cfg.policy_options("pop") == {"model": "tiny"}
    return 7


def test_parse_seeds() -> None:
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("4,7") == [4, 7]
    assert parse_seeds("5,") == [5]


def test_stage_hook_and_fidelity(tiny_toml: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    assert {"eval", "fidelity"} <= set(STAGES)
    monkeypatch.setitem(STAGES, "echo", "tests.test_cli:_echo_stage")
    assert main(["--config", str(tiny_toml), "--stage", "echo", "--model", "tiny"]) == 7
    out = tmp_path / "fid"
    assert main(["--config", str(tiny_toml), "--stage", "fidelity", "--out", str(out)]) == 0
    report = json.loads((out / "fidelity.json").read_text())
    assert "rating_hist" in report and '"rating_hist"' in capsys.readouterr().out


def test_shipped_configs_load() -> None:
    for path in sorted(Path(__file__).resolve().parents[1].joinpath("experiments", "configs").glob("*.toml")):
        load_run_config(path)
