"""Policy names, as used by ``--policies``, mapped to their factories.

Factories are imported lazily so that naming ``pop`` never imports torch or
transformers. A factory is any callable ``(PolicyContext) -> Policy``; user
code can add its own with :func:`register`.
"""
from __future__ import annotations

import importlib
from typing import Callable

from policies.base import Policy, PolicyContext

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
    "starec-fast": "policies.llm.agents:make_starec_fast",
    "starec-slow": "policies.llm.agents:make_starec_slow",
    "starec-adaptive": "policies.llm.agents:make_starec_adaptive",
    "agentcf": "policies.llm.agentcf:make_agentcf",
}

#: What ``python -m experiments.run`` benchmarks when no policy is named.
DEFAULT_POLICIES = ("random", "pop", "genre", "itemknn", "bpr", "oracle")


def register(name: str, factory: Factory) -> None:
    """Make a user-defined policy selectable by name."""
    _FACTORIES[name] = factory


def is_llm_policy(name: str) -> bool:
    """Whether ``name`` is a built-in language-model agent (takes model/prompt options)."""
    target = _FACTORIES.get(name)
    return isinstance(target, str) and target.startswith("policies.llm.")


def available() -> list[str]:
    return sorted(_FACTORIES)


def make_policy(name: str, ctx: PolicyContext) -> Policy:
    """Build the policy called ``name``.

    ``name`` is a registered name or ``"package.module:factory"``, so user
    code runs from the CLI without touching this file. Unknown names list
    the known ones.
    """
    target = _FACTORIES.get(name, name if ":" in name else None)
    if target is None:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(available())} (or 'module:factory')")
    if isinstance(target, str):
        module, attr = target.split(":", 1)
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"policy {name!r}: cannot load factory {module}:{attr} ({exc})") from None
    policy = target(ctx)
    policy.name = name
    return policy
