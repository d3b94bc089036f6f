"""Declared policy options: what a ``[policy.NAME]`` table may hold.

A factory declares the option dataclasses it reads with :func:`takes`. The
run config checks every ``[policy.NAME]`` table against them before any work
starts (:func:`check`: unknown keys, wrong types, values out of range), so a
typo such as ``epoch = 5`` is an error instead of a silent default. The
factory itself reads only its own keys (:func:`read`): its context also
carries run-wide settings (``threads``) and, for the evidence agents, the
option table of the LLM agent that built them.
"""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, Callable, Mapping, TypeVar

from starec_env.configtools import suggest

T = TypeVar("T")
F = TypeVar("F", bound=Callable)

#: Python types an annotation admits (bool is never an int, a float must be finite), and how to say it.
_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
_WORDS = {"int": "a 64-bit integer", "float": "a finite number", "str": "a string", "bool": "true or false"}


class PolicyOptionError(ValueError):
    """A ``[policy.NAME]`` option that the policy does not take or cannot use."""


def takes(*configs: type) -> Callable[[F], F]:
    """Declare the option dataclasses a factory reads (none: it takes no options)."""

    def mark(factory: F) -> F:
        factory.options = configs  # type: ignore[attr-defined]
        return factory

    return mark


def declared(factory: Callable) -> tuple[type, ...] | None:
    """The option dataclasses ``factory`` declared, or None when it declared nothing."""
    return getattr(factory, "options", None)


def read(cls: type[T], options: Mapping[str, Any], **defaults: Any) -> T:
    """``cls`` from the keys of ``options`` it declares, over ``defaults``.

    One options table may feed several configs (an agent's and its
    variant's), so each reads only its own keys; typos are refused for the
    table as a whole by :func:`check`, against every config the factory
    declared."""
    known = {f.name for f in fields(cls)}
    return cls(**{**defaults, **{k: v for k, v in options.items() if k in known}})


def check(name: str, factory: Callable, options: Mapping[str, Any]) -> None:
    """Refuse a ``[policy.NAME]`` table with keys or values the factory cannot use.

    Factories that declared nothing (user code) are not checked: we cannot
    know what they read.
    """
    configs = declared(factory)
    if configs is None:
        return
    known = sorted({f.name for cls in configs for f in fields(cls)})
    unknown = sorted(set(options) - set(known))
    if unknown:
        accepts = f"it accepts {known}" if known else "it takes no options"
        raise PolicyOptionError(f"[policy.{name}]: unknown option(s) {unknown}{suggest(unknown[0], known)}; {accepts}")
    for cls in configs:
        try:
            read(cls, options)
        except (TypeError, ValueError) as err:
            raise PolicyOptionError(f"[policy.{name}]: {err}") from None


def check_types(obj: Any) -> None:
    """Check each field of dataclass ``obj`` against its annotation (``int``,
    ``float``, ``str``, ``bool``, optionally ``| None``); call it from
    ``__post_init__``. Config values come from TOML and ``--set``, so a
    string or a bool where a number belongs must be named, not coerced."""
    for f in fields(obj):
        annotation = str(f.type)
        optional = annotation.endswith(" | None")
        allowed = _TYPES.get(annotation.removesuffix(" | None"))
        value = getattr(obj, f.name)
        if allowed is None or (optional and value is None):
            continue
        bad = not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)
        if not bad and isinstance(value, float) and not math.isfinite(value):
            bad = True
        if not bad and isinstance(value, int) and not -(2**63) <= value < 2**63:  # numpy would overflow
            bad = True
        if bad:
            words = _WORDS[annotation.removesuffix(" | None")] + (" (or none)" if optional else "")
            raise ValueError(f"{f.name}: expected {words}, got {value!r}")


def at_least(obj: Any, minimum: float, *names: str) -> None:
    """Refuse fields of ``obj`` below ``minimum`` (after :func:`check_types`)."""
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < minimum:
            raise ValueError(f"{name}: expected a value >= {minimum}, got {value!r}")
