"""Policy names, as used by ``--policies``, mapped to their factories.

Factories are imported lazily so that naming ``pop`` never imports torch or
transformers. A factory is any callable ``(PolicyContext) -> Policy``; user
code can add its own with :func:`register`, and may declare its options
with :func:`policies.options.takes` so that ``[policy.NAME]`` typos are caught.
A language-model policy says so when registered (``llm=True``): the run then
hands it its model, prompt, judge and warm-up settings (see
:meth:`experiments.config.RunConfig.policy_options`).
"""
from __future__ import annotations

import importlib
from typing import Callable

from policies.base import Policy, PolicyContext
from policies.options import PolicyOptionError, check

Factory = Callable[[PolicyContext], Policy]

_FACTORIES: dict[str, str | Factory] = {
    "random": "policies.rule_based:make_random",
    "pop": "policies.rule_based:make_popularity",
    "genre": "policies.rule_based:make_genre",
    "itemknn": "policies.rule_based:make_itemknn",
    "bpr": "policies.bpr:make_bpr_sample",
    "bpr-sample": "policies.bpr:make_bpr_sample",
    "bpr-full": "policies.bpr:make_bpr_full",
    "oracle": "policies.oracle:make_oracle",
    "gru4rec": "policies.sequential:make_gru4rec_sample",
    "gru4rec-sample": "policies.sequential:make_gru4rec_sample",
    "gru4rec-full": "policies.sequential:make_gru4rec_full",
    "sasrec": "policies.sequential:make_sasrec_sample",
    "sasrec-sample": "policies.sequential:make_sasrec_sample",
    "sasrec-full": "policies.sequential:make_sasrec_full",
    "llmrank": "policies.llm.agents:make_llmrank",
    "starec": "policies.llm.agents:make_starec",
    "starec-noreflect": "policies.llm.agents:make_starec_noreflect",
    "starec-fast": "policies.llm.agents:make_starec_fast",
    "starec-think": "policies.llm.agents:make_starec_think",
    "starec-adaptive": "policies.llm.agents:make_starec_adaptive",
    "agentcf": "policies.llm.agentcf:make_agentcf",
}

#: Registered names that take the run's language-model settings (model, prompt, judge, warm-up).
_LLM: set[str] = {"llmrank", "starec", "starec-noreflect", "starec-fast", "starec-think", "starec-adaptive", "agentcf"}

#: What ``python -m experiments.run`` benchmarks when no policy is named.
DEFAULT_POLICIES = ("random", "pop", "genre", "itemknn", "bpr", "oracle")


def register(name: str, factory: Factory, *, llm: bool = False) -> None:
    """Make a user-defined policy selectable by name; ``llm=True`` when it is
    a language-model agent that reads the run's model and prompt options
    (e.g. ``LLMAgentConfig.from_options(ctx.options)``)."""
    _FACTORIES[name] = factory
    if llm:
        _LLM.add(name)
    else:
        _LLM.discard(name)


def is_llm_policy(name: str) -> bool:
    """Whether ``name`` was registered as a language-model agent (takes model/prompt options)."""
    return name in _LLM


def available() -> list[str]:
    return sorted(_FACTORIES)


def load_factory(name: str) -> Factory:
    """The factory of ``name`` (a registered name or ``"package.module:factory"``), imported now.

    A name that is unknown or cannot be imported raises :class:`PolicyOptionError`
    naming it, so a run can refuse it before any work.
    """
    target = _FACTORIES.get(name, name if ":" in name else None)
    if target is None:
        raise PolicyOptionError(f"unknown policy {name!r}; known: {', '.join(available())} (or 'module:factory')")
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        try:
            target = getattr(importlib.import_module(module), attr)
        except Exception as exc:  # a user module may fail to import in any way; report it in one line
            raise PolicyOptionError(f"policy {name!r}: cannot load factory {module}:{attr} ({type(exc).__name__}: {exc})") from None
        if not callable(target):
            raise PolicyOptionError(f"policy {name!r}: {module}:{attr} is not callable")
    return target


def check_policy_options(name: str, options: dict) -> None:
    """Refuse a ``[policy.NAME]`` table the policy's factory cannot use (see :mod:`policies.options`)."""
    check(name, load_factory(name), options)


def make_policy(name: str, ctx: PolicyContext) -> Policy:
    """Build the policy called ``name``.

    ``name`` is a registered name or ``"package.module:factory"``, so user
    code runs from the CLI without touching this file. Unknown names list
    the known ones.
    """
    policy = load_factory(name)(ctx)
    policy.name = name
    return policy
