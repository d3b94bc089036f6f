"""Config dataclasses from TOML tables: one strict constructor for every layer."""
from __future__ import annotations

import difflib
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import tomllib

T = TypeVar("T")


def suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the known key closest to a typo ``name``, else ""."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def config_from_dict(cls: type[T], data: Mapping[str, Any], what: str, source: str = "") -> T:
    """Build config dataclass ``cls`` from a mapping, rejecting unknown keys by name.

    A typo must not silently fall back to a default: the error says
    "unknown <what> option(s)" with the closest known key, prefixed by
    ``source`` (a file or table) when given. Lists become tuples so configs
    stay hashable.
    """
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"{source}: " if source else ""
        raise ValueError(f"{where}unknown {what} option(s) {unknown}{suggest(unknown[0], known)}; "
                         f"expected some of {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def read_toml(path: str | Path) -> dict:
    """Parse a TOML file; a syntax error names the file and the position."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML ({exc})") from None
