"""Teachers for distillation: the traces the student is SFT-anchored on.

Two teachers behind one interface (:class:`Teacher`):

* :class:`OracleTeacher` - privileged and offline. It ranks by the
  simulator's true utilities but writes rationales that cite only evidence
  visible in the prompt (liked/disliked genres from the rated history, the
  evidence lines), in wording drawn from a phrase bank
  (``templates/oracle_phrases.toml``) by a generator seeded per sample, so
  traces vary naturally and are reproducible.
* :class:`LLMTeacher` - any chat model: a local transformers model through
  :mod:`policies.llm.backend`, or an OpenAI-compatible chat-completions
  endpoint (:class:`HTTPChatBackend`, configured by ``STAREC_TEACHER_BASE_URL``
  / ``STAREC_TEACHER_MODEL`` / ``STAREC_TEACHER_API_KEY``).

:func:`distill` applies the paper's filter (drop traces with no reasoning,
no ranking or no preference keywords; keep high-NDCG ones) and its
augmentation: flawed traces go back to the teacher with targeted feedback
("rethink") up to ``max_rethinks`` times. :func:`to_hf_dataset` exports the
kept traces in TRL's conversational prompt/completion format.
"""
from __future__ import annotations

import base64
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Literal, Protocol, Sequence

import numpy as np
import tomllib

from policies.llm.evidence import EvidenceBuilder, Signal, render_lines
from policies.llm.formats import THINK
from policies.llm.parsing import ParsedRanking, parse_ranking, parse_reflection
from policies.llm.prompts import (
    TEMPLATE_DIR,
    Messages,
    PromptConfig,
    TextView,
    candidate_ids,
    render_rank_prompt,
    render_reflect_prompt,
    render_rethink_prompt,
)
from starec_env.configtools import config_from_dict
from starec_env.metrics import ndcg_graded, ndcg_single

#: A teacher task: an answer format of :mod:`policies.llm.formats` (think-first ranking or reflection).
Kind = Literal["think", "reflect"]

#: Words that show a trace talks about what the user likes (the paper's
#: "preference keywords"); the genres of the prompt count as well.
PREFERENCE_WORDS = ("like", "love", "enjoy", "prefer", "favo", "dislike", "avoid", "fan of", "taste", "interest")


class TeacherError(RuntimeError):
    """A teacher could not answer (endpoint unreachable, bad reply, ...)."""


# --------------------------------------------------------------------- samples
@dataclass(frozen=True)
class TeacherSample:
    """One task for a teacher.

    Ranking: ``view`` + ``memory`` (+ ``evidence`` lines and their structured
    ``signals`` per candidate). Reflection additionally: ``predicted`` (the
    agent's order of candidate indices), ``chosen`` (candidate index the user
    picked, None for no click) and ``rating``. ``utilities`` (C,) are the
    simulator's true utilities (privileged: only the oracle reads them);
    ``target`` is the held-out positive's candidate index for the NDCG filter.
    ``key`` identifies the sample (seeds the oracle's wording).
    """

    view: TextView
    key: int
    memory: str = ""
    evidence: list[str] | None = None
    signals: list[list[Signal]] | None = None
    utilities: np.ndarray | None = None
    target: int | None = None
    predicted: tuple[int, ...] = ()
    chosen: int | None = None
    rating: float | None = None
    user: int = -1
    items: tuple[int, ...] = ()

    @property
    def ids(self) -> list[str]:
        return candidate_ids(len(self.view.candidates))

    def prompt(self, kind: Kind, config: PromptConfig | None = None) -> Messages:
        """The student-facing prompt of this sample (what the SFT data pairs with the answer)."""
        if kind == THINK.name:
            return render_rank_prompt(self.view, self.memory, mode=kind, evidence=self.evidence, config=config)
        return render_reflect_prompt(
            self.view, self.memory, predicted=self.predicted, chosen=self.chosen, rating=self.rating, config=config
        )


@dataclass(frozen=True)
class Rethink:
    """Feedback on a flawed trace: what went wrong and the previous answer."""

    problems: tuple[str, ...]
    previous: str
    messages: Messages
    target: int | None = None
    attempt: int = 1


class Teacher(Protocol):
    def generate(
        self, kind: Kind, samples: Sequence[TeacherSample], chats: Sequence[Messages], rethinks: Sequence[Rethink | None]
    ) -> list[str]:
        """One completion per sample; ``chats`` are the full conversations
        (prompt, plus previous answer and feedback when rethinking)."""
        ...


# ------------------------------------------------------------- visible taste
def genre_taste(history: Sequence[tuple], max_genres: int = 3, center: float = 3.0) -> tuple[list[str], list[str]]:
    """Liked and disliked genres from a rated history (visible evidence only).

    A genre's weight is the sum of ``rating - center`` over history items
    carrying it; liked = strongest positive weights, disliked = strongest
    negative ones (ties broken by name for determinism).
    """
    weight: Counter[str] = Counter()
    for _title, genres, _year, rating in history:
        for g in genres:
            weight[g] += float(rating) - center
    ranked = sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))
    liked = [g for g, w in ranked if w > 0][:max_genres]
    disliked = [g for g, w in sorted(weight.items(), key=lambda kv: (kv[1], kv[0])) if w < 0][:max_genres]
    return liked, disliked


def _join(words: Sequence[str]) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


@lru_cache(maxsize=1)
def _phrases() -> dict[str, dict[str, list[str]]]:
    with open(TEMPLATE_DIR / "oracle_phrases.toml", "rb") as fh:
        return tomllib.load(fh)


# ------------------------------------------------------------- oracle teacher
class OracleTeacher:
    """Privileged teacher: true-utility rankings, visible-evidence rationales.

    ``noise`` (std, in utility units) perturbs the ranking for diversity;
    0 keeps it exactly consistent with the true utilities. On a rethink whose
    problem is a low NDCG, the user's actual choice (revealed by the feedback)
    is promoted to the top, as an LLM teacher told its error would do.
    """

    def __init__(self, seed: int = 0, noise: float = 0.0, noun: str = "movie", max_words: int = 60) -> None:
        self.seed = seed
        self.noise = noise
        self.noun = noun
        self.max_words = max_words

    def _rng(self, sample: TeacherSample, kind: Kind, attempt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(sample.key) & 0x7FFFFFFF, int(kind == "reflect"), attempt])

    def generate(
        self, kind: Kind, samples: Sequence[TeacherSample], chats: Sequence[Messages], rethinks: Sequence[Rethink | None]
    ) -> list[str]:
        out = []
        for sample, rethink in zip(samples, rethinks):
            rng = self._rng(sample, kind, 0 if rethink is None else rethink.attempt)
            out.append(self.rank(sample, rng, rethink) if kind == THINK.name else self.reflect(sample, rng))
        return out

    # -- ranking
    def order(self, sample: TeacherSample, rng: np.random.Generator, rethink: Rethink | None = None) -> list[int]:
        if sample.utilities is None:
            raise TeacherError(f"the oracle teacher needs true utilities; sample {sample.key} has none")
        util = np.asarray(sample.utilities, dtype=np.float64).copy()
        if self.noise > 0:
            util += rng.normal(0.0, self.noise, size=util.shape)
        if rethink is not None and "low_ndcg" in rethink.problems and rethink.target is not None:
            util[rethink.target] = util.max() + 1.0
        return [int(i) for i in np.argsort(-util, kind="stable")]

    def rank(self, sample: TeacherSample, rng: np.random.Generator, rethink: Rethink | None = None) -> str:
        order = self.order(sample, rng, rethink)
        view, ids, bank = sample.view, sample.ids, _phrases()
        liked, disliked = genre_taste(view.history)
        pick = _Picker(rng, self.noun)
        think = []
        if sample.memory:
            think.append(pick(bank["think"]["memory"], memory=" ".join(sample.memory.split()[:30])))
        if liked:
            think.append(pick(bank["think"]["liked"], liked=_join(liked)))
        if disliked:
            think.append(pick(bank["think"]["disliked"], disliked=_join(disliked)))
        if not liked and not disliked:
            think.append(pick(bank["think"]["no_genre"]))
        n = len(order)
        upper = (n + 1) // 2  # positions argued for with positive evidence
        reasons = [self._reason(sample, c, pos < upper, liked, disliked, pick) for pos, c in enumerate(order)]
        cited = [("top", 0)] + [("runner_up", pos) for pos in range(1, min(3, upper))] + ([("bottom", n - 1)] if n > 1 else [])
        for phrase, pos in cited:
            c = order[pos]
            think.append(pick(bank["think"][phrase], id=ids[c], title=view.candidates[c][0], why=reasons[pos]))
        lines = [f"{pos + 1}. [{ids[c]}] - {reasons[pos][0].upper() + reasons[pos][1:]}" for pos, c in enumerate(order)]
        return "<think>\n" + " ".join(think) + "\n</think>\n" + "\n".join(lines)

    def _reason(
        self, sample: TeacherSample, cand: int, upper: bool, liked: list[str], disliked: list[str], pick: "_Picker"
    ) -> str:
        """A brief reason for ``cand`` citing visible evidence that agrees with
        its place: positive facts in the upper half, negative ones below."""
        bank = _phrases()["reason"]
        genres = sample.view.candidates[cand][1]
        levels = {s.name: s.level for s in (sample.signals[cand] if sample.signals else [])}
        options: list[str] = []
        if upper:
            options += [pick(bank["liked_genre"], genre=g) for g in genres if g in liked]
            options += [pick(bank["popular"])] if levels.get("pop") == "high" else []
            options += [pick(bank["similar"])] if levels.get("itemknn") == "high" else []
            options += [pick(bank["genre_evidence"])] if levels.get("genre") == "high" else []
            fallback = bank["neutral"]
        else:
            options += [pick(bank["disliked_genre"], genre=g) for g in genres if g in disliked]
            options += [pick(bank["unpopular"])] if levels.get("pop") in ("low", "none") else []
            options += [pick(bank["dissimilar"])] if levels.get("itemknn") in ("low", "none") else []
            fallback = bank["weaker"]
        if not options:
            return pick(fallback)
        chosen = rng_choice(pick.rng, options, k=min(2, len(options)))
        return " and ".join(chosen)

    # -- reflection
    def reflect(self, sample: TeacherSample, rng: np.random.Generator) -> str:
        view, ids, bank = sample.view, sample.ids, _phrases()["reflect"]
        pick = _Picker(rng, self.noun)
        think = []
        top = sample.predicted[0] if sample.predicted else None
        history = list(view.history)
        if sample.chosen is None:
            if top is not None:
                think.append(pick(bank["no_click"], pred_id=ids[top], pred_title=view.candidates[top][0]))
                think.append(pick(bank["overrated"], **_genre_fields(view.candidates[top][1])))
        else:
            title, genres, year = view.candidates[sample.chosen][:3]
            rating = int(round(sample.rating)) if sample.rating else 3
            history.append((title, genres, year, rating))
            fields_ = {"id": ids[sample.chosen], "title": title, "genres": _join(genres) if genres else "no genre", "rating": rating}
            if top == sample.chosen:
                think.append(pick(bank["hit"], rank=1, **fields_))
                think.append(pick(bank["confirmed"]))
            else:
                pred_title = view.candidates[top][0] if top is not None else "nothing"
                pred_id = ids[top] if top is not None else "-"
                think.append(pick(bank["missed"], pred_id=pred_id, pred_title=pred_title, **fields_))
                missing = [g for g in genres if g.lower()[:5] not in sample.memory.lower()]  # stem: "comedies"
                if missing and rating >= 4:
                    think.append(pick(bank["underrated"], **_genre_fields(missing)))
                if top is not None:
                    extra = [g for g in view.candidates[top][1] if g not in genres]
                    if extra:
                        think.append(pick(bank["overrated"], **_genre_fields(extra)))
        liked, disliked = genre_taste(history)
        pref = []
        if liked:
            pref.append(pick(bank["liked"], liked=_join(liked)))
        if disliked:
            pref.append(pick(bank["disliked"], disliked=_join(disliked)))
        if sample.chosen is not None:
            key = "recent" if (sample.rating or 0) >= 4 else "recent_bad"
            pref.append(pick(bank[key], title=view.candidates[sample.chosen][0]))
        if not pref:
            pref.append(pick(bank["unknown"]))
        description = " ".join(" ".join(pref).split()[: self.max_words])
        return "<think>\n" + " ".join(think) + "\n</think>\n<preference>" + description + "</preference>"


def _genre_fields(genres: Sequence[str]) -> dict[str, str]:
    text = _join(genres) if genres else "those genres"
    return {"genres": text, "genres_cap": text[:1].upper() + text[1:]}


def rng_choice(rng: np.random.Generator, options: Sequence[str], k: int = 1) -> list[str]:
    """``k`` distinct options in drawn order (seeded)."""
    return [options[i] for i in rng.choice(len(options), size=k, replace=False)]


@dataclass
class _Picker:
    """Picks one phrasing from a bank entry and fills it in."""

    rng: np.random.Generator
    noun: str

    def __call__(self, variants: Sequence[str], **values: Any) -> str:
        return rng_choice(self.rng, variants)[0].format(noun=self.noun, **values)


# ------------------------------------------------------- oracle taste notes
class TasteNotes:
    """The oracle's taste notes for the judge agents' slow thinking.

    Privileged like :class:`OracleTeacher`: it knows each user's true
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
        from policies.llm.judge import about

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
        bank = _phrases()["note"]
        rng = np.random.default_rng([self.seed, int(user) & 0x7FFFFFFF, len(seen)])
        pick = _Picker(rng, self.noun)
        ranked = [g for g in shown_genres[np.argsort(-np.nan_to_num(genre_aff[shown_genres], nan=-9), kind="stable")]
                  if genre_aff[g] > 0]
        liked = [self.genre_names[g].lower() for g in ranked[: self.max_liked]]
        worst = [g for g in shown_genres[np.argsort(np.nan_to_num(genre_aff[shown_genres], nan=9), kind="stable")]
                 if genre_aff[g] < 0][:1]
        themes = [self.words[w] for w in shown_words[np.argsort(-np.nan_to_num(word_aff[shown_words], nan=-9), kind="stable")]
                  if word_aff[w] > 0][: self.max_themes]
        parts = []
        if liked:
            parts.append(pick(bank["liked"], liked=_join(liked)))
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
        bank = _phrases()["note"]
        rng = np.random.default_rng([self.seed, int(user) & 0x7FFFFFFF, len(seen_items), 1])
        pick = _Picker(rng, self.noun)
        kind = ", ".join(g.lower() for g in genres) or "unlabelled"
        if rank is None:
            think = pick(bank["no_click"])
        else:
            stars = int(round(rating)) if rating else 3
            think = pick(bank["hit" if rank <= 2 and stars >= 4 else "miss"], genres=kind, rank=rank, n=n, rating=stars)
        return f"<think>{think}</think><preference>{self.note(user, seen_items)}</preference>"


# ---------------------------------------------------------------- LLM teacher
ChatFn = Callable[[Sequence[Messages]], list[str]]


class LLMTeacher:
    """A teacher that is any chat model: ``chat`` maps conversations to replies
    (:class:`HTTPChatBackend`, :class:`LocalChatBackend` or your own)."""

    def __init__(self, chat: ChatFn) -> None:
        self.chat = chat

    def generate(
        self, kind: Kind, samples: Sequence[TeacherSample], chats: Sequence[Messages], rethinks: Sequence[Rethink | None]
    ) -> list[str]:
        replies = self.chat(list(chats))
        if len(replies) != len(chats):
            raise TeacherError(f"teacher returned {len(replies)} replies for {len(chats)} prompts")
        return replies


class HTTPChatBackend:
    """An OpenAI-compatible ``/chat/completions`` endpoint over urllib.

    Retries timeouts, connection errors, 429 and 5xx answers with exponential
    backoff; other HTTP errors fail at once with the server's message. A
    separate ``reasoning_content`` (reasoning models such as DeepSeek-R1) is
    folded back into ``<think>...</think>``. ``/chat/completions`` is added to
    the base URL's path, before any query (Azure's ``?api-version=...``);
    ``user:password@`` in the URL is sent as basic authentication. Messages
    and :meth:`describe` show the URL with its credentials and query values
    hidden, and server replies with the API key masked.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 1.0,
        temperature: float = 0.6,
        max_tokens: int = 1024,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url or not model:
            raise TeacherError("an HTTP teacher needs a base URL and a model name")
        self.url, self.credentials = chat_url(base_url)
        self.shown_url = redact_url(self.url)
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.sleep = sleep

    @classmethod
    def from_env(cls, **kwargs: Any) -> "HTTPChatBackend":
        """Configure from ``STAREC_TEACHER_BASE_URL`` / ``_MODEL`` / ``_API_KEY``."""
        base, model = os.environ.get("STAREC_TEACHER_BASE_URL"), os.environ.get("STAREC_TEACHER_MODEL")
        if not base or not model:
            raise TeacherError("set STAREC_TEACHER_BASE_URL and STAREC_TEACHER_MODEL (and STAREC_TEACHER_API_KEY if needed)")
        return cls(base, model, os.environ.get("STAREC_TEACHER_API_KEY"), **kwargs)

    def describe(self) -> dict[str, str]:
        """What a run records about its teacher: the endpoint (credentials hidden) and the model."""
        return {"endpoint": self.shown_url, "model": self.model}

    def __call__(self, chats: Sequence[Messages]) -> list[str]:
        return [self.complete(chat) for chat in chats]

    def complete(self, messages: Messages) -> str:
        body = json.dumps(
            {"model": self.model, "messages": messages, "temperature": self.temperature, "max_tokens": self.max_tokens}
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        elif self.credentials:
            headers["Authorization"] = "Basic " + base64.b64encode(self.credentials.encode()).decode()
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return _reply_text(json.loads(response.read().decode("utf-8")), self)
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}: {self.mask(err.read().decode('utf-8', 'replace'))}"
                if err.code != 429 and err.code < 500:
                    raise TeacherError(f"teacher endpoint {self.shown_url} refused the request ({last})") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = f"{type(err).__name__}: {self.mask(str(getattr(err, 'reason', err)))}"
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise TeacherError(f"teacher endpoint {self.shown_url} did not reply with JSON") from None
        raise TeacherError(f"teacher endpoint {self.shown_url} failed after {self.retries + 1} attempts ({last})")

    def mask(self, text: str, limit: int = 200) -> str:
        """A server's text fit for an error message: secrets we sent masked, clipped to ``limit``."""
        password = self.credentials.partition(":")[2]
        secrets = [s for s in (self.api_key, self.credentials, password) if s and len(s) >= 4]
        secrets += [v for _, v in urllib.parse.parse_qsl(urllib.parse.urlsplit(self.url).query) if len(v) >= 4]
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        text = _TOKEN_LIKE.sub("***", " ".join(text.split()))
        return text if len(text) <= limit else text[: limit - 3] + "..."


#: Query parameters that carry no secret and are worth showing (the rest are hidden).
_PUBLIC_QUERY = frozenset({"api-version", "api_version"})
#: Things in a server reply that look like keys or authorization tokens.
_TOKEN_LIKE = re.compile(r"(?i)\b(?:sk|pk|rk|key|api[-_]?key)[-_][A-Za-z0-9_-]{6,}|(?<=Bearer )\S+|(?<=Basic )\S+")


def chat_url(base_url: str) -> tuple[str, str]:
    """(request URL, ``user:password`` or ""): ``/chat/completions`` joined to
    the path of ``base_url`` (kept when already there), the query kept, the
    credentials taken out of the URL."""
    try:
        parts = urllib.parse.urlsplit(base_url.strip())
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:  # a bad port or IPv6 address
        valid = False
    if not valid:
        raise TeacherError(f"STAREC_TEACHER_BASE_URL must be an http(s) URL such as https://host/v1, got {redact_url(base_url)!r}")
    credentials, _, host = parts.netloc.rpartition("@")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urllib.parse.urlunsplit((parts.scheme, host, path, parts.query, "")), urllib.parse.unquote(credentials)


def redact_url(url: str) -> str:
    """``url`` safe to print or record: ``user:password@`` and every query value
    but the API version replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<an unparsable URL>"
    host = parts.netloc.rpartition("@")[2]
    netloc = f"***@{host}" if "@" in parts.netloc else host
    query = [(k, v if k.lower() in _PUBLIC_QUERY else "***") for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, urllib.parse.urlencode(query, safe="*"), ""))


def http_teacher_record() -> dict[str, str | None]:
    """The HTTP teacher a run uses, as recorded beside its results (from the
    environment, credentials hidden; None where a variable is unset)."""
    base = os.environ.get("STAREC_TEACHER_BASE_URL")
    return {"teacher": "http", "endpoint": redact_url(chat_url(base)[0]) if base else None,
            "model": os.environ.get("STAREC_TEACHER_MODEL")}


def _reply_text(payload: Any, backend: HTTPChatBackend) -> str:
    try:
        message = payload["choices"][0]["message"]
        content = message.get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise TeacherError(
            f"teacher endpoint {backend.shown_url} replied without choices[0].message: {backend.mask(str(payload))}"
        ) from None
    reasoning = message.get("reasoning_content")
    if reasoning and "<think>" not in content:
        content = f"<think>\n{reasoning.strip()}\n</think>\n{content}"
    return str(content)


class LocalChatBackend:
    """A local transformers model (any name :func:`policies.llm.models.load_model`
    accepts) answering through the batched, accounted LLM backend.

    Greedy by default; ``temperature > 0`` samples from a seeded
    ``torch.Generator``.
    """

    def __init__(self, model: str, *, max_new_tokens: int = 512, temperature: float = 0.0, seed: int = 0, **backend_kwargs: Any) -> None:
        from policies.llm.backend import get_backend  # lazy: torch/transformers only when used

        self.backend = get_backend(model, seed=seed, **backend_kwargs)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self._generator = None

    def __call__(self, chats: Sequence[Messages]) -> list[str]:
        generator = None
        if self.temperature > 0:
            import torch

            if self._generator is None:
                self._generator = torch.Generator(device=self.backend.device).manual_seed(self.seed)
            generator = self._generator
        return self.backend.generate(
            list(chats),
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            generator=generator,
            agent="teacher",
            mode=THINK.name,
        )


def make_teacher(spec: str, *, seed: int = 0, **kwargs: Any) -> Teacher:
    """A teacher by name: ``oracle``, ``http`` (endpoint from the environment)
    or ``local:<model name>`` (e.g. ``local:smollm2-135m``)."""
    if spec == "oracle":
        return OracleTeacher(seed=seed, **kwargs)
    if spec == "http":
        return LLMTeacher(HTTPChatBackend.from_env(**kwargs))
    if spec.startswith("local:"):
        return LLMTeacher(LocalChatBackend(spec.split(":", 1)[1], seed=seed, **kwargs))
    raise ValueError(f"unknown teacher {spec!r}: expected 'oracle', 'http' or 'local:<model>'")


# ------------------------------------------------------------------- filter
@dataclass(frozen=True)
class FilterConfig:
    """The distillation filter. ``min_ndcg`` is NDCG@``ndcg_k`` of the held-out
    target (graded against true utilities when there is no target);
    ``full_ranking`` demands every candidate exactly once."""

    min_ndcg: float = 0.5
    ndcg_k: int = 10
    full_ranking: bool = True
    keywords: tuple[str, ...] = PREFERENCE_WORDS


@dataclass(frozen=True)
class DistillConfig:
    """Settings of :func:`distill`, loadable from a TOML table."""

    max_rethinks: int = 2
    filter: FilterConfig = field(default_factory=FilterConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DistillConfig":
        data = dict(data)
        data["filter"] = config_from_dict(FilterConfig, data.get("filter", {}), "filter")
        data["prompt"] = config_from_dict(PromptConfig, data.get("prompt", {}), "prompt")
        return config_from_dict(cls, data, "distillation")


@dataclass(frozen=True)
class TraceCheck:
    """Outcome of the filter on one trace."""

    problems: tuple[str, ...]
    ndcg: float | None
    format_score: float
    parsed: ParsedRanking | None = None


def has_preference_keywords(text: str, sample: TeacherSample, keywords: Sequence[str]) -> bool:
    """Whether ``text`` talks about the user's taste: a preference word or a
    genre that appears in the prompt."""
    low = text.lower()
    genres = {g.lower() for _t, gs, *_ in list(sample.view.history) + list(sample.view.candidates) for g in gs}
    return any(k in low for k in keywords) or any(g and g in low for g in genres)


def check_trace(kind: Kind, text: str, sample: TeacherSample, config: FilterConfig) -> TraceCheck:
    """Apply the paper's filter; problems are named for targeted feedback."""
    problems = []
    if kind == "reflect":
        parsed_r = parse_reflection(text)
        if not parsed_r.think:
            problems.append("missing_reasoning")
        if parsed_r.source == "fallback":
            problems.append("missing_preference")
        elif not has_preference_keywords(parsed_r.preference, sample, config.keywords):
            problems.append("no_preference_keywords")
        return TraceCheck(tuple(problems), None, parsed_r.format_score)
    parsed = parse_ranking(text, sample.ids, expect_think=THINK.expect_think)
    n = len(sample.ids)
    if not parsed.think:
        problems.append("missing_reasoning")
    if parsed.n_valid == 0 or (config.full_ranking and (parsed.n_valid < n or parsed.repairs["duplicate"])):
        problems.append("missing_ranking")
    if parsed.think and not has_preference_keywords(parsed.think, sample, config.keywords):
        problems.append("no_preference_keywords")
    ndcg = trace_ndcg(parsed, sample, config.ndcg_k)
    if ndcg is not None and ndcg < config.min_ndcg:
        problems.append("low_ndcg")
    return TraceCheck(tuple(problems), ndcg, parsed.format_score, parsed)


def trace_ndcg(parsed: ParsedRanking, sample: TeacherSample, k: int) -> float | None:
    """NDCG@k of a parsed ranking: of the target if known, else graded by
    true utilities, else None (nothing to judge against)."""
    scores = parsed.scores()[None, :]
    if sample.target is not None:
        rank = int(parsed.order.index(sample.target))
        return float(ndcg_single(np.array([rank]), k)[0])
    if sample.utilities is not None:
        return float(ndcg_graded(scores, np.asarray(sample.utilities)[None, :], k)[0])
    return None


def rethink_for(check: TraceCheck, text: str, sample: TeacherSample, attempt: int = 1) -> Rethink:
    """Targeted feedback for a flawed trace."""
    ids = sample.ids
    missing: list[str] = []
    target_rank = None
    if check.parsed is not None:
        written = set(check.parsed.order[: check.parsed.n_valid])
        missing = [ids[i] for i in range(len(ids)) if i not in written]
        if sample.target is not None:
            target_rank = check.parsed.order.index(sample.target) + 1
    messages = render_rethink_prompt(
        check.problems,
        n_candidates=len(ids),
        missing=missing,
        target_id=ids[sample.target] if sample.target is not None else None,
        target_rank=target_rank,
    )
    return Rethink(check.problems, text, messages, sample.target, attempt)


# ------------------------------------------------------------------ distill
@dataclass(frozen=True)
class Trace:
    """A kept teacher trace: the student prompt and the teacher's answer."""

    kind: Kind
    sample: TeacherSample
    prompt: Messages
    completion: str
    attempts: int
    ndcg: float | None
    format_score: float


@dataclass
class DistillResult:
    traces: list[Trace]
    dropped: list[tuple[int, tuple[str, ...]]]
    stats: dict[str, Any]


def distill(teacher: Teacher, samples: Sequence[TeacherSample], kind: Kind = "think", config: DistillConfig | None = None) -> DistillResult:
    """Ask ``teacher`` for every sample, filter, and send flawed traces back
    with targeted feedback up to ``config.max_rethinks`` times.

    Kept traces pair the *original* prompt (what the student will see) with
    the final answer. ``stats`` counts samples, kept (first try / after
    rethinking), dropped, and each problem seen.
    """
    config = config or DistillConfig()
    prompts = [s.prompt(kind, config.prompt) for s in samples]
    rethinks: list[Rethink | None] = [None] * len(samples)
    pending = list(range(len(samples)))
    traces, dropped = [], []
    problems_seen: Counter[str] = Counter()
    for attempt in range(config.max_rethinks + 1):
        if not pending:
            break
        chats = [_conversation(prompts[i], rethinks[i]) for i in pending]
        texts = teacher.generate(kind, [samples[i] for i in pending], chats, [rethinks[i] for i in pending])
        still = []
        for i, text in zip(pending, texts):
            check = check_trace(kind, text, samples[i], config.filter)
            problems_seen.update(check.problems)
            if not check.problems:
                traces.append(Trace(kind, samples[i], prompts[i], text, attempt + 1, check.ndcg, check.format_score))
            elif attempt < config.max_rethinks:
                rethinks[i] = rethink_for(check, text, samples[i], attempt + 1)
                still.append(i)
            else:
                dropped.append((samples[i].key, check.problems))
        pending = still
    stats = {
        "samples": len(samples),
        "kept": len(traces),
        "kept_first_try": sum(t.attempts == 1 for t in traces),
        "kept_after_rethink": sum(t.attempts > 1 for t in traces),
        "dropped": len(dropped),
        "problems": dict(sorted(problems_seen.items())),
    }
    return DistillResult(traces, dropped, stats)


def _conversation(prompt: Messages, rethink: Rethink | None) -> Messages:
    if rethink is None:
        return list(prompt)
    return list(prompt) + [{"role": "assistant", "content": rethink.previous}] + list(rethink.messages)


def to_records(traces: Sequence[Trace]) -> list[dict[str, Any]]:
    """Traces as TRL conversational prompt/completion rows, plus the columns
    the RL rewards read (``candidate_ids``, ``target``, ``utilities``,
    ``user``, ``items``) and provenance (``kind``, ``attempts``, ``ndcg``)."""
    rows = []
    for t in traces:
        s = t.sample
        rows.append(
            {
                "prompt": [dict(m) for m in t.prompt],
                "completion": [{"role": "assistant", "content": t.completion}],
                "kind": t.kind,
                "key": int(s.key),
                "attempts": int(t.attempts),
                "ndcg": float("nan") if t.ndcg is None else float(t.ndcg),
                "format_score": float(t.format_score),
                "candidate_ids": s.ids,
                "target": -1 if s.target is None else int(s.target),
                "utilities": [] if s.utilities is None else [float(u) for u in s.utilities],
                "user": int(s.user),
                "items": [int(i) for i in s.items],
            }
        )
    return rows


def to_hf_dataset(traces: Sequence[Trace]):
    """Kept traces as a Hugging Face ``datasets.Dataset`` ready for TRL's SFT."""
    import datasets  # lazy: only the distillation path needs it

    return datasets.Dataset.from_list(to_records(traces))


# ------------------------------------------------------- samples from a run
def rank_samples(
    protocol: Any,
    rows: Sequence[int],
    *,
    utilities: np.ndarray | None = None,
    evidence: EvidenceBuilder | None = None,
    memories: Sequence[str] | None = None,
) -> list[TeacherSample]:
    """Ranking samples for rows of a leave-one-out protocol
    (:class:`starec_env.protocol.LeaveOneOut`): text view, held-out target,
    optional true ``utilities`` (rows x C, e.g. the oracle policy's scores)
    and evidence from ``evidence`` (fit it on ``protocol.split`` first)."""
    rows = [int(r) for r in rows]
    batch = protocol.batch.take(np.asarray(rows, dtype=np.int64))
    table = evidence.table(batch) if evidence is not None and evidence.config.enabled else None
    lines = render_lines(table) if table is not None else None
    ratings = protocol.dataset.rating_arr[protocol.target_rows[rows]]
    out = []
    for j, row in enumerate(rows):
        out.append(
            TeacherSample(
                view=protocol.text_view(row),
                key=int(batch.users[j]),
                memory=memories[j] if memories is not None else "",
                evidence=lines[j] if lines is not None else None,
                signals=[table.signals(j, c) for c in range(batch.candidates.shape[1])] if table is not None else None,
                utilities=None if utilities is None else np.asarray(utilities[j], dtype=np.float64),
                target=int(protocol.target_pos[row]),
                rating=float(ratings[j]),
                user=int(batch.users[j]),
                items=tuple(int(i) for i in batch.candidates[j]),
            )
        )
    return out


def reflect_samples(samples: Sequence[TeacherSample], predicted: Sequence[Sequence[int]]) -> list[TeacherSample]:
    """Reflection samples: each ranking sample's ``predicted`` order (e.g. the
    student's or a teacher's) against the user's actual choice, the held-out
    target with its rating."""
    out = []
    for s, order in zip(samples, predicted):
        out.append(
            TeacherSample(
                view=s.view,
                key=s.key,
                memory=s.memory,
                utilities=s.utilities,
                predicted=tuple(int(c) for c in order),
                chosen=s.target,
                rating=s.rating,
                user=s.user,
                items=s.items,
            )
        )
    return out
