"""Errors of the environment layer, and the checks that raise them.

Every misuse (a bad option, a bad action, a call out of order) raises
:class:`EnvError`, a ``ValueError`` whose message names the setting or the
agent at fault and what was expected, so callers that already catch
``ValueError`` (the CLI, configs) report it as a user error.
"""
from __future__ import annotations

import math
import numbers
from typing import Any


class EnvError(ValueError):
    """Invalid use of the environment: a bad option or action, or a call out of order."""


def check_int(name: str, value: Any, minimum: int | None = None, allow_none: bool = False) -> int | None:
    """``value`` as an int (bools and floats such as 1.5 or 2.0 are errors), at least ``minimum``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        none = " or None" if allow_none else ""
        raise EnvError(f"{name}: expected an integer{none}, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise EnvError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    """``value`` as a finite real number in [low, high] (bools, strings, NaN and inf are errors)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise EnvError(f"{name}: expected a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise EnvError(f"{name}: expected a finite number, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise EnvError(f"{name}: expected a value in [{lo}, {hi}], got {value:g}")
    return value


def check_choice(name: str, value: Any, choices: tuple) -> Any:
    """``value`` must be one of ``choices``."""
    if not isinstance(value, (str, type(None))) or value not in choices:
        raise EnvError(f"{name}: expected one of {choices}, got {value!r}")
    return value
