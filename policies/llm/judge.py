"""Fast thinking as per-candidate judgement slots: one forward pass scores every candidate.

The prompt (``templates/judge.j2``) lists the user (profile, preference
memory, a few recent items) and then every candidate on its own line ending
with ``->``. Right after each ``->`` the model would answer " yes" (the user
is likely to choose it next) or " no"; the candidate's score is the
difference of those two next-token logits *at that position*. The answers
are never written into the sequence, so training and inference run the very
same tokens, and a whole candidate list costs one forward pass of a few
hundred tokens.

Why this form: a 135M student learns a local judgement ("does this line fit
this user?") from far fewer examples than a 20-way pointer over an
800-token list ("name the best line"), and every training sequence carries a
label for each of its candidates instead of one. Distillation trains the
slots listwise: the softmax of the 20 slot scores is fitted to the teacher's
choice distribution over the candidates (:func:`listwise_loss`).

Token ids are built piece by piece between slot markers, so the slot
positions are exact; the same :class:`JudgeEncoder` serves training and
inference.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from policies.llm.prompts import Messages, render_template
from policies.rule_based import GenreOptions
from starec_env.configtools import config_from_dict

if TYPE_CHECKING:  # torch loads only where scores are computed
    import torch

#: Marks a judgement slot in the rendered prompt; never part of the tokens.
SLOT = "\ue000"  # a private-use character: never in data, never stripped as whitespace
#: The two answers a slot chooses between; the score is logit(yes) - logit(no).
ANSWERS = (" yes", " no")
#: Short evidence names in judge prompts (legend in ``templates/judge.j2``).
EVIDENCE_LETTERS = {"pop": "p", "genre": "g", "itemknn": "s"}


@dataclass(frozen=True)
class JudgeConfig:
    """What a judge prompt shows (loadable from a TOML table).

    ``history``: recent items shown as lines; ``titles``: candidate and
    history titles (a 135M model knows little about real titles, and on the
    synthetic world they only echo the genres, so they can be switched off
    to save ~6 tokens per line); ``description_words``: the first words of
    each item's description (e.g. "witty, modern"), 0 for none; ``order``:
    how the candidates are listed (:data:`ORDERS`); ``note_marks``: after
    each candidate, what the taste note says of it (:func:`note_marks`), so
    the memory is read where the judgement is made, not only ~600 tokens
    earlier in the "Taste:" line.
    """

    history: int = 3
    titles: bool = True
    description_words: int = 0
    noun: str = "movie"
    order: str = "given"
    note_marks: bool = False

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"judge.order must be one of {ORDERS}, got {self.order!r}")
        for name in ("history", "description_words"):
            if getattr(self, name) < 0:
                raise ValueError(f"judge.{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JudgeConfig":
        return config_from_dict(cls, data, "judge")


def about(description: str, words: int) -> str:
    """The first ``words`` words of a description, without a leading article or trailing commas."""
    if words <= 0 or not description:
        return ""
    parts = description.split()
    if parts and parts[0].lower() in ("a", "an", "the"):
        parts = parts[1:]
    return " ".join(parts[:words]).rstrip(",.;:")


def evidence_text(ranks: dict[str, np.ndarray], row: int) -> list[str]:
    """Compact evidence per candidate, e.g. "p3 g1 s-", from (B, C) 1-based ranks (0 = no signal)."""
    names = [n for n in ranks]
    n_cand = ranks[names[0]].shape[1] if names else 0
    return [
        " ".join(f"{EVIDENCE_LETTERS.get(n, n)}{int(ranks[n][row, c]) or '-'}" for n in names) for c in range(n_cand)
    ]


#: A note clause with one of these words speaks against what it names ("dislikes horror").
NEGATIVE_CUES = re.compile(r"\b(dislike[sd]?|avoids?|hates?|not|no|never|skips?|less|tired of|bored by)\b")


def note_marks(note: str, genres: Sequence[Sequence[str]], abouts: Sequence[str]) -> list[str]:
    """What a taste note says of each candidate: ``+`` for every genre or
    description word of the candidate that a clause of the note likes, ``-``
    for every one a negative clause names ("dislikes horror"), ``0`` for
    none. A deterministic reading of the memory text, whoever wrote it; a
    small judge learns such a local mark from few examples, where it does
    not learn to look back at the "Taste:" line (measured)."""
    clauses = [c for c in re.split(r"[;.\n]|\bbut\b", note.lower()) if c.strip()]
    parsed = [(bool(NEGATIVE_CUES.search(c)), c) for c in clauses]
    marks = []
    for cand_genres, cand_about in zip(genres, abouts):
        terms = {str(g).lower() for g in cand_genres} | {w.strip(",.;:").lower() for w in cand_about.split() if len(w) > 2}
        liked = disliked = 0
        for term in terms:
            pattern = re.compile(rf"(?<!\w){re.escape(term)}(?!\w)")
            for negative, clause in parsed:
                if pattern.search(clause):
                    disliked += negative
                    liked += not negative
        marks.append(("+" * liked + "-" * disliked) or "0")
    return marks


def profile_text(profile: dict) -> str:
    parts = [f"age {profile['age']}"] if profile.get("age") else []
    parts += [str(profile[k]) for k in ("gender", "occupation") if profile.get(k)]
    return ", ".join(parts) if parts else "(no demographics known)"


#: How a judge prompt lists the candidates: ``given`` keeps the protocol's
#: (random) order; ``genre`` lists them in the ``genre`` agent's order (genre
#: match with the history blended with popularity), ``itemknn`` in the
#: ``itemknn`` agent's (similarity to the history; stronger on real data): a
#: cheap first stage the judge re-ranks, whose row is the first stage's own result.
ORDERS = ("given", "genre", "itemknn")
#: The evidence signals each first stage is computed from.
ORDER_SIGNALS = {"genre": ("genre", "pop"), "itemknn": ("itemknn",)}


def display_order(order: str, scores: dict[str, np.ndarray] | None, shape: tuple[int, int]) -> np.ndarray:
    """(B, C) candidate indices in the order a judge prompt lists them, from
    the evidence scorers' raw scores (``EvidenceTable.scores``)."""
    if order == "given":
        return np.tile(np.arange(shape[1]), (shape[0], 1))
    needed = ORDER_SIGNALS[order]
    if scores is None or not set(needed) <= set(scores):
        raise ValueError(f"judge.order = {order!r} needs the {' and '.join(needed)} evidence (prompt.evidence on)")
    if order == "genre":
        first = scores["genre"] + GenreOptions().pop_weight * scores["pop"]  # the genre agent's formula (up to its 1e-6 tie-break)
    else:
        first = scores["itemknn"]
    return np.argsort(-first, axis=1, kind="stable")


def in_candidate_order(slot_scores: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """Slot scores (listed order) back in the candidates' own order."""
    out = np.empty(len(order), dtype=np.float64)
    out[np.asarray(order, dtype=np.int64)] = slot_scores
    return out


#: How a judge prompt's history relates to the memory: ``memory`` (a
#: reflecting agent: its memory stands for the last ``steps`` items, so the
#: lines show the items before them), ``append`` (the no-reflection ablation:
#: those items become plain lines) and ``plain`` (no memory: the last items).
HistoryMode = Literal["memory", "append", "plain"]


def shown_history(n_rows: int, mode: HistoryMode, lines: int, steps: int) -> slice:
    """Which of a user's ``n_rows`` history items (oldest first) a judge prompt shows."""
    if mode == "append":
        return slice(max(0, n_rows - lines - steps), n_rows)
    if mode == "memory" and steps:
        end = max(0, n_rows - steps)
        return slice(max(0, end - lines), end)
    return slice(max(0, n_rows - lines), n_rows)


@dataclass(frozen=True)
class JudgePrompt:
    """Token ids of one judge prompt (cut after its last slot) and the slot positions."""

    ids: list[int]
    slots: list[int]


class JudgeEncoder:
    """Renders judge prompts and turns them into token ids with exact slot positions."""

    def __init__(self, tokenizer: Any, config: JudgeConfig | None = None) -> None:
        self.tokenizer = tokenizer
        self.config = config or JudgeConfig()
        answer_ids = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in ANSWERS]
        if any(len(a) != 1 for a in answer_ids):
            raise ValueError(f"judge answers {ANSWERS} must be single tokens for this tokenizer, got {answer_ids}")
        self.answer_ids = (answer_ids[0][0], answer_ids[1][0])

    def messages(
        self,
        view: Any,
        preference: str,
        evidence: Sequence[str] | None = None,
        history: Sequence[tuple] | None = None,
        history_descriptions: Sequence[str] | None = None,
        order: Sequence[int] | None = None,
    ) -> Messages:
        """Chat messages with slot markers. ``history`` overrides the view's
        (the caller decides which recent items to show); only the last
        ``config.history`` are rendered. ``order`` lists the candidates in
        that order (:func:`display_order`); slot ``j`` then judges candidate
        ``order[j]`` (:func:`in_candidate_order` maps scores back)."""
        cfg = self.config
        rows = list(view.history if history is None else history)
        descs = list(history_descriptions if history_descriptions is not None else getattr(view, "history_descriptions", []))
        keep = cfg.history
        rows = rows[-keep:] if keep else []
        descs = (descs[-keep:] if keep and len(descs) >= len(rows) else [""] * len(rows)) if rows else []
        cand_desc = list(getattr(view, "candidate_descriptions", None) or [""] * len(view.candidates))
        if evidence is not None and len(evidence) != len(view.candidates):
            raise ValueError(f"evidence has {len(evidence)} entries but the view has {len(view.candidates)} candidates")
        listed = [int(i) for i in order] if order is not None else list(range(len(view.candidates)))
        if sorted(listed) != list(range(len(view.candidates))):
            raise ValueError(f"order must list each of the {len(view.candidates)} candidates once, got {listed}")
        shown_about = [about(cand_desc[i], cfg.description_words) for i in listed]
        marks = None
        if cfg.note_marks and preference.strip():
            marks = note_marks(preference, [view.candidates[i][1] or () for i in listed], shown_about)
        return render_template(
            "judge",
            noun=cfg.noun,
            titles=cfg.titles,
            profile=profile_text(view.profile),
            preference=preference,
            history=rows,
            history_about=[about(d, cfg.description_words) for d in descs],
            candidates=[view.candidates[i] for i in listed],
            candidate_about=shown_about,
            evidence=[evidence[i] for i in listed] if evidence is not None else None,
            note_marks=cfg.note_marks,
            marks=marks,
            slot=SLOT,
        )

    def note_messages(
        self,
        view: Any,
        preference: str,
        *,
        predicted: Sequence[int],
        chosen: int | None,
        rating: float | None,
        max_words: int = 40,
        top: int = 5,
    ) -> Messages:
        """Slow thinking after a decision (``templates/reflect_note.j2``): the
        agent's ``top`` candidates in its own order (``predicted``: candidate
        indices, best first), what the user chose (index, or None) and its
        rating; the answer is a short think and the rewritten note."""
        n = len(view.candidates)
        predicted = [int(i) for i in predicted]
        if sorted(predicted) != list(range(n)) or (chosen is not None and not 0 <= chosen < n):
            raise ValueError(f"predicted must order all {n} candidates and chosen be one of them; got {predicted}, {chosen}")
        cand_desc = list(getattr(view, "candidate_descriptions", None) or [""] * n)
        shown = predicted[:top]
        if chosen is not None and chosen not in shown:
            shown.append(chosen)
        return render_template(
            "reflect_note",
            noun=self.config.noun,
            titles=self.config.titles,
            max_words=max_words,
            profile=profile_text(view.profile),
            preference=preference,
            candidates=list(view.candidates),
            about=[about(d, self.config.description_words) for d in cand_desc],
            predicted=shown,
            n_candidates=n,
            chosen=chosen,
            chosen_rank=predicted.index(chosen) + 1 if chosen is not None else None,
            rating=rating,
        )

    def encode(self, messages: Messages) -> JudgePrompt:
        """Token ids up to the last slot; ``slots[j]`` is the position whose
        next-token logits judge candidate ``j``."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False) \
            if getattr(self.tokenizer, "chat_template", None) else "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        pieces = text.split(SLOT)[:-1]  # what follows the last slot is never needed
        ids: list[int] = []
        slots: list[int] = []
        for piece in pieces:
            ids += self.tokenizer(piece, add_special_tokens=False)["input_ids"]
            slots.append(len(ids) - 1)
        return JudgePrompt(ids, slots)


def answer_direction(model: Any, answer_ids: tuple[int, int]) -> "torch.Tensor":
    """(H,) direction of logit(yes) - logit(no) in the output head."""
    weight = model.get_output_embeddings().weight
    return weight[answer_ids[0]] - weight[answer_ids[1]]


def slot_scores(model: Any, input_ids: "torch.Tensor", attention_mask: "torch.Tensor | None", slots: "torch.Tensor",
                answer_ids: tuple[int, int], **forward: Any) -> "torch.Tensor":
    """(B, S) slot scores from one forward pass; ``slots`` (B, S) holds positions
    (-1 for padding, scored 0). Only the final hidden states at the slots meet
    the output head: the full vocabulary logits are never built."""
    import torch

    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, logits_to_keep=1, **forward)
    hidden = out.hidden_states[-1]  # (B, T, H), after the final norm
    index = slots.clamp(min=0)
    picked = torch.gather(hidden, 1, index[..., None].expand(-1, -1, hidden.shape[-1]))
    scores = picked.float() @ answer_direction(model, answer_ids).float()
    return torch.where(slots >= 0, scores, torch.zeros_like(scores))


def listwise_loss(scores: "torch.Tensor", targets: "torch.Tensor", valid: "torch.Tensor") -> "torch.Tensor":
    """Mean over rows of the cross-entropy between the target distribution over
    a row's candidates and the softmax of its slot scores (ListNet)."""
    import torch

    masked = scores.masked_fill(~valid, float("-inf"))
    logp = torch.log_softmax(masked, dim=-1).masked_fill(~valid, 0.0)
    return -(targets * logp).sum(-1).mean()


def choice_targets(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Teacher targets: the softmax of choice logits over each row's candidates."""
    z = np.asarray(logits, dtype=np.float64) / max(temperature, 1e-6)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def order_targets(order: Sequence[int], n: int, decay: float = 0.7) -> np.ndarray:
    """Targets from a teacher's *ranking* (LLM teachers give orders, not
    probabilities): geometric weights down the ranked list."""
    p = np.zeros(n)
    for pos, cand in enumerate(order):
        p[int(cand)] = decay**pos
    return p / p.sum()

