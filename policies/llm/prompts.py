"""Chat prompts for the LLM agents, rendered from Jinja2 templates.

The wording lives in ``policies/llm/templates/*.j2`` (shipped as package
data) so it can be read, diffed and ablated without touching code. Every
renderer returns chat messages (``[{"role": ..., "content": ...}]``) built from
the environment's text view (``starec_env.text.AgentTextView``: ``profile``
dict, ``history`` of ``(title, genres, year, rating)``, ``candidates`` of
``(title, genres, year)``). Candidates are named by short identifiers from
:func:`candidate_ids` so that answers are cheap to generate and unambiguous to
parse (see :mod:`policies.llm.parsing`).
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence

import jinja2

from policies.llm.formats import FAST, REFLECT, get_format
from starec_env.configtools import config_from_dict

TEMPLATE_DIR = Path(__file__).with_name("templates")

#: A chat: ``{"role", "content"}`` messages, the form every model call takes.
Messages = list[dict[str, str]]


class TextView(Protocol):
    """What the prompts read from ``starec_env.text.AgentTextView``."""

    profile: dict
    history: Sequence[tuple]
    candidates: Sequence[tuple]


@dataclass(frozen=True)
class PromptConfig:
    """Prompt settings, loadable from a TOML table.

    ``max_history`` bounds the slow-thinking prompts (CoT ranking,
    reflection): a 135M model degrades fast on long contexts, and the most
    recent items carry most of the signal. ``descriptions`` adds each
    candidate's one-line description (when the view has them) at the cost of
    a longer prompt.

    Fast thinking must be cheap by design - prefill of the prompt is nearly
    all of a scoring decision's cost, and grows faster than linearly with its
    length - so the fast prompt (the ``fast`` answer format: generated ranking
    and the scoring path) is compact by default: ``fast_layout="compact"`` shows the
    last ``min(fast_history, max_history)`` items without years, candidates as
    one short line without descriptions, and evidence as bare ranks
    ("pop 3, genre 1, sim 7"); the task sits in the system message so every
    user's prompt starts with the same tokens (the backend reuses their KV
    cache). ``fast_layout="full"`` gives the fast prompt the slow prompt's
    layout and history length.
    """

    max_history: int = 20
    noun: str = "movie"
    descriptions: bool = False
    reflect_top: int = 5
    max_words: int = 60
    fast_history: int = 10
    fast_layout: Literal["compact", "full"] = "compact"

    def __post_init__(self) -> None:
        if self.fast_layout not in ("compact", "full"):
            raise ValueError(f"prompt fast_layout must be 'compact' or 'full', got {self.fast_layout!r}")
        if self.max_history < 0 or self.fast_history < 0:
            raise ValueError(
                f"prompt max_history and fast_history must be >= 0, got {self.max_history} and {self.fast_history}"
            )

    @property
    def compact_fast(self) -> bool:
        return self.fast_layout == "compact"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PromptConfig":
        return config_from_dict(cls, data, "prompt")


def candidate_ids(n: int) -> list[str]:
    """Short identifiers for ``n`` candidates: "A".."Z", then "A1".."Z1", "A2"...

    Single tokens for the usual 20 candidates; letter+digit beyond 26 keeps
    every id distinct and free of separators.
    """
    if n < 0:
        raise ValueError(f"number of candidates must be >= 0, got {n}")
    letters = string.ascii_uppercase
    return [letters[i % 26] + (str(i // 26) if i >= 26 else "") for i in range(n)]


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def template_module(name: str, **variables: Any) -> Any:
    """The rendered module of ``templates/<name>.j2``: its top-level ``set``
    blocks and macros as attributes."""
    return _environment().get_template(f"{name}.j2").make_module(variables)


def render_template(name: str, **variables: Any) -> Messages:
    """Render ``templates/<name>.j2`` into chat messages.

    A template exports its messages as top-level ``{% set system %}`` /
    ``{% set user %}`` blocks; absent roles are skipped.
    """
    module = template_module(name, **variables)
    messages = []
    for role in ("system", "user"):
        content = getattr(module, role, None)
        if content is not None:
            messages.append({"role": role, "content": str(content).strip()})
    return messages


def preference_of(memory: Any) -> str:
    """The preference description held by ``memory``.

    Accepts ``None``, a plain string, or any memory object with a
    ``preference`` attribute (``policies.llm.memory``), so prompts do not
    depend on the memory class.
    """
    if memory is None:
        return ""
    if isinstance(memory, str):
        return memory
    return str(getattr(memory, "preference", "") or "")


def _common(view: TextView, config: PromptConfig | None, *, compact: bool = False) -> dict[str, Any]:
    config = config or PromptConfig()
    keep = min(config.max_history, config.fast_history) if compact else config.max_history
    history = list(view.history)[-keep:] if keep > 0 else []
    with_descriptions = config.descriptions and not compact
    descriptions = list(getattr(view, "candidate_descriptions", None) or []) if with_descriptions else []
    return {
        "view": view,
        "history": history,
        "descriptions": descriptions,
        "ids": candidate_ids(len(view.candidates)),
        "noun": config.noun,
    }


def _check_evidence(view: TextView, evidence: Sequence[str] | None) -> list[str] | None:
    if evidence is None:
        return None
    if len(evidence) != len(view.candidates):
        raise ValueError(f"evidence has {len(evidence)} lines but the view has {len(view.candidates)} candidates")
    return list(evidence)


#: Short names of the evidence signals in compact prompts (the legend is in
#: the compact layout of ``templates/rank_fast.j2``).
SHORT_SIGNALS = {"pop": "pop", "genre": "genre", "itemknn": "sim"}


@lru_cache(maxsize=1)
def _signal_labels() -> tuple[tuple[str, str], ...]:
    """(long label, short name) pairs, longest label first, from ``evidence.j2``."""
    labels = template_module("evidence").labels
    return tuple(sorted(((label, SHORT_SIGNALS.get(name, name)) for name, label in labels.items()), key=lambda x: -len(x[0])))


def compact_evidence(line: str) -> str:
    """An evidence line in the compact fast-prompt form.

    "popularity #9 (medium), genre match none, similarity to history #4 (high)"
    becomes "pop9 genre- sim4" - the same ranks in a third of the tokens.
    Parts in any other form are kept as they are, so this never fails.
    """
    parts = []
    for part in line.split(", "):
        for label, short in _signal_labels():
            if part.startswith(label + " "):
                value = part[len(label) + 1 :].split(" (")[0]
                part = short + (value[1:] if value.startswith("#") else "-")
                break
        parts.append(part)
    return " ".join(parts)


def render_rank_prompt(
    view: TextView,
    memory: Any = None,
    *,
    mode: str = FAST.name,
    evidence: Sequence[str] | None = None,
    config: PromptConfig | None = None,
) -> Messages:
    """Ranking prompt asking for the answer format ``mode`` (a ranking format
    of :mod:`policies.llm.formats`): ``fast`` asks for a bare
    ``Ranking: A > B > ...`` line, ``think`` for ``<think>...</think>`` then a
    numbered list with reasons.

    ``evidence`` is one line per candidate (:mod:`policies.llm.evidence`), or
    ``None`` for the no-evidence ablation. A format with a compact layout
    (the fast one) gets it unless ``config.fast_layout`` is "full" (see
    :class:`PromptConfig`).
    """
    fmt = get_format(mode)
    if fmt.parser != "ranking":
        raise ValueError(f"mode must be a ranking answer format, got {mode!r} (a {fmt.parser} format)")
    config = config or PromptConfig()
    compact = fmt.compact and config.compact_fast
    evidence = _check_evidence(view, evidence)
    if compact and evidence is not None:
        evidence = [compact_evidence(line) for line in evidence]
    return render_template(
        fmt.template,
        preference=preference_of(memory),
        evidence=evidence,
        compact=compact,
        prefix=fmt.prefix,
        **_common(view, config, compact=compact),
    )


def render_llmrank_prompt(view: TextView, *, config: PromptConfig | None = None) -> Messages:
    """Zero-shot LLMRank-style prompt: history and candidates only (no memory,
    no profile, no evidence), the baseline the STARec agent is compared with."""
    return render_template("llmrank", prefix=FAST.prefix, **_common(view, config))


def render_reflect_prompt(
    view: TextView,
    memory: Any,
    *,
    predicted: Sequence[int],
    chosen: int | None,
    rating: float | None = None,
    config: PromptConfig | None = None,
) -> Messages:
    """Slow-thinking memory update prompt.

    ``predicted`` are candidate indices in the agent's own order (the top
    ``config.reflect_top`` are shown), ``chosen`` the candidate index the user
    actually picked (``None``: no click) and ``rating`` the rating given. The
    answer is ``<think>`` analysis then ``<preference>...</preference>``.
    """
    config = config or PromptConfig()
    n = len(view.candidates)
    predicted = [int(i) for i in predicted]
    bad = [i for i in predicted if not 0 <= i < n]
    if bad or (chosen is not None and not 0 <= chosen < n):
        raise ValueError(f"candidate indices must be in [0, {n}); got predicted={bad} chosen={chosen}")
    chosen_rank = predicted.index(chosen) + 1 if chosen in predicted else None
    return render_template(
        REFLECT.template,
        preference=preference_of(memory),
        predicted=predicted[: config.reflect_top],
        chosen=chosen,
        chosen_rank=chosen_rank,
        rating=rating,
        max_words=config.max_words,
        **_common(view, config),
    )


def render_rethink_prompt(
    problems: Sequence[str],
    *,
    n_candidates: int,
    missing: Sequence[str] = (),
    target_id: str | None = None,
    target_rank: int | None = None,
) -> Messages:
    """Targeted feedback for a teacher trace that failed the distillation
    filter; appended after the teacher's own answer so it can rethink."""
    return render_template(
        "rethink",
        problems=list(problems),
        n_candidates=n_candidates,
        missing=list(missing),
        target_id=target_id,
        target_rank=target_rank,
    )
