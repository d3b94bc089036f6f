"""Rule-based rewards for LLM ranking completions, in TRL's reward convention.

Every reward is a plain callable ``f(prompts, completions, **columns) ->
list[float | None]`` as :class:`trl.GRPOTrainer` calls it: ``completions``
are strings (standard format) or ``[{"role": "assistant", "content": ...}]``
lists (conversational format); every dataset column arrives as a keyword
list with one entry per completion. Rows a reward does not apply to (e.g. a
ranking reward on a memory-update prompt) get ``None``, which TRL turns into
NaN and leaves out of the weighted sum, so ranking and memory-update prompts can share
one batch. Instances carry a ``__name__`` so TRL logs each term separately
(``rewards/<name>/mean``).

Columns read (written by :mod:`experiments.train.walks`):
``mode`` (the answer format, a name in :mod:`policies.llm.formats`, whose
entry says which reward terms score it and how it is parsed; absent means
"fast"), ``candidate_ids`` (the
short ids shown in the prompt), ``target`` (position of the held-out
positive among the candidates, -1 if none), ``utilities`` (the simulator's
true utility of each candidate), ``user`` and ``items`` (dataset indices of
the user and candidates, for the simulated click and rating).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from policies.llm.formats import FAST, get_format, rewarded_by
from policies.llm.parsing import parse_ranking, parse_reflection
from starec_env.metrics import ndcg_graded

#: The paper's rank tiers: (last 1-based position of the tier, reward).
PAPER_TIERS: tuple[tuple[int, float], ...] = ((1, 1.0), (5, 0.5), (10, 0.0), (20, -0.5))
#: Reward when the positive is missing from the produced list.
ABSENT_REWARD = -1.0

Parser = Callable[[str, list[str]], Any]


def completion_text(completion: Any) -> str:
    """The generated text of one completion, whatever format TRL passes."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        parts = [m.get("content", "") for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        return "".join(p if isinstance(p, str) else str(p) for p in parts)
    raise TypeError(f"completion must be a string or a list of chat messages, got {type(completion).__name__}")


def tier_rewards(ranks: np.ndarray, tiers: Sequence[tuple[int, float]] = PAPER_TIERS, absent: float = ABSENT_REWARD) -> np.ndarray:
    """Vectorised rank-tier reward for 0-based ``ranks`` (negative = absent).

    Positions past the last tier keep the last tier's value: the item was
    ranked, just badly, which is still better than leaving it out.
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    out = np.full(ranks.shape, absent, dtype=np.float64)
    present = ranks >= 0
    out[present] = tiers[-1][1]
    for last, value in reversed(tiers):
        out[present & (ranks < last)] = value
    return out


def default_parser() -> Parser:
    """The project's ranking parser (imported lazily: it lives in the LLM layer)."""
    return parse_ranking


def emitted_order(parsed: Any) -> list[int]:
    """Candidate positions the model itself wrote, in its order.

    The parser repairs a ranking by appending candidates the model forgot;
    those do not count as ranked, so a target that only appears through a
    repair earns the "absent" reward, as in the paper.
    """
    return list(parsed.order)[: int(parsed.n_valid)]


def order_to_scores(order: Sequence[int], n_candidates: int) -> np.ndarray:
    """Scores (higher first) that reproduce ``order``; unranked candidates tie last."""
    scores = np.full(n_candidates, -float(n_candidates), dtype=np.float64)
    for rank, pos in enumerate(order):
        if 0 <= pos < n_candidates and scores[pos] == -float(n_candidates):
            scores[pos] = float(n_candidates - rank)
    return scores


class CompletionReward:
    """Base for rewards that parse each completion whose row ``mode`` (answer
    format) lists the reward's ``__name__`` among its rewards.

    Subclasses implement :meth:`score_row`. ``parse`` defaults to the
    project's parser (called with the format's ``expect_think``); tests and
    other parsers can inject their own.
    """

    __name__ = "completion_reward"

    def __init__(self, parse: Parser | None = None) -> None:
        self._parse = parse

    @property
    def parse(self) -> Parser:
        if self._parse is None:
            self._parse = default_parser()
        return self._parse

    def parse_row(self, text: str, ids: list[str], mode: str) -> Any:
        return self.parse(text, ids, expect_think=get_format(mode).expect_think)

    def __call__(self, prompts: list, completions: list, candidate_ids: list, mode: list | None = None, **columns: Any) -> list[float | None]:
        out: list[float | None] = []
        for i, completion in enumerate(completions):
            row_mode = FAST.name if mode is None else mode[i]
            if not rewarded_by(row_mode, self.__name__):
                out.append(None)
                continue
            ids = list(candidate_ids[i])
            parsed = self.parse_row(completion_text(completion), ids, row_mode)
            out.append(float(self.score_row(parsed, i, ids, columns)))
        return out

    def score_row(self, parsed: Any, i: int, ids: list[str], columns: dict) -> float:
        raise NotImplementedError


class RankTierReward(CompletionReward):
    """The paper's reward: +1 / +0.5 / 0 / -0.5 by the positive's position, -1 if absent."""

    __name__ = "rank_tier"

    def __init__(self, parse: Parser | None = None, tiers: Sequence[tuple[int, float]] = PAPER_TIERS, absent: float = ABSENT_REWARD) -> None:
        super().__init__(parse)
        self.tiers = tuple(tiers)
        self.absent = absent

    def score_row(self, parsed: Any, i: int, ids: list[str], columns: dict) -> float:
        target = int(columns["target"][i])
        if target < 0:
            raise ValueError(f"row {i}: rank_tier needs a target candidate (column 'target' >= 0), got {target}")
        order = emitted_order(parsed)
        rank = order.index(target) if target in order else -1
        return float(tier_rewards(np.array([rank]), self.tiers, self.absent)[0])


class NDCGReward(CompletionReward):
    """Continuous NDCG@k of the produced order against the true utilities.

    A dense signal: every swap of two candidates with different true
    utility changes it, which small models need when the tier reward is flat.
    """

    __name__ = "ndcg"

    def __init__(self, parse: Parser | None = None, k: int = 10) -> None:
        super().__init__(parse)
        self.k = k

    def score_row(self, parsed: Any, i: int, ids: list[str], columns: dict) -> float:
        util = np.asarray(columns["utilities"][i], dtype=np.float64)
        if util.shape != (len(ids),):
            raise ValueError(f"row {i}: 'utilities' has {util.size} values for {len(ids)} candidates")
        scores = order_to_scores(emitted_order(parsed), len(ids))
        return float(ndcg_graded(scores[None], util[None], self.k)[0])


class FormatReward(CompletionReward):
    """Parser format score (1 = clean output) minus a penalty for overlong text.

    Rankings are scored by the ranking parser, memory updates by the
    reflection parser. The length penalty grows linearly past ``budget``
    tokens and reaches ``penalty`` at twice the budget; it stops the policy
    from rambling, which costs generation time in every later simulation.
    """

    __name__ = "format"

    def __init__(self, parse: Parser | None = None, budget: int = 256, penalty: float = 0.5, parse_reflection: Callable[[str], Any] | None = None) -> None:
        super().__init__(parse)
        self.budget = max(1, int(budget))
        self.penalty = penalty
        self._parse_reflection = parse_reflection

    def parse_row(self, text: str, ids: list[str], mode: str) -> Any:
        if get_format(mode).parser == "ranking":
            return super().parse_row(text, ids, mode)
        if self._parse_reflection is None:
            self._parse_reflection = parse_reflection
        return self._parse_reflection(text)

    def __call__(self, prompts: list, completions: list, candidate_ids: list, mode: list | None = None, **columns: Any) -> list[float | None]:
        self._lengths = _completion_lengths(completions, columns.get("completion_ids"))
        return super().__call__(prompts, completions, candidate_ids, mode, **columns)

    def score_row(self, parsed: Any, i: int, ids: list[str], columns: dict) -> float:
        over = max(0, self._lengths[i] - self.budget) / self.budget
        return float(parsed.format_score) - self.penalty * min(1.0, over)


def _completion_lengths(completions: list, completion_ids: list | None) -> list[int]:
    """Token counts when TRL passes ``completion_ids``, else whitespace words."""
    if completion_ids is not None:
        return [len(ids) for ids in completion_ids]
    return [len(completion_text(c).split()) for c in completions]


Responder = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


class ClickRatingReward(CompletionReward):
    """The simulated user's click and rating on the slate the ranking would show.

    The top ``slate_size`` candidates of the produced order are shown to the
    simulated user through ``respond(users (B,), slates (B, S) item indices,
    rng) -> (clicked slate position (B,) or -1, rating (B,))``; the reward is
    ``rating / 5`` for a click, 0 otherwise (the environment's
    ``click_rating`` reward). Draws come from a generator seeded at
    construction, so a run is reproducible.
    """

    __name__ = "click_rating"

    def __init__(self, respond: Responder, parse: Parser | None = None, slate_size: int = 5, seed: int = 0) -> None:
        super().__init__(parse)
        self.respond = respond
        self.slate_size = slate_size
        self.rng = np.random.default_rng([seed, 0xFEED])

    def __call__(self, prompts: list, completions: list, candidate_ids: list, mode: list | None = None, **columns: Any) -> list[float | None]:
        self._slates: dict[int, np.ndarray] = {}
        partial = super().__call__(prompts, completions, candidate_ids, mode, **columns)
        rows = sorted(self._slates)
        if not rows:
            return partial
        users = np.array([int(columns["user"][i]) for i in rows], dtype=np.int64)
        slates = np.stack([self._slates[i] for i in rows])
        clicked, rating = self.respond(users, slates, self.rng)
        for j, i in enumerate(rows):
            partial[i] = float(rating[j]) / 5.0 if clicked[j] >= 0 else 0.0
        return partial

    def score_row(self, parsed: Any, i: int, ids: list[str], columns: dict) -> float:
        items = np.asarray(columns["items"][i], dtype=np.int64)
        scores = order_to_scores(emitted_order(parsed), len(ids))
        top = np.argsort(-scores, kind="stable")[: self.slate_size]
        self._slates[i] = items[top]
        return float("nan")  # filled in by __call__ once the whole batch has responded
