"""Reward shaping: the memory-update reward and weighted composition from config.

GRPO gets one callable per term plus a weight list (TRL sums them and logs
each term on its own).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from policies.llm.formats import rewarded_by
from policies.llm.parsing import parse_reflection
from reward.ranking import (
    ABSENT_REWARD,
    PAPER_TIERS,
    ClickRatingReward,
    FormatReward,
    NDCGReward,
    Parser,
    RankTierReward,
    Responder,
    completion_text,
    order_to_scores,
    tier_rewards,
)
from starec_env.configtools import config_from_dict
from starec_env.metrics import ndcg_graded, ndcg_single

#: ``(row indices, new preference descriptions, columns) -> orders`` over each row's follow-up candidates.
FollowupRanker = Callable[[list[int], list[str], dict], list[list[int]]]
#: ``(keys, descriptions, rewards)``: told how each rewritten description scored (e.g. to keep the best);
#: a key is the row's ``memory_key`` column (else its ``user``).
MemoryRecorder = Callable[[list[int], list[str], list[float]], None]


def default_reflection_parser() -> Callable[[str], Any]:
    return parse_reflection


#: How a follow-up ranking scores a rewritten memory: ``tier`` (the paper's
#: rank tiers of the item the user took), ``ndcg`` (graded NDCG against the
#: ``utilities`` column), ``choice`` (the expected NDCG@k of the user's next
#: choice, ``utilities`` holding the simulator's choice probabilities: a smooth
#: signal that every swap of likely items moves).
MEMORY_METRICS = ("tier", "ndcg", "choice")


class MemoryAlignmentReward:
    """The paper's memory-update reward for slow thinking.

    The description a completion in a format this term scores (the
    "reflect" format, :mod:`policies.llm.formats`) writes is used at once in a
    follow-up ranking of that row's next candidate list (the row's
    ``candidate_ids`` / ``target`` / ``utilities`` columns describe the
    follow-up); the ranking's score (:data:`MEMORY_METRICS`) scores the
    update. So a reflection is rewarded exactly when it makes the next
    decision better. ``rank`` is usually the policy being trained, ranking
    by its cheap scoring path.
    """

    __name__ = "memory"

    def __init__(
        self,
        rank: FollowupRanker,
        metric: str = "tier",
        k: int = 10,
        parse: Callable[[str], Any] | None = None,
        record: MemoryRecorder | None = None,
    ) -> None:
        if metric not in MEMORY_METRICS:
            raise ValueError(f"memory reward metric must be one of {MEMORY_METRICS}, got {metric!r}")
        self.rank = rank
        self.metric = metric
        self.k = k
        self._parse = parse
        self.record = record

    def __call__(self, prompts: list, completions: list, candidate_ids: list, mode: list | None = None, **columns: Any) -> list[float | None]:
        rows = [i for i in range(len(completions)) if mode is None or rewarded_by(mode[i], self.__name__)]
        out: list[float | None] = [None] * len(completions)
        if not rows:
            return out
        if self._parse is None:
            self._parse = default_reflection_parser()
        memories = [self._parse(completion_text(completions[i])).preference for i in rows]
        orders = self.rank(rows, memories, {**columns, "candidate_ids": candidate_ids})
        for i, order in zip(rows, orders):
            if self.metric == "tier":
                target = int(columns["target"][i])
                rank = list(order).index(target) if target in order else -1
                out[i] = float(tier_rewards(np.array([rank]))[0])
            elif self.metric == "choice":
                p = np.asarray(columns["utilities"][i], dtype=np.float64)
                ranks = np.empty(len(order), dtype=np.int64)
                ranks[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
                out[i] = float(np.dot(p / p.sum(), ndcg_single(ranks, self.k)))
            else:
                util = np.asarray(columns["utilities"][i], dtype=np.float64)
                out[i] = float(ndcg_graded(order_to_scores(order, len(util))[None], util[None], self.k)[0])
        if self.record is not None and ("memory_key" in columns or "user" in columns):
            keys = columns["memory_key"] if "memory_key" in columns else columns["user"]
            self.record([str(keys[i]) for i in rows], memories, [float(out[i]) for i in rows])
        return out


@dataclass
class RewardConfig:
    """Weights of each reward term (0 drops the term) and their settings."""

    rank_tier: float = 1.0
    ndcg: float = 0.5
    click_rating: float = 0.0
    format: float = 0.2
    memory: float = 1.0
    ndcg_k: int = 10
    length_budget: int = 256
    length_penalty: float = 0.5
    slate_size: int = 5
    memory_metric: str = "tier"

    def __post_init__(self) -> None:
        if self.memory_metric not in MEMORY_METRICS:
            raise ValueError(f"reward.memory_metric must be one of {MEMORY_METRICS}, got {self.memory_metric!r}")

    @classmethod
    def from_dict(cls, data: dict, where: str = "[reward]") -> "RewardConfig":
        return config_from_dict(cls, data, "reward", where)

    def to_dict(self) -> dict:
        return asdict(self)


def build_reward_funcs(
    cfg: RewardConfig,
    *,
    parse: Parser | None = None,
    followup_ranker: FollowupRanker | None = None,
    respond: Responder | None = None,
    record_memory: MemoryRecorder | None = None,
    seed: int = 0,
) -> tuple[list[Callable], list[float]]:
    """Reward callables and weights for ``GRPOTrainer(reward_funcs=..., args.reward_weights=...)``.

    Terms with weight 0 are left out. The click_rating term needs a simulator
    ``respond`` function and the memory term a ``followup_ranker``; asking for
    them without one is a configuration error, reported as such.
    """
    funcs: list[Callable] = []
    weights: list[float] = []

    def add(weight: float, make: Callable[[], Callable]) -> None:
        if weight:
            funcs.append(make())
            weights.append(float(weight))

    add(cfg.rank_tier, lambda: RankTierReward(parse, PAPER_TIERS, ABSENT_REWARD))
    add(cfg.ndcg, lambda: NDCGReward(parse, k=cfg.ndcg_k))
    if cfg.click_rating and respond is None:
        raise ValueError("reward.click_rating > 0 needs a simulator to answer the slates (respond=...)")
    add(cfg.click_rating, lambda: ClickRatingReward(respond, parse, slate_size=cfg.slate_size, seed=seed))
    add(cfg.format, lambda: FormatReward(parse, budget=cfg.length_budget, penalty=cfg.length_penalty))
    if cfg.memory and followup_ranker is None:
        raise ValueError("reward.memory > 0 needs a follow-up ranker for the rewritten descriptions")
    add(cfg.memory, lambda: MemoryAlignmentReward(followup_ranker, metric=cfg.memory_metric, k=cfg.ndcg_k, record=record_memory))
    if not funcs:
        raise ValueError("every reward weight is 0: nothing to train on")
    return funcs, weights

