"""Training stages: the whole pipeline, checkpoints, resume, and RL that measurably learns.

Uses the random ``tiny`` model (2-layer Llama, SmolLM2 tokenizer): the smoke
preset end to end, and a toy ranking task whose optimum is known.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from experiments.config import ConfigError, load_run_config  # noqa: E402
from experiments.report_paper import write_paper_report  # noqa: E402
from experiments.train.common import CheckpointError, check_model_dir, last_checkpoint, read_csv  # noqa: E402
from reward.ranking import RankTierReward  # noqa: E402

torch.set_num_threads(1)
pytestmark = pytest.mark.slow  # trains models (seconds each); `-m "not slow"` skips them

IDS = ["A", "B", "C", "D"]
PROMPT = [{"role": "user", "content": "Rank the candidates A, B, C, D."}]


def toy_sft_data(n: int, seed: int):
    """Rankings with a uniformly random first id: the format, but no preference."""
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        order = rng.permutation(IDS)
        rows.append({"prompt": PROMPT, "completion": [{"role": "assistant", "content": "Ranking: " + " > ".join(order)}]})
    return Dataset.from_list(rows)


def toy_rl_data(n: int, target: int = 0):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": PROMPT, "candidate_ids": IDS, "target": target, "mode": "fast"} for _ in range(n)])


def p_first_is_target(folder: Path) -> float:
    """Exact probability that the model's first ranked id is "A" (the optimum)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policies.llm.backend import LLMBackend

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    logp = LLMBackend(model, tok).score_options([PROMPT], [[" " + i for i in IDS]], prefix="Ranking:")[0]
    p = np.exp(logp - logp.max())
    return float(p[0] / p.sum())


@pytest.fixture(scope="module")
def sft_model(tmp_path_factory) -> Path:
    from experiments.train.sft import train_sft
    from policies.llm.models import load_model

    out = tmp_path_factory.mktemp("toy") / "sft"
    cfg = load_run_config(preset="smoke", sets=["distill.max_steps=20", "distill.learning_rate=1e-2", "distill.batch_size=8", "distill.save_steps=10"])
    model, tok = load_model("tiny", threads=1)
    facts = train_sft(cfg, model, tok, toy_sft_data(64, 0), out)
    assert facts["steps"] == 20
    return out


def test_sft_learns_the_format_and_saves_checkpoints(sft_model):
    check_model_dir(sft_model / "model")
    assert last_checkpoint(sft_model / "checkpoints").endswith("checkpoint-20")
    # the default keep_checkpoints = "last": the step-10 checkpoint went when the stage finished
    assert [p.name for p in (sft_model / "checkpoints").glob("checkpoint-*")] == ["checkpoint-20"]
    rows = read_csv(sft_model / "metrics.csv")
    losses = [float(r["loss"]) for r in rows if "loss" in r]
    assert losses[-1] < losses[0] / 2
    p = p_first_is_target(sft_model / "model")
    assert 0.1 < p < 0.5  # roughly uniform over 4 ids: no preference learned


@pytest.mark.parametrize("keep, left", [("all", ["checkpoint-1", "checkpoint-2"]), ("none", [])])
def test_a_finished_stage_keeps_the_checkpoints_asked_for(tmp_path, keep, left):
    """keep_checkpoints: "all" leaves the trainer's last two, "none" only the final model;
    either way the finished stage is then reused from its model folder."""
    from experiments.train.sft import train_sft
    from policies.llm.models import load_model

    cfg = load_run_config(preset="smoke", sets=["distill.max_steps=2", "distill.save_steps=1", f"keep_checkpoints={keep}"])
    model, tok = load_model("tiny", threads=1)
    train_sft(cfg, model, tok, toy_sft_data(16, 0), tmp_path / "sft")
    assert sorted(p.name for p in (tmp_path / "sft" / "checkpoints").glob("checkpoint-*")) == left
    assert train_sft(cfg, model, tok, toy_sft_data(16, 0), tmp_path / "sft")["resumed_from"] == "finished"


def test_grpo_increases_reward_on_a_toy_task(sft_model, tmp_path):
    """Target is always "A": optimum reward 1. GRPO must raise P(first = A) and the logged reward."""
    from experiments.train.grpo import train_grpo

    cfg = load_run_config(
        preset="smoke",
        sets=[
            "rl.steps=12", "rl.prompts_per_step=2", "rl.num_generations=8", "rl.max_completion_length=10",
            "rl.learning_rate=2e-3", "rl.beta=0.0", "rl.save_steps=6",
        ],
    )
    before = p_first_is_target(sft_model / "model")
    facts = train_grpo(cfg, sft_model / "model", toy_rl_data(64), [RankTierReward()], [1.0], tmp_path / "rl")
    after = p_first_is_target(tmp_path / "rl" / "model")
    assert facts["steps"] == 12
    assert after > before + 0.1, (before, after)
    rows = read_csv(tmp_path / "rl" / "metrics.csv")
    rewards = [float(r["rewards/rank_tier/mean"]) for r in rows if "rewards/rank_tier/mean" in r]
    assert len(rewards) == 12
    assert np.mean(rewards[-3:]) > np.mean(rewards[:3])
    assert list((tmp_path / "rl" / "checkpoints").glob("runs/*")) or list((tmp_path / "rl" / "checkpoints" / "runs").rglob("events*"))


def test_interrupted_grpo_resumes_from_checkpoint(sft_model, tmp_path):
    from experiments.train.grpo import train_grpo

    base = ["rl.prompts_per_step=1", "rl.num_generations=2", "rl.max_completion_length=6", "rl.beta=0.001", "rl.save_steps=2",
            "rl.micro_batch=1"]  # one completion per forward/backward, accumulated
    first = load_run_config(preset="smoke", sets=base + ["rl.steps=2"])
    out = tmp_path / "rl"
    train_grpo(first, sft_model / "model", toy_rl_data(16), [RankTierReward()], [1.0], out)
    # a second run asked for more steps picks up at step 2 instead of starting over
    second = replace(first, rl=replace(first.rl, steps=4))
    facts = train_grpo(second, sft_model / "model", toy_rl_data(16), [RankTierReward()], [1.0], out)
    assert facts["resumed_from"].endswith("checkpoint-2")
    assert facts["steps"] == 4
    steps = [int(float(r["step"])) for r in read_csv(out / "metrics.csv") if "loss" in r]
    assert steps == [1, 2, 3, 4]


def test_checkpoints_of_other_settings_are_not_resumed(sft_model, tmp_path):
    """Checkpoints only continue the run that made them: other settings, fewer steps than they
    hold, or checkpoints without their settings are a clear error, never a silent mix of runs."""
    import shutil

    from experiments.train.grpo import train_grpo

    base = ["rl.prompts_per_step=1", "rl.num_generations=2", "rl.max_completion_length=6", "rl.save_steps=1",
            "rl.micro_batch=1"]
    first = load_run_config(preset="smoke", sets=base + ["rl.steps=2"])
    out = tmp_path / "rl"
    train_grpo(first, sft_model / "model", toy_rl_data(8), [RankTierReward()], [1.0], out)
    # a finished stage is reused only for the very same training data, not for equal trainer settings alone
    with pytest.raises(CheckpointError, match=r"other settings \(data\)"):
        train_grpo(first, sft_model / "model", toy_rl_data(8, target=1), [RankTierReward()], [1.0], out)
    (out / "done.json").unlink()  # as if interrupted after its last checkpoint
    other = replace(first, rl=replace(first.rl, learning_rate=first.rl.learning_rate * 2))
    with pytest.raises(CheckpointError, match=r"other settings \(rl\.learning_rate\)"):
        train_grpo(other, sft_model / "model", toy_rl_data(8), [RankTierReward()], [1.0], out)
    shorter = replace(first, rl=replace(first.rl, steps=1))
    with pytest.raises(CheckpointError, match="past the 1 steps"):
        train_grpo(shorter, sft_model / "model", toy_rl_data(8), [RankTierReward()], [1.0], out)
    (out / "run_settings.json").unlink()
    with pytest.raises(CheckpointError, match="without their settings"):
        train_grpo(first, sft_model / "model", toy_rl_data(8), [RankTierReward()], [1.0], out)
    shutil.rmtree(out / "checkpoints")  # a clean folder trains afresh
    assert train_grpo(other, sft_model / "model", toy_rl_data(8), [RankTierReward()], [1.0], out)["resumed_from"] is None


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'beta'"):
        load_run_config(preset="smoke", sets=["rl.betta=0.1"])
    with pytest.raises(ConfigError, match="unknown preset 'smok'.*did you mean 'smoke'"):
        load_run_config(preset="smok")
    with pytest.raises(ConfigError, match="expects a number"):
        load_run_config(preset="smoke", overrides={"rl": {"steps": "many"}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[rl]\nsteps = \n")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_run_config(bad)

    with pytest.raises(CheckpointError, match="does not exist"):
        check_model_dir(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="no weights"):
        check_model_dir(broken)
    (broken / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        check_model_dir(broken)
    half = tmp_path / "ckpts" / "checkpoint-3"
    half.mkdir(parents=True)
    with pytest.raises(CheckpointError, match="trainer_state.json"):
        last_checkpoint(tmp_path / "ckpts")

    from policies.llm.models import ModelLoadError, load_model

    with pytest.raises(ModelLoadError, match="no-such-model"):
        load_model(str(tmp_path / "no-such-model"))


def test_pipeline_end_to_end_smoke(tmp_path, capsys):
    """`python -m experiments.run --preset smoke`: distill -> RL -> eval with the tiny model."""
    from experiments.run import main

    out = tmp_path / "run"
    assert main(["--preset", "smoke", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for stage in ("distill", "rl", "eval", "all"):  # each stage's cost on the terminal
        assert f"stage {stage}: " in printed and "peak RSS" in printed, stage
    for stage in ("sft", "rl", "rl-only"):
        check_model_dir(out / stage / "model")
        assert last_checkpoint(out / stage / "checkpoints").endswith("checkpoint-2")
        assert list((out / stage / "checkpoints" / "runs").rglob("events.out.tfevents*")), f"no TensorBoard log for {stage}"
    check_model_dir(out / "base")
    facts = json.loads((out / "distill.json").read_text())
    assert facts["sft"]["steps"] == 2 and 0 < facts["data_fraction"] < 1
    assert facts["examples_by_format"]["judge"] == facts["decisions"] > 0 and facts["examples_by_format"]["note"] > 0
    assert sum(facts["judge_variants"].values()) == facts["decisions"]
    sft_log = read_csv(out / "sft" / "metrics.csv")
    assert any("judge_loss" in r for r in sft_log) and any("note_loss" in r for r in sft_log)
    curve = read_csv(out / "sft" / "curve.csv")  # the learning curve: held-out NDCG@10 at steps 0, 1, 2
    assert [int(r["step"]) for r in curve] == [0, 1, 2] and all(0 <= float(r["ndcg@10"]) <= 1 for r in curve)
    assert [int(r["step"]) for r in read_csv(out / "rl" / "curve.csv")] == [0, 1, 2]
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    rows = read_csv(out / "rl" / "metrics.csv")
    assert [int(float(r["step"])) for r in rows if "loss" in r] == [1, 2]
    logged = {k for r in rows for k in r}
    for term in ("format", "memory"):  # every reward term, separately
        assert f"rewards/{term}/mean" in logged, term
    assert (out / "rl" / "rewards.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "results.json").read_text())
    assert [r["policy"] for r in results] == load_run_config(preset="smoke").policies
    by_name = {r["policy"]: r for r in results}
    assert by_name["teacher"]["upper_bound"] and not by_name["starec"]["upper_bound"]
    assert by_name["starec"]["stats"]["judge_calls"] > 0  # the student ranked through its judgement slots
    assert by_name["starec-base"]["stats"]["warmed_users"] > 0  # the untrained model warms its memory too
    assert "warm_reflect_calls" not in by_name["starec-noreflect"]["stats"]
    memories = list((out / "memories").glob("memories-*.jsonl"))
    assert memories and all(json.loads(line)["steps"] for f in memories for line in f.read_text().splitlines())
    config = json.loads((out / "config.json").read_text())
    assert set(config["facts"]["training"]) == {"distill", "rl", "rl-only"}
    probe = config["facts"]["memory_probe"]
    assert probe["users"] == 3 and len(probe["ndcg@10"]) == 4
    usage = config["facts"]["usage"]  # the run measured its own cost, stage by stage
    assert [s["stage"] for s in usage["stages"]] == ["distill", "rl", "all", "eval"]
    assert usage["stages"][2]["running"] and usage["stages"][3]["running"]  # measured up to the report
    assert all(s["seconds"] > 0 and s["peak_rss_mib"] > 0 for s in usage["stages"])
    assert usage["wall_s"] >= sum(s["seconds"] for s in usage["stages"] if s["stage"] != "all")
    assert usage["peak_rss_mib"] >= max(s["peak_rss_mib"] for s in usage["stages"])
    report = write_paper_report(out).read_text()
    assert "## Cost of the run" in report and "- eval: " in report and "- all: " not in report
    # rerunning a finished stage is a no-op: no extra step, same model
    assert main(["--preset", "smoke", "--stage", "rl", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "rl.json").read_text())["resumed_from"] == "finished"
    assert [int(float(r["step"])) for r in read_csv(out / "rl" / "metrics.csv") if "loss" in r] == [1, 2]
    took = json.loads((out / "distill.json").read_text())["seconds"]  # ... and keeps what the stage took
    assert main(["--preset", "smoke", "--stage", "distill", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "distill.json").read_text())["seconds"] == took


@pytest.mark.skipif(os.environ.get("STAREC_SKIP_ACCELERATE") == "1", reason="STAREC_SKIP_ACCELERATE=1 (the test takes ~3 min on 2 cores)")
def test_accelerate_two_cpu_processes(tmp_path):
    """`accelerate launch --num_processes 2 --cpu`: both ranks train, one copy of every output."""
    out = tmp_path / "acc"
    for stage in ("distill", "rl"):
        cmd = ["accelerate", "launch", "--num_processes", "2", "--cpu", "-m", "experiments.run",
               "--preset", "smoke", "--stage", stage, "--out", str(out), "--no-progress"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=Path(__file__).resolve().parents[1])
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines = proc.stdout.splitlines()
        summary = f"{stage}: " if stage == "distill" else "rl (rl):"
        for printed in (summary, f"stage {stage}: "):  # printed by rank 0 only
            assert sum(line.startswith(printed) for line in lines) == 1, printed
    for folder in ("base", "sft/model", "rl/model", "rl-only/model"):
        check_model_dir(out / folder)
    assert json.loads((out / "distill.json").read_text())["sft"]["steps"] == 2


def test_memory_bank_keeps_the_best_note_per_key():
    """RL prompts of a later walk step continue from the note that earned the best memory reward."""
    from experiments.train.rollout import MemoryBank

    bank = MemoryBank()
    bank.record(["u1:0:0", "u1:0:0", "u2:0:0"], ["likes comedy", "likes horror", ""], [0.5, 1.0, 1.0])
    assert bank.get("u1:0:0") == "likes horror" and bank.get("u2:0:0") == "" and bank.get("u3:0:0") == ""


def test_training_decisions_mirror_the_protocol_and_hide_their_targets():
    """Targets are each user's last positive; the evidence is fitted without them (no leak into item-kNN)."""
    from experiments.train.walks import make_decisions
    from experiments.world import load_world

    cfg = load_run_config(preset="smoke")
    world = load_world(cfg)
    ds = world.dataset
    decisions = make_decisions(world, ds.interactions, np.arange(10), cfg.protocol, cfg.warmup, np.random.default_rng(0))
    fitted = decisions.split.interactions
    for r, user in enumerate(decisions.batch.users):
        rows = ds.interactions[ds.interactions["user"] == user]
        positives = rows[rows["rating"] > cfg.protocol.positive_threshold]
        target = decisions.batch.candidates[r, decisions.target_pos[r]]
        assert target == positives["item"].iloc[-1]
        assert not ((fitted["user"] == user) & (fitted["item"] == target)).any()
        assert list(decisions.walks[r].items) == [int(i) for i in decisions.batch.history[r][-cfg.warmup.steps:]]
    assert np.allclose(decisions.choice, world.simulator.choice_logit(decisions.batch.users, decisions.batch.candidates))


def test_distillation_variant_shares(tmp_path):
    """memory_share=1: every judge row shows the teacher's note; the shares must add up to 1."""
    from experiments.run import main

    out = tmp_path / "run"
    args = ["--preset", "smoke", "--stage", "distill", "--out", str(out), "--no-progress", "--set", "distill.max_steps=1",
            "--set", "distill.eval_steps=0"]
    assert main(args + ["--set", "distill.memory_share=1", "--set", "distill.plain_share=0", "--set", "distill.append_share=0"]) == 0
    facts = json.loads((out / "distill.json").read_text())
    assert facts["judge_variants"] == {"memory": facts["decisions"], "plain": 0, "append": 0}
    assert facts["examples"] == sum(facts["examples_by_format"].values())
    with pytest.raises(ConfigError, match=r"memory_share \+ plain_share \+ append_share must be 1"):
        load_run_config(preset="smoke", sets=["distill.memory_share=0.9"])


def test_transformers_log_lines_go_to_the_run_folder(tmp_path, capfd):
    """A training stage's transformers warnings land in <out>/transformers.log, not on the terminal."""
    from transformers.utils import logging as hf_logging

    from experiments.train.common import quiet_terminal

    logger = hf_logging.get_logger()
    try:
        quiet_terminal(tmp_path / "a")
        quiet_terminal(tmp_path / "b")  # a later stage moves the log, it does not write twice
        hf_logging.get_logger("transformers.modeling_utils").warning("missing keys: lm_head.weight")
        assert "missing keys" not in capfd.readouterr().err
        assert "missing keys" in (tmp_path / "b" / "transformers.log").read_text()
        assert "missing keys" not in (tmp_path / "a" / "transformers.log").read_text()
    finally:
        for handler in [h for h in logger.handlers if getattr(h, "starec_run_log", False)]:
            logger.removeHandler(handler)
            handler.close()
        hf_logging.enable_default_handler()


def test_grpo_micro_batches_keep_the_step_size():
    from experiments.train.grpo import grpo_args

    cfg = load_run_config(preset="smoke", sets=["rl.prompts_per_step=2", "rl.num_generations=4", "rl.micro_batch=2"])
    args = grpo_args(cfg, Path("unused"), [1.0])
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.generation_batch_size) == (2, 4, 8)
    default = grpo_args(replace(cfg, rl=replace(cfg.rl, micro_batch=0)), Path("unused"), [1.0])
    assert (default.per_device_train_batch_size, default.generation_batch_size) == (4, 8)
    with pytest.raises(ConfigError, match=r"rl.micro_batch must divide prompts_per_step x num_generations \(8\), got 3"):
        load_run_config(preset="smoke", sets=["rl.prompts_per_step=2", "rl.num_generations=4", "rl.micro_batch=3"])
