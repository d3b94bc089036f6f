"""CONTRIBUTING.md cannot silently rot: the paths it names exist and its
sketches marked ``<!-- runnable -->`` run as written (tiny synthetic data)."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "CONTRIBUTING.md"
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)
RUNNABLE = re.compile(r"<!-- runnable -->\n```python\n(.*?)^```", flags=re.S | re.M)
PATH_SUFFIXES = (".py", ".j2", ".toml", ".cfg", ".md")
#: Placeholder or pattern characters: ``starec_env/data/<name>.py`` names a file you create.
PLACEHOLDER = re.compile(r"[<*{]")
SECTIONS = ("## Add a dataset loader", "## Add a policy", "## Add a reward term", "## Add an LLM answer format")


def _text() -> str:
    return GUIDE.read_text(encoding="utf-8")


def _paths() -> list[str]:
    """Inline code spans (outside fenced blocks) that look like repository paths."""
    prose = FENCE.sub("", _text())
    spans = re.findall(r"`([^`\n]+)`", prose)
    return sorted({s for s in spans if "/" in s and " " not in s and (s.endswith(PATH_SUFFIXES) or s.endswith("/"))})


def _runnable() -> list[str]:
    return RUNNABLE.findall(_text())


def test_guide_has_the_four_extension_sections() -> None:
    text = _text()
    for heading in SECTIONS:
        assert heading in text, f"CONTRIBUTING.md lacks the section {heading!r}"
    assert "](CONTRIBUTING.md)" in (ROOT / "README.md").read_text(encoding="utf-8"), "README should link the guide"


def test_every_path_in_the_guide_exists() -> None:
    paths = _paths()
    assert len(paths) >= 20, paths  # the pattern still finds the guide's paths
    missing = []
    for path in paths:
        if PLACEHOLDER.search(path):  # a file to create: its folder must exist
            folder = path[: PLACEHOLDER.search(path).start()].rpartition("/")[0]
            if not (ROOT / folder).is_dir():
                missing.append(path)
        elif not (ROOT / path).exists() or (path.endswith("/") and not (ROOT / path).is_dir()):
            missing.append(path)
    assert not missing, f"CONTRIBUTING.md names paths that do not exist: {missing}"


def test_guide_marks_sketches_runnable() -> None:
    assert len(_runnable()) >= 4


@pytest.mark.parametrize("index", range(len(_runnable())))
def test_runnable_sketch_runs(index: int, tmp_path, monkeypatch) -> None:
    """Each runnable sketch runs in a temp dir; registries it extends are restored."""
    from policies import registry
    from policies.llm import formats

    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    monkeypatch.setattr(registry, "_LLM", set(registry._LLM))
    monkeypatch.setattr(formats, "FORMATS", dict(formats.FORMATS))
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType(f"contributing_sketch_{index + 1}")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(_runnable()[index], f"CONTRIBUTING.md sketch {index + 1}", "exec"), module.__dict__)
