"""Errors raised by the data loaders.

Users bring their own files; when one is wrong they need to know *where*
(file, line, field) and *what* was expected, not a pandas traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


class DataFormatError(ValueError):
    """A data file does not follow its format.

    ``path`` is the file, ``line`` the 1-based line number (None when the
    problem is not tied to one line), ``field`` the field name (None for a
    whole-line problem such as a wrong number of fields), ``expected`` what
    the format requires and ``got`` what the file holds.
    """

    def __init__(
        self,
        path: str | Path,
        line: int | None,
        field: str | None,
        expected: str,
        got: Any = None,
    ) -> None:
        self.path = Path(path)
        self.line = line
        self.field = field
        self.expected = expected
        self.got = got
        where = str(self.path)
        if line is not None:
            where += f" line {line}"
        if field is not None:
            where += f", field {field!r}"
        message = f"{where}: expected {expected}"
        if got is not None:
            message += f", got {_short(got)!r}"
        super().__init__(message)


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where we looked.

    The message lists every path that was tried and how to get the data, so
    the user can fix the ``--data-dir`` or install the missing package.
    """

    def __init__(self, dataset: str, looked_for: Sequence[str | Path], hint: str = "") -> None:
        self.dataset = dataset
        self.looked_for = [str(p) for p in looked_for]
        tried = "\n".join(f"  - {p}" for p in self.looked_for)
        message = f"dataset {dataset!r} not found; looked for:\n{tried}"
        if hint:
            message += f"\n{hint}"
        super().__init__(message)


class PreprocessError(ValueError):
    """Preprocessing settings that cannot be applied to this dataset (e.g. a k-core that empties it)."""


class DataOptionError(ValueError):
    """A loader option that does not exist or has a value the loader cannot use.

    The message names the dataset, the option and what it accepts; options
    come from user configs (``[data.options]``), so this is a user error.
    """


def check_choice(dataset: str, option: str, value: Any, allowed: Sequence[str]) -> None:
    """Refuse a loader option outside its vocabulary, naming dataset, option and choices."""
    if value not in allowed:
        raise DataOptionError(f"dataset {dataset!r} option {option}: expected one of {list(allowed)}, got {value!r}")


def _short(value: Any, limit: int = 80) -> Any:
    """Clip long offending values (a whole JSON line) so messages stay readable."""
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 3] + "..."
    return value
