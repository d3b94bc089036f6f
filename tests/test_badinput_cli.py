"""Bad command lines and TOML files: one clear line naming the setting, exit code 2.

Each case is what a careless or unlucky user types. It must stop before any
evaluation work with ``error: ...`` on stderr (no traceback) naming the flag,
key, file or table at fault, and leave no result files behind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from experiments.run import main
from tests.data_fixtures import tiny_world, write_ml100k

#: Not a factory: ``--policies tests.test_badinput_cli:NOT_CALLABLE`` must be refused by name.
NOT_CALLABLE = 3

BASE = """
policies = ["random", "pop"]
seeds = [0]
progress = false

[data.options]
n_users = 60
n_items = 50

[protocol]
users = 10

[online]
users = 10
llm_users = 2

[online.env]
max_cycles = 2
"""

Args = Callable[[Path], list[str]]


def _toml(text: str) -> Args:
    """A case given as a config file (written under the test's folder)."""

    def args(tmp: Path) -> list[str]:
        path = tmp / "bad.toml"
        path.write_text(text)
        return ["--config", str(path)]

    return args


def _flags(*flags: str) -> Args:
    return lambda tmp: list(flags)


def _data(rows: str) -> Args:
    """ML-100K files with ``u.data`` replaced by ``rows``."""

    def args(tmp: Path) -> list[str]:
        write_ml100k(tmp / "ml", tiny_world())
        (tmp / "ml" / "u.data").write_text(rows)
        return ["--dataset", "ml-100k", "--data-dir", str(tmp / "ml")]

    return args


# (id, arguments, fragments the error line must hold)
CASES: list[tuple[str, Args, list[str]]] = [
    # seeds: a list, never a count; a count is --n-seeds
    ("negative-seeds", _flags("--seeds=-1,-2"), ["seeds", ">= 0", "-1"]),
    ("repeated-seed", _flags("--seeds", "0,0"), ["seeds", "more than once"]),
    ("seed-words", _flags("--seeds", "a,b"), ["--seeds", "'a,b'"]),
    ("seeds-empty", _flags("--seeds", ""), ["--seeds", "''"]),
    ("seeds-hole", _flags("--seeds", "0,,1"), ["--seeds", "'0,,1'"]),
    ("seed-count-zero", _flags("--n-seeds", "0"), ["--n-seeds", ">= 1"]),
    ("seed-count-words", _flags("--n-seeds", "three"), ["--n-seeds", "'three'"]),
    ("seeds-bool-set", _flags("--set", "seeds=[true]"), ["seeds", "integers"]),
    ("seeds-number-set", _flags("--set", "seeds=3"), ["seeds", "list"]),
    # policies
    ("policies-empty", _flags("--policies", ""), ["--policies", "''"]),
    ("policies-comma", _flags("--policies", ","), ["--policies", "','"]),
    ("policies-hole", _flags("--policies", "pop,,bpr"), ["--policies", "'pop,,bpr'"]),
    ("policies-repeated", _flags("--policies", "pop,pop"), ["policies", "['pop']", "more than once"]),
    ("policies-unknown", _flags("--policies", "pop,bpf"), ["unknown policies", "'bpf'", "did you mean 'bpr'"]),
    ("policies-bad-module", _flags("--policies", "no_such_module:make"), ["no_such_module:make", "cannot load factory", "ModuleNotFoundError"]),
    ("policies-bad-attribute", _flags("--policies", "tests.test_badinput_cli:make_nothing"), ["make_nothing", "cannot load factory"]),
    ("policies-not-callable", _flags("--policies", "tests.test_badinput_cli:NOT_CALLABLE"), ["NOT_CALLABLE", "not callable"]),
    ("policies-empty-set", _flags("--set", "policies=[]"), ["no policies selected"]),
    ("policies-number-set", _flags("--set", "policies=[1]"), ["policies", "[1]"]),
    ("policies-string-set", _flags("--set", "policies=7"), ["policies", "list"]),
    # [policy.NAME] options
    ("policy-option-typo", _flags("--set", "policy.bpr.epoch=5"), ["[policy.bpr]", "'epoch'", "did you mean 'epochs'"]),
    ("policy-epochs-negative", _flags("--set", "policy.bpr.epochs=-1"), ["[policy.bpr]", "epochs", "-1"]),
    ("policy-epochs-fraction", _flags("--set", "policy.bpr.epochs=2.5"), ["[policy.bpr]", "epochs", "integer", "2.5"]),
    ("policy-lr-text", _flags("--set", "policy.bpr.lr=fast"), ["[policy.bpr]", "lr", "'fast'"]),
    ("policy-lr-zero", _flags("--set", "policy.bpr.lr=0"), ["[policy.bpr]", "lr", "> 0"]),
    ("policy-variant", _flags("--set", "policy.pop.variant=bogus"), ["[policy.pop]", "variant", "'bogus'", "sample"]),
    ("policy-knn-variant", _flags("--set", "policy.itemknn.variant=7"), ["[policy.itemknn]", "variant", "7"]),
    ("policy-genre-weight", _flags("--set", "policy.genre.pop_weight=-1"), ["[policy.genre]", "pop_weight", "-1"]),
    ("policy-oracle-rank-by", _flags("--set", "policy.oracle.rank_by=regret"), ["[policy.oracle]", "rank_by", "'regret'"]),
    ("policy-random-options", _flags("--set", "policy.random.seed=3"), ["[policy.random]", "'seed'", "no options"]),
    ("policy-sasrec-dim", _flags("--set", "policy.sasrec.dim=0"), ["[policy.sasrec]", "dim", "0"]),
    ("policy-gru-typo", _flags("--set", "policy.gru4rec.hidden=8"), ["[policy.gru4rec]", "hidden"]),
    ("policy-table-typo", _flags("--set", "policy.bprr.epochs=2"), ["[policy.bprr]", "did you mean 'bpr'"]),
    ("policy-not-a-table", _flags("--set", "policy.bpr=5"), ["[policy.bpr]", "table"]),
    # sizes, seeds of the world, types of settings without a default type
    ("data-seed-negative", _flags("--set", "data.seed=-1"), ["data.seed", ">= 0"]),
    ("batch-size-zero", _flags("--set", "protocol.batch_size=0"), ["protocol.batch_size", ">= 1"]),
    ("history-zero", _flags("--set", "protocol.history_len=0"), ["protocol.history_len"]),
    ("users-zero", _flags("--users", "0"), ["protocol.users"]),
    ("negatives-zero", _flags("--set", "protocol.negatives=0"), ["protocol.negatives"]),
    ("threshold-nan", _flags("--set", "protocol.positive_threshold=nan"), ["protocol.positive_threshold", "nan"]),
    ("online-users-zero", _flags("--set", "online.users=0"), ["online.users", ">= 1"]),
    ("online-llm-users-zero", _flags("--set", "online.llm_users=0"), ["online.llm_users"]),
    ("online-env-typo", _flags("--set", "online.env.slate_sz=3"), ["[online.env]", "slate_sz"]),
    ("online-llm-env-typo", _flags("--set", "online.llm_env.max_cycle=3"), ["[online.llm_env]", "max_cycle"]),
    ("threads-negative", _flags("--threads", "-1"), ["threads", ">= 0"]),
    ("data-dir-number", _flags("--set", "data.data_dir=5"), ["data.data_dir", "string", "5"]),
    ("history-beyond-64-bits", _flags("--set", "protocol.history_len=100000000000000000000"), ["protocol.history_len", "64-bit"]),
    ("model-batch-zero", _flags("--set", "model.batch_size=0"), ["model.batch_size"]),
    ("model-tokens-zero", _flags("--set", "model.max_new_tokens=0"), ["model.max_new_tokens"]),
    ("model-dtype-number", _flags("--set", "model.dtype=16"), ["model.dtype", "16"]),
    ("privileged-numbers", _flags("--set", "privileged=[1]"), ["privileged"]),
    ("out-empty", _flags("--out", " "), ["out", "empty"]),
    ("unknown-key", _flags("--set", "protocol.user=5"), ["'user'", "did you mean 'users'"]),
    ("set-without-value", _flags("--set", "protocol.users"), ["section.key=value"]),
    ("dataset-unknown", _flags("--dataset", "ml-10"), ["unknown dataset", "'ml-10'"]),
    ("stage-unknown", _flags("--stage", "train-everything"), ["unknown stage", "'train-everything'"]),
    ("teacher-unknown", _flags("--teacher", "gpt"), ["distill.teacher", "'gpt'"]),
    # the world: loader options and preprocessing (checked when the data loads, before any policy)
    ("world-size-negative", _flags("--set", "data.options.n_users=-5"), ["[data.options]", "n_users", "-5"]),
    ("world-option-typo", _flags("--set", "data.options.n_user=5"), ["[data.options]", "n_user"]),
    ("world-temperature-zero", _flags("--set", "data.options.temperature=0.0"), ["[data.options]", "temperature"]),
    ("world-size-huge", _flags("--set", "data.options.n_items=3000000000"), ["[data.options]", "n_items", "2**31"]),
    ("preprocess-kcore-bool", _flags("--set", "data.preprocess.kcore=true"), ["[data.preprocess]", "kcore", "True"]),
    ("preprocess-threshold-nan", _flags("--set", "data.preprocess.positive_threshold=nan"), ["[data.preprocess]", "positive_threshold"]),
    ("simulator-typo", _flags("--set", "simulator.patiense=2"), ["[simulator]", "patiense"]),
    ("ratings-empty", _data(""), ["u.data", "at least one rating line"]),
    ("ratings-duplicate", _data("1\t1\t4\t5\n1\t1\t5\t6\n"), ["u.data line 2", "'item id'", "already on line 1"]),
    ("ratings-id-float", _data("1e3\t1\t4\t5\n"), ["u.data line 1", "'user id'", "'1e3'"]),
    ("loader-duplicates-value", lambda tmp: _data("1\t1\t4\t5\n")(tmp) + ["--set", "data.options.duplicates=some"],
     ["[data.options]", "duplicates", "'some'"]),
    ("data-dir-missing", _flags("--dataset", "ml-1m", "--data-dir", "/no/such/folder"), ["'ml-1m' not found", "/no/such/folder/ratings.dat"]),
    # --config and --out
    ("config-folder", lambda tmp: ["--config", str(tmp)], ["config file", str(Path("/")), "expected a TOML file"]),
    ("config-missing", lambda tmp: ["--config", str(tmp / "nope.toml")], ["nope.toml", "not found"]),
    ("config-not-utf8", lambda tmp: (tmp.joinpath("latin.toml").write_bytes(b"# caf\xe9\n"), ["--config", str(tmp / "latin.toml")])[1],
     ["latin.toml", "UTF-8"]),
    ("config-syntax", _toml("[protocol\nusers = 3\n"), ["bad.toml", "invalid TOML"]),
    ("config-duplicate-key", _toml("seeds = [0]\nseeds = [1]\n"), ["bad.toml", "invalid TOML"]),
    ("out-is-a-file", lambda tmp: (tmp.joinpath("f").write_text(""), ["--out", str(tmp / "f")])[1], ["--out", "not a folder"]),
    ("out-under-a-file", lambda tmp: (tmp.joinpath("g").write_text(""), ["--out", str(tmp / "g" / "run")])[1], ["--out", "cannot write"]),
    # TOML files
    ("toml-typo", _toml("[protocol]\nuser = 100\n"), ["bad.toml", "'user'", "users"]),
    ("toml-seed-count", _toml("seeds = 3\n"), ["bad.toml", "seeds", "list"]),
    ("toml-policies-string", _toml('policies = "pop,bpr"\n'), ["bad.toml", "policies", "list"]),
    ("toml-policy-typo", _toml("[policy.bpr]\nepoch = 5\n"), ["[policy.bpr]", "'epoch'"]),
    ("toml-policy-not-table", _toml("[policy]\nbpr = 5\n"), ["[policy.bpr]", "table"]),
    ("toml-unknown-preset", _toml('preset = "smok"\n'), ["bad.toml", "'smok'", "smoke"]),
    ("toml-options-not-table", _toml("[data]\noptions = 5\n"), ["bad.toml", "options", "dict"]),
    ("toml-section-not-table", _toml("protocol = 5\n"), ["bad.toml", "[protocol]", "table"]),
    ("toml-env-value", _toml('[online.env]\nslate_size = "five"\n'), ["[online.env]", "slate_size"]),
    # the student's settings: judge prompt, memory warm-up, distillation mix, memory probe, LLM policy tables
    ("warmup-negative-steps", _flags("--set", "warmup.steps=-1"), ["warmup.steps", ">= 0", "-1"]),
    ("warmup-one-candidate", _flags("--set", "warmup.candidates=1"), ["warmup.candidates", ">= 2"]),
    ("warmup-tiny-budget", _flags("--set", "warmup.max_new_tokens=2"), ["warmup.max_new_tokens", ">= 8"]),
    ("judge-negative-history", _flags("--set", "judge.history=-2"), ["judge.history", ">= 0", "-2"]),
    ("judge-typo", _flags("--set", "judge.titels=true"), ["'titels'", "did you mean 'titles'"]),
    ("distill-shares", _flags("--set", "distill.memory_share=0.9"), ["memory_share + plain_share + append_share must be 1"]),
    ("distill-share-range", _flags("--set", "distill.reflect_fraction=1.5"), ["distill.reflect_fraction", "[0, 1]", "1.5"]),
    ("distill-decisions", _flags("--set", "distill.decisions_per_user=0"), ["distill.decisions_per_user", ">= 1"]),
    ("distill-temperature", _flags("--set", "distill.target_temperature=0"), ["distill.target_temperature", "> 0"]),
    ("probe-negative", _flags("--set", "probe_users=-3"), ["probe_users", ">= 0", "-3"]),
    ("ranking-unknown", _flags("--set", "model.ranking=pointer"), ["model.ranking", "'pointer'", "judge"]),
    ("precision-unknown", _flags("--set", "model.precision=fp8"), ["model.precision", "'fp8'"]),
    ("keep-checkpoints-unknown", _flags("--set", "keep_checkpoints=some"), ["keep_checkpoints", "'some'", "'last'"]),
    ("llm-policy-typo", _flags("--policies", "pop,starec", "--set", "policy.starec.modle=x"),
     ["[policy.starec]", "'modle'", "did you mean 'model'"]),
]


@pytest.mark.parametrize(("case", "args", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_bad_command_line_is_one_clear_error(case: str, args: Args, fragments: list[str], tmp_path: Path, capsys) -> None:
    base = tmp_path / "base.toml"
    base.write_text(BASE)
    out = tmp_path / "out"
    argv = args(tmp_path)
    full = argv if "--config" in argv else ["--config", str(base), *argv]
    if "--out" not in full:
        full += ["--out", str(out)]
    assert main([*full, "--stage", "eval"] if "--stage" not in full else full) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (out / "results.json").exists()


def test_a_sections_own_check_is_a_config_error(tmp_path: Path, capsys, monkeypatch) -> None:
    """Config sections validate themselves in ``__post_init__`` (ValueError naming the setting): one line too."""

    def strict_section(*args, **kwargs):
        raise ValueError("warmup.steps must be >= 0, got -1")

    monkeypatch.setattr("experiments.run.load_run_config", strict_section)
    assert main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "warmup.steps" in err and "Traceback" not in err
