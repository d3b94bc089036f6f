"""Robust parsing of LLM answers: rankings and rewritten preferences.

Small models break formats all the time, and a simulation with thousands of
users must never stop because one answer is malformed. So the parsers here
never raise for any input string; they *repair* what they find, count every
repair, and report a ``format_score`` in [0, 1] (usable as a format reward).

Ranking repair, in this documented order:

1. The reasoning inside ``<think>...</think>`` is set aside (an unclosed
   ``<think>`` runs to the end; a lone ``</think>`` closes everything before it).
2. The answer after the reasoning is read in the first of these structures
   that yields the most valid identifiers (ties go to the earlier one):
   a ``Ranking: C > A > ...`` line (the most complete one; its label is
   :data:`policies.llm.formats.RANKING_PREFIX`), a numbered or bulleted list
   (``1. [C] - reason``), bracketed ids anywhere (``[C]``), bare upper-case
   ids anywhere. If the answer holds none, the reasoning is searched the same
   way (models often rank inside an unclosed think), at a lower score.
3. An entry may also name a candidate by its exact title (when titles are
   given) instead of its identifier.
4. Duplicates keep their first occurrence; id-shaped tokens that name no
   candidate ("hallucinated") are dropped.
5. Missing candidates are appended in descending ``fallback_scores`` order
   (e.g. a cheap scorer's) or, without them, in original candidate order.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from policies.llm.formats import RANKING_PREFIX

_THINK_OPEN = re.compile(r"<\s*think\s*>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)
_RANKING_LINE = re.compile(r"\b" + re.escape(RANKING_PREFIX.rstrip(":")) + r"\s*[:：][ \t]*([^\n]*)", re.IGNORECASE)
_LIST_LINE = re.compile(r"^\s*(?:\d{1,3}\s*[.):\]]|[-*•])\s*(.*)$", re.MULTILINE)
_ID_SHAPE = r"[A-Za-z][0-9]{0,2}"
_LEAD_ID = re.compile(r"^[\s\[(\"'`*]*(" + _ID_SHAPE + r")(?![A-Za-z0-9])[\])\"'`*]*(.*)$", re.DOTALL)
_BRACKETED = re.compile(r"\[\s*(" + _ID_SHAPE + r")\s*\]")
_BARE = re.compile(r"(?<![A-Za-z0-9])([A-Z][0-9]{0,2})(?![A-Za-z0-9'’])")
_SPLIT = re.compile(r"\s*(?:>|,|;|→|->|\|)\s*")
_REASON_LEAD = re.compile(r"^[\s:\-–—.)]*")

#: Structure quality of where the ranking was found (part of format_score).
#: A parsed entry: candidate index (or an unknown id-shaped token), its
#: reason text, and whether it was matched by title instead of id.
Entry = tuple[int | str, str, bool]

_STRUCTURE = {"ranking_line": 1.0, "list": 1.0, "bracketed": 0.75, "bare": 0.5}
_IN_THINK = 0.5


@dataclass(frozen=True)
class ParsedRanking:
    """A repaired ranking.

    ``order`` is a full permutation of candidate indices, best first.
    ``repairs`` counts ``missing``, ``duplicate`` and ``hallucinated`` ids
    (and ``title_matched`` entries); ``reasons`` maps candidate index to the
    brief reason given for it; ``source`` says which structure was read
    ("none" when nothing was found).
    """

    order: list[int]
    format_score: float
    repairs: dict[str, int]
    think: str
    reasons: dict[int, str] = field(default_factory=dict)
    source: str = "none"
    n_valid: int = 0

    def scores(self) -> np.ndarray:
        """Descending scores (C,) that reproduce ``order`` under argsort."""
        scores = np.empty(len(self.order), dtype=np.float64)
        scores[np.asarray(self.order, dtype=np.int64)] = np.arange(len(self.order), 0, -1, dtype=np.float64)
        return scores


@dataclass(frozen=True)
class ParsedReflection:
    """A rewritten preference description (bounded by ``max_chars``).

    ``source``: "tag" (``<preference>`` closed), "open_tag" (unclosed),
    "after_think" (untagged text after the reasoning), or "fallback" (nothing
    usable: ``preference`` is the caller's fallback, e.g. the old memory).
    """

    preference: str
    think: str
    format_score: float
    source: str
    truncated: bool


def split_think(text: str) -> tuple[str, str, float]:
    """Split ``text`` into (think, answer, think_quality).

    Quality 1 for a closed, non-empty think block, 0.5 for an unclosed or
    opening-less one, 0 when there is none. An unclosed think returns the
    reasoning as both parts, so a ranking inside it can still be found.
    """
    open_match = _THINK_OPEN.search(text)
    close_match = _THINK_CLOSE.search(text, open_match.end() if open_match else 0)
    if open_match and close_match:
        think = text[open_match.end() : close_match.start()].strip()
        answer = text[close_match.end() :]
        return think, answer, 1.0 if think else 0.5
    if close_match:
        return text[: close_match.start()].strip(), text[close_match.end() :], 0.5
    if open_match:
        think = text[open_match.end() :].strip()
        return think, "", 0.5 if think else 0.0
    return "", text, 0.0


def _normalise_title(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", title.lower()).strip()


class _Reader:
    """Turns text entries into candidate tokens for one candidate set."""

    def __init__(self, candidate_ids: Sequence[str], titles: Sequence[str] | None) -> None:
        self.index = {str(c).upper(): i for i, c in enumerate(candidate_ids)}
        self.titles = {}
        for i, title in enumerate(titles or ()):
            key = _normalise_title(str(title))
            if key:
                self.titles.setdefault(key, i)

    def entry(self, entry: str) -> tuple[int | str | None, str, bool]:
        """(candidate index, or an unknown id, or None; the rest of the entry; matched by title)."""
        match = _LEAD_ID.match(entry)
        if match:
            token, rest = match.group(1).upper(), match.group(2)
            if token in self.index:
                return self.index[token], rest, False
            if match.group(1)[0].isupper():  # an upper-case id-shaped token naming no candidate
                return token, rest, False
        key = _normalise_title(re.split(r"\s[-–—:]\s|\s\(|\s\|", entry, maxsplit=1)[0])
        if key in self.titles:
            return self.titles[key], "", True
        return None, "", False

    def ranking_line(self, answer: str) -> list[Entry]:
        """The ranking line (:data:`RANKING_PREFIX`) naming the most candidates (the last on ties)."""
        best: list[Entry] = []
        for line in _RANKING_LINE.findall(answer):
            tokens = []
            for piece in _SPLIT.split(line):
                got, _, by_title = self.entry(piece)
                if got is not None:
                    tokens.append((got, "", by_title))
            if _n_valid(tokens) >= _n_valid(best):
                best = tokens
        return best

    def numbered(self, answer: str) -> list[Entry]:
        tokens = []
        for line in _LIST_LINE.findall(answer):
            got, rest, by_title = self.entry(line)
            if got is not None:
                tokens.append((got, _REASON_LEAD.sub("", rest).strip(), by_title))
        return tokens

    def pattern(self, answer: str, regex: re.Pattern) -> list[Entry]:
        return [(self.index.get(m.upper(), m.upper()), "", False) for m in regex.findall(answer)]

    def best(self, answer: str) -> tuple[str, list[Entry]]:
        """The structure with the most valid candidates (earlier wins ties)."""
        options = (
            ("ranking_line", self.ranking_line(answer)),
            ("list", self.numbered(answer)),
            ("bracketed", self.pattern(answer, _BRACKETED)),
            ("bare", self.pattern(answer, _BARE)),
        )
        best_source, best_tokens, best_valid = "none", [], 0
        for source, tokens in options:
            valid = _n_valid(tokens)
            if valid > best_valid:
                best_source, best_tokens, best_valid = source, tokens, valid
        if best_valid == 0:  # only made-up ids: count them if they sit in an explicit structure
            return next(((src, tok) for src, tok in options[:3] if tok), ("none", []))
        return best_source, best_tokens


def _n_valid(tokens: list[Entry]) -> int:
    return len({t for t, _, _ in tokens if isinstance(t, int)})


def parse_ranking(
    text: str,
    candidate_ids: Sequence[str],
    *,
    fallback_scores: Sequence[float] | np.ndarray | None = None,
    titles: Sequence[str] | None = None,
    expect_think: bool = False,
) -> ParsedRanking:
    """Parse and repair a ranking over ``candidate_ids`` (letter+digit ids as
    made by :func:`policies.llm.prompts.candidate_ids`); never raises on ``text``.

    ``format_score`` = structure quality x coverage (valid unique ids / C) x
    cleanliness (valid unique / all entries, a title in place of an id
    counting half) x, when ``expect_think``,
    (0.5 + 0.5 x think quality). It is 1.0 only for a clean, complete answer.
    """
    text = text if isinstance(text, str) else ""
    n = len(candidate_ids)
    reader = _Reader(candidate_ids, titles)
    think, answer, think_quality = split_think(text)
    source, tokens = reader.best(answer)
    structure = _STRUCTURE.get(source, 0.0)
    if source == "none" and think:
        source, tokens = reader.best(think)
        structure = _STRUCTURE.get(source, 0.0) * _IN_THINK
        source = f"think:{source}" if source != "none" else source

    order: list[int] = []
    reasons: dict[int, str] = {}
    seen: set[int] = set()
    repairs = {"missing": 0, "duplicate": 0, "hallucinated": 0, "title_matched": 0}
    for token, reason, by_title in tokens:
        if not isinstance(token, int):
            repairs["hallucinated"] += 1
        elif token in seen:
            repairs["duplicate"] += 1
        else:
            seen.add(token)
            order.append(token)
            repairs["title_matched"] += int(by_title)
            if reason:
                reasons[token] = reason
    n_valid = len(order)
    missing = [i for i in range(n) if i not in seen]
    if fallback_scores is not None and len(fallback_scores) == n:
        fallback = np.nan_to_num(np.asarray(fallback_scores, dtype=np.float64), nan=-np.inf)
        missing.sort(key=lambda i: -fallback[i])  # stable: ties keep candidate order
    repairs["missing"] = len(missing)
    order.extend(missing)

    entries = n_valid + repairs["duplicate"] + repairs["hallucinated"]
    coverage = n_valid / n if n else 1.0
    cleanliness = (n_valid - 0.5 * repairs["title_matched"]) / entries if entries else 0.0
    score = structure * coverage * cleanliness
    if expect_think:
        score *= 0.5 + 0.5 * think_quality
    return ParsedRanking(
        order=order,
        format_score=float(min(1.0, max(0.0, score))),
        repairs=repairs,
        think=think,
        reasons=reasons,
        source=source,
        n_valid=n_valid,
    )


_PREF_OPEN = re.compile(r"<\s*preference\s*>", re.IGNORECASE)
_PREF_CLOSE = re.compile(r"<\s*/\s*preference\s*>", re.IGNORECASE)
_PREF_LABEL = re.compile(r"^\s*(?:updated\s+|new\s+)?preference(?:\s+description)?\s*[:：]\s*", re.IGNORECASE)
_TAG = re.compile(r"<\s*/?\s*[A-Za-z_]+\s*>")


def bound_text(text: str, max_chars: int) -> tuple[str, bool]:
    """Collapse whitespace and cut to ``max_chars`` at a sentence or word end,
    so memory never grows without limit."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text, False
    cut = text[:max_chars]
    sentence = max(cut.rfind(". "), cut.rfind("; "), cut.rfind("! "))
    if sentence >= max_chars // 2:
        return cut[: sentence + 1], True
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut).rstrip(" ,;:"), True


def parse_reflection(text: str, *, max_chars: int = 600, fallback: str = "") -> ParsedReflection:
    """Extract the rewritten preference description; never raises on ``text``.

    Looks for ``<preference>...</preference>`` after the reasoning, then an
    unclosed tag, then untagged text after ``</think>`` (optionally labelled
    "Preference:"). Empty results return ``fallback`` with format score 0.
    ``format_score`` = tag quality (1 / 0.6 / 0.3) x (0.5 + 0.5 x think
    quality) x (0.8 when the text had to be truncated).
    """
    text = text if isinstance(text, str) else ""
    think, answer, think_quality = split_think(text)
    search_in = answer if _PREF_OPEN.search(answer) else text
    open_match = _PREF_OPEN.search(search_in)
    body, source, quality = "", "fallback", 0.0
    if open_match:
        close_match = _PREF_CLOSE.search(search_in, open_match.end())
        end = close_match.start() if close_match else len(search_in)
        body = search_in[open_match.end() : end]
        source, quality = ("tag", 1.0) if close_match else ("open_tag", 0.6)
    elif answer.strip() and think_quality > 0:
        body, source, quality = answer, "after_think", 0.3
    body = _TAG.sub(" ", _PREF_LABEL.sub("", body.strip())).strip()
    if not body:
        bounded, truncated = bound_text(fallback, max_chars)
        return ParsedReflection(bounded, think, 0.0, "fallback", truncated)
    bounded, truncated = bound_text(body, max_chars)
    score = quality * (0.5 + 0.5 * think_quality) * (0.8 if truncated else 1.0)
    return ParsedReflection(bounded, think, float(score), source, truncated)
