"""The README's code examples run as written (they are the first thing users copy)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from policies import PolicyContext, make_policy
from starec_env.data import load_dataset
from starec_env.protocol import LeaveOneOut

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_environment_example_runs(capsys) -> None:
    block = next(b for b in _python_blocks() if "parallel_env" in b)
    exec(compile(block, "README.md", "exec"), {})
    assert "(" in capsys.readouterr().out  # printed candidate tuples


def test_custom_policy_example_plugs_into_the_registry(tmp_path, monkeypatch) -> None:
    block = next(b for b in _python_blocks() if "class " in b and "Policy" in b)
    (tmp_path / "my_policy.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_policy", None)
    ds = load_dataset("synthetic", seed=0, n_users=120, n_items=100)
    protocol = LeaveOneOut(ds, n_users=60, seed=0)
    policy = make_policy("my_policy:make_recent_genres", PolicyContext(ds, seed=0))
    policy.fit(protocol.split)
    scores = policy.score(protocol.batch)
    assert scores.shape == protocol.batch.candidates.shape and np.isfinite(scores).all()
    assert len(block.strip().splitlines()) <= 15


def test_custom_policy_example_runs_through_the_parallel_env(tmp_path, monkeypatch) -> None:
    blocks = _python_blocks()
    policy_block = next(b for b in blocks if "class " in b and "Policy" in b)
    (tmp_path / "my_policy.py").write_text(policy_block)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_policy", None)
    block = next(b for b in blocks if "PolicyAgents(" in b)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    env, infos = namespace["env"], namespace["infos"]
    assert not env.agents and infos and all("clicked" in info for info in infos.values())
