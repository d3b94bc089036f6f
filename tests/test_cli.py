"""`python -m experiments.run`: smoke run, outputs, config errors, stages."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.config import ConfigError, load_run_config, parse_seed_count, parse_seeds, presets
from experiments.report import verify_results
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
        assert row["ctr_se"] > 0 and row["return_se"] > 0 and row["session_length_se"] >= 0  # over the 20 users
        assert row["stats"]["online_users"] == 20 and row["stats"]["online_max_cycles"] == 3
    assert rows[4]["stats"]["train_s"] > 0
    assert "online ± standard error" in printed and "20 users x up to 3 steps" in printed
    assert (out / "results.csv").read_text().startswith("policy,")
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["policy"]["bpr"]["epochs"] == 2
    assert verify_results(out)["run_id"] == config["run_id"]  # one sealed set
    assert not list(out.glob(".*tmp")) and not list(out.glob(".staging-*"))  # atomic writes leave no temporaries

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
    assert cfg.model.name == "tiny" and cfg.policy_options("llmrank")["model"] == "tiny"
    assert cfg.distill.teacher == "local:tiny"
    return 7


def test_seeds_are_a_list_and_a_count_is_its_own_flag(tiny_toml: Path, tmp_path: Path) -> None:
    assert parse_seeds("42") == [42]  # one seed, never "42 seeds"
    assert parse_seeds("4,7") == [4, 7]
    assert parse_seeds("5,") == [5]
    assert parse_seed_count("3") == [0, 1, 2]
    seen = {}
    STAGES["record"] = lambda cfg: seen.setdefault("seeds", cfg.seeds) and 0
    try:
        assert main(["--config", str(tiny_toml), "--stage", "record", "--seeds", "42", "--out", str(tmp_path)]) == 0
        assert seen.pop("seeds") == [42]
        assert main(["--config", str(tiny_toml), "--stage", "record", "--n-seeds", "3", "--out", str(tmp_path)]) == 0
        assert seen.pop("seeds") == [0, 1, 2]
    finally:
        del STAGES["record"]
    with pytest.raises(SystemExit):  # both at once: argparse refuses
        main(["--seeds", "1", "--n-seeds", "2"])


def test_stage_hook_and_fidelity(tiny_toml: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    assert {"distill", "rl", "eval", "all", "fidelity"} <= set(STAGES)
    monkeypatch.setitem(STAGES, "echo", "tests.test_cli:_echo_stage")
    assert main(["--config", str(tiny_toml), "--stage", "echo", "--model", "tiny", "--teacher", "local:tiny"]) == 7
    out = tmp_path / "fid"
    assert main(["--config", str(tiny_toml), "--stage", "fidelity", "--out", str(out)]) == 0
    report = json.loads((out / "fidelity.json").read_text())
    assert "rating_hist" in report and "heldout" in report and "held-out choices" in capsys.readouterr().out


def test_shipped_configs_load() -> None:
    for path in sorted(Path(__file__).resolve().parents[1].joinpath("experiments", "configs").glob("*.toml")):
        load_run_config(path)
    for name in presets():
        cfg = load_run_config(preset=name)
        assert cfg.stage == "all" and {"starec", "teacher"} <= set(cfg.policies)
        if name != "default":  # the quickstart evaluates one trained row, to stay near 15 minutes
            assert "starec-sft" in cfg.policies
    assert {"smoke", "cpu", "gpu", "default"} <= set(presets())


def test_no_arguments_run_the_default_preset(monkeypatch) -> None:
    """`python -m experiments.run` alone = the whole loop with the real student; table rows as the issue asks."""
    seen = {}
    monkeypatch.setitem(STAGES, "all", lambda cfg: seen.setdefault("cfg", cfg) and 0)
    assert main([]) == 0
    cfg = seen["cfg"]
    assert cfg.preset == "default" and cfg.model.name == "smollm2-135m" and cfg.distill.teacher == "oracle"
    expected = {"starec", "teacher", "random", "pop", "genre", "itemknn", "bpr", "oracle"}
    assert set(cfg.policies) == expected


def test_preset_layers_and_typos(tmp_path: Path, capsys) -> None:
    own = tmp_path / "own.toml"
    own.write_text('preset = "smoke"\n[rl]\nsteps = 5\n')
    cfg = load_run_config(own, sets=["rl.beta=0.01"])
    assert cfg.preset == "smoke" and cfg.model.name == "tiny" and cfg.rl.steps == 5 and cfg.rl.beta == 0.01
    with pytest.raises(ConfigError, match="did you mean 'beta'"):
        load_run_config(preset="smoke", sets=["rl.betta=0.1"])
    with pytest.raises(ConfigError, match="expects an integer"):
        load_run_config(preset="smoke", sets=["rl.steps=2.5"])
    assert main(["--preset", "smok"]) == 2
    assert "unknown preset 'smok'" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('preset = "smoke"\n[distill]\nteacher = "gpt"\n')
    assert main(["--config", str(bad)]) == 2
    assert "distill.teacher" in capsys.readouterr().err


def test_classic_eval_stays_light(tmp_path: Path) -> None:
    """The issue-2 benchmark through the new CLI: seconds, and no LLM / training stack imported."""
    code = (
        "import sys; from experiments.run import main; "
        f"rc = main(['--stage', 'eval', '--policies', 'random,pop,genre', '--users', '20', '--n-seeds', '1', '--no-progress', "
        f"'--set', 'online.users=10', '--out', {str(tmp_path)!r}]); "
        "print('heavy:', sorted(m for m in ('transformers', 'trl', 'datasets') if m in sys.modules)); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "heavy: []" in proc.stdout
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["policy"] for r in rows] == ["random", "pop", "genre"]


@pytest.mark.parametrize("policies, stages", [
    ("pop,genre", ["eval"]), ("pop,teacher", ["eval"]), ("pop,starec-sft", ["distill", "eval"]),
    ("starec-base,starec-sft", ["distill", "eval"]), ("pop,starec", ["distill", "rl", "eval"]),
    ("starec-rl-only", ["distill", "rl", "eval"]),
])
def test_the_whole_loop_runs_only_the_stages_its_rows_need(policies: str, stages: list[str], monkeypatch) -> None:
    import experiments.run as run

    ran: list[str] = []
    for name in ("distill", "rl", "eval"):
        monkeypatch.setattr(run, f"run_{name}", lambda cfg, name=name: ran.append(name) or 0)
    run.run_all(load_run_config(preset="smoke", overrides={"policies": policies.split(",")}))
    assert ran == stages


def test_trained_rows_need_their_checkpoints(tmp_path: Path, capsys) -> None:
    args = ["--preset", "smoke", "--stage", "eval", "--policies", "pop,starec", "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "model of row 'starec'" in err and "does not exist" in err and "Traceback" not in err
    folder = tmp_path / "rl" / "model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\x00not a tensor file")
    assert main(args) == 2
    assert "corrupt" in capsys.readouterr().err
    assert main(["--preset", "smoke", "--stage", "distill", "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path)]) == 2
    assert "cannot load model" in capsys.readouterr().err


def test_llm_run_settings_reach_only_llm_policies() -> None:
    """An LLM ``batch_size`` once replaced BPR's own training batch (NDCG@10 63 -> 54 on ML-100K)."""
    from experiments.config import load_run_config

    cfg = load_run_config(None, {}, [])
    assert "batch_size" not in cfg.policy_options("bpr") and "model" not in cfg.policy_options("sasrec")
    assert cfg.policy_options("llmrank")["model"] == cfg.model.name


def test_dataset_flag_drops_the_presets_synthetic_options() -> None:
    from experiments.config import load_run_config

    cfg = load_run_config(None, {"data": {"dataset": "ml-100k"}}, [], preset="smoke")
    assert cfg.data.dataset == "ml-100k" and cfg.data.options == {}
    assert load_run_config(None, {}, [], preset="smoke").data.options  # the preset's own world is kept
    via_set = load_run_config(None, {}, ["data.dataset=ml-100k"], preset="smoke")
    assert via_set.data.dataset == "ml-100k" and via_set.data.options == {}


def test_every_agent_sees_the_same_candidates() -> None:
    """One protocol object per seed drives every agent: identical users, histories, candidates."""
    from experiments.config import load_run_config
    from experiments.evaluate import benchmark
    from policies.rule_based import make_random

    seen: dict[str, list] = {"random": [], "pop": []}

    def recorder(name: str):
        def factory(ctx):
            policy = make_random(ctx)
            score = policy.score

            def record(batch):
                seen[name].append((batch.users.copy(), batch.candidates.copy(), batch.history.copy()))
                return score(batch)

            policy.score = record
            return policy

        return factory

    cfg = load_run_config(None, {"policies": ["random", "pop"], "seeds": [0, 1], "protocol": {"users": 30},
                                 "online": {"enabled": False}, "data": {"options": {"n_users": 80, "n_items": 60}},
                                 "progress": False}, [])
    benchmark(cfg, factories={"random": recorder("random"), "pop": recorder("pop")})
    assert len(seen["random"]) == len(seen["pop"]) >= 2
    for got_a, got_b in zip(seen["random"], seen["pop"]):
        assert all(np.array_equal(x, y) for x, y in zip(got_a, got_b))
    assert not np.array_equal(seen["random"][0][1], seen["random"][-1][1])  # a new seed draws new candidates


def test_online_sessions_are_sized_per_policy_kind() -> None:
    """Cheap agents: many users and full sessions; LLM agents and trained rows: fewer (issue 11, item 10)."""
    from experiments.evaluate import is_llm_row
    from experiments.world import env_config, load_world

    cfg = load_run_config(None, {"data": {"options": {"n_users": 80, "n_items": 60}},
                                 "online": {"users": 50, "llm_users": 3, "llm_env": {"max_cycles": 2}}}, [])
    world = load_world(cfg)
    cheap, llm = env_config(cfg, world, llm=False), env_config(cfg, world, llm=True)
    assert (cheap.n_users, cheap.max_cycles) == (50, 50) and (llm.n_users, llm.max_cycles) == (3, 2)
    assert [is_llm_row(n) for n in ("pop", "bpr", "oracle", "llmrank", "starec", "starec-sft", "teacher")] == [
        False, False, False, True, True, True, True]
    default = load_run_config(preset="default")  # the preset's LLM budget no longer shrinks the classic rows
    assert (default.online.users, default.online.llm_users, default.online.llm_env) == (500, 4, {"max_cycles": 2})


def test_online_standard_errors() -> None:
    """Delta-method error of a ratio and the plain error of a mean, against hand-computed values."""
    from experiments.evaluate import _ratio, _standard_error
    from experiments.report import aggregate

    clicks, steps = np.array([1.0, 3.0, 0.0, 4.0]), np.array([2.0, 4.0, 1.0, 5.0])
    ratio, se = _ratio(clicks, steps)
    residual = clicks - 8 / 12 * steps
    assert ratio == pytest.approx(8 / 12)
    assert se == pytest.approx(np.sqrt((residual**2).sum() / (4 * 3)) / 3.0)
    assert _standard_error(np.array([1.0, 2.0, 3.0])) == pytest.approx(1 / np.sqrt(3))
    assert np.isnan(_standard_error(np.array([1.0]))) and _ratio(np.zeros(3), np.zeros(3))[0] == 0.0
    row = aggregate("p", [{"ctr": 0.5, "ctr_se": 0.03}, {"ctr": 0.7, "ctr_se": 0.04}], False, {})
    assert row["ctr"] == pytest.approx(0.6) and row["ctr_se"] == pytest.approx(0.025)  # sqrt(.03² + .04²) / 2
