"""The oracle's wording: its phrase bank and the taste notes it writes.

The oracle teacher (:class:`policies.llm.teachers.OracleTeacher`) and
:class:`TasteNotes` (the notes a judge agent's slow thinking learns to
write, also read by the memory probe) word what they know with phrasings
drawn from ``templates/oracle_phrases.toml`` by a generator seeded per
sample, so texts vary naturally and are reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np
import tomllib

from policies.llm.judge import about
from policies.llm.prompts import TEMPLATE_DIR


def join_words(words: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


@lru_cache(maxsize=1)
def phrases() -> dict[str, dict[str, list[str]]]:
    """The phrase bank: section -> entry -> phrasings."""
    with open(TEMPLATE_DIR / "oracle_phrases.toml", "rb") as fh:
        return tomllib.load(fh)


def rng_choice(rng: np.random.Generator, options: Sequence[str], k: int = 1) -> list[str]:
    """``k`` distinct options in drawn order (seeded)."""
    return [options[i] for i in rng.choice(len(options), size=k, replace=False)]


@dataclass
class Picker:
    """Picks one phrasing from a bank entry and fills it in."""

    rng: np.random.Generator
    noun: str

    def __call__(self, variants: Sequence[str], **values: Any) -> str:
        return rng_choice(self.rng, variants)[0].format(noun=self.noun, **values)


class TasteNotes:
    """The oracle's taste notes for the judge agents' slow thinking.

    Privileged like :class:`~policies.llm.teachers.OracleTeacher`: it knows each user's true
    utilities, but it only *names* genres and description words of items the
    note's reader has seen (the walk so far), so a student can learn to write
    such notes from what its prompts show. A genre's (or word's) affinity is
    the mean true utility of the catalogue items carrying it minus the user's
    mean over the catalogue; the note lists the ``max_liked`` best liked
    genres, the worst disliked one and the ``max_themes`` best words. Works
    for any world whose simulator gives utilities (synthetic or fitted).
    """

    def __init__(self, dataset: Any, utility: Callable[[np.ndarray, np.ndarray], np.ndarray], *, description_words: int = 2,
                 noun: str = "movie", max_liked: int = 3, max_themes: int = 2, seed: int = 0, min_items: int = 5) -> None:
        self.dataset = dataset
        self.utility = utility
        self.noun = noun
        self.max_liked = max_liked
        self.max_themes = max_themes
        self.seed = seed
        self.genre_names = list(dataset.genre_names)
        self.genres = np.asarray(dataset.item_genres, dtype=np.float64)  # (items, genres) 0/1
        words = [[w.strip(",.;:").lower() for w in about(str(d), description_words).split()] for d in dataset.items["description"]]
        # description words that only restate a genre or the kind of item say nothing new
        skip = {g.lower() for g in self.genre_names} | {noun, "film", "movie", "about", "album", "cd"}
        vocab = sorted({w for ws in words for w in ws if w and w not in skip and "/" not in w})
        index = {w: j for j, w in enumerate(vocab)}
        self.words = vocab
        self.item_words = np.zeros((dataset.n_items, len(vocab)))
        for i, ws in enumerate(words):
            for w in ws:
                if w in index:
                    self.item_words[i, index[w]] = 1.0
        self.min_items = min_items
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def affinities(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """(genre affinities, word affinities) of ``user``; NaN where too few items carry it."""
        if user not in self._cache:
            util = np.asarray(self.utility(np.array([user]), np.arange(self.dataset.n_items)[None]), dtype=np.float64)[0]
            util = util - util.mean()

            def mean_over(matrix: np.ndarray) -> np.ndarray:
                counts = matrix.sum(axis=0)
                return np.where(counts >= self.min_items, (util @ matrix) / np.maximum(counts, 1), np.nan)

            self._cache[user] = (mean_over(self.genres), mean_over(self.item_words))
        return self._cache[user]

    def note(self, user: int, seen_items: Sequence[int]) -> str:
        """The note after seeing ``seen_items``: liked / disliked genres and
        liked description words among those the items show."""
        genre_aff, word_aff = self.affinities(int(user))
        seen = np.asarray(list(seen_items), dtype=np.int64)
        shown_genres = np.flatnonzero(self.genres[seen].sum(axis=0) > 0) if len(seen) else np.array([], dtype=np.int64)
        shown_words = np.flatnonzero(self.item_words[seen].sum(axis=0) > 0) if len(seen) else np.array([], dtype=np.int64)
        bank = phrases()["note"]
        rng = np.random.default_rng([self.seed, int(user) & 0x7FFFFFFF, len(seen)])
        pick = Picker(rng, self.noun)
        ranked = [g for g in shown_genres[np.argsort(-np.nan_to_num(genre_aff[shown_genres], nan=-9), kind="stable")]
                  if genre_aff[g] > 0]
        liked = [self.genre_names[g].lower() for g in ranked[: self.max_liked]]
        worst = [g for g in shown_genres[np.argsort(np.nan_to_num(genre_aff[shown_genres], nan=9), kind="stable")]
                 if genre_aff[g] < 0][:1]
        themes = [self.words[w] for w in shown_words[np.argsort(-np.nan_to_num(word_aff[shown_words], nan=-9), kind="stable")]
                  if word_aff[w] > 0][: self.max_themes]
        parts = []
        if liked:
            parts.append(pick(bank["liked"], liked=join_words(liked)))
        if worst:
            parts.append(pick(bank["disliked"], disliked=self.genre_names[worst[0]].lower()))
        if themes:
            parts.append(pick(bank["themes"], themes=", ".join(themes)))
        if not parts:
            parts.append(pick(bank["unknown"]))
        text = "; ".join(parts)
        return text[:1].upper() + text[1:] + "."

    def reflection(self, user: int, seen_items: Sequence[int], *, genres: Sequence[str], rank: int | None, n: int,
                   rating: float | None) -> str:
        """A whole note-update answer: one sentence of reflection, then the note."""
        bank = phrases()["note"]
        rng = np.random.default_rng([self.seed, int(user) & 0x7FFFFFFF, len(seen_items), 1])
        pick = Picker(rng, self.noun)
        kind = ", ".join(g.lower() for g in genres) or "unlabelled"
        if rank is None:
            think = pick(bank["no_click"])
        else:
            stars = int(round(rating)) if rating else 3
            think = pick(bank["hit" if rank <= 2 and stars >= 4 else "miss"], genres=kind, rank=rank, n=n, rating=stars)
        return f"<think>{think}</think><preference>{self.note(user, seen_items)}</preference>"
