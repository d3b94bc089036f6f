"""Reward functions on hand-made completions, in TRL's calling convention."""
from __future__ import annotations

import math

import numpy as np
import pytest

from reward.ranking import (
    ClickRatingReward,
    FormatReward,
    NDCGReward,
    RankTierReward,
    completion_text,
    tier_rewards,
)
from reward.shaping import MemoryAlignmentReward, RewardConfig, build_reward_funcs

IDS = [chr(65 + i) for i in range(20)]  # "A".."T", as policies.llm.prompts.candidate_ids(20)


def conv(text: str) -> list[dict]:
    """A completion as TRL passes it for conversational datasets."""
    return [{"role": "assistant", "content": text}]


def ranking(*ids: str) -> str:
    return "Ranking: " + " > ".join(ids)


def full_ranking(first: list[str]) -> str:
    return ranking(*first, *[i for i in IDS if i not in first])


def test_tier_table_matches_the_paper():
    ranks = np.array([0, 1, 4, 5, 9, 10, 19, -1])
    assert tier_rewards(ranks).tolist() == [1.0, 0.5, 0.5, 0.0, 0.0, -0.5, -0.5, -1.0]


def test_rank_tier_on_completions_by_position_of_target():
    target = 2  # "C"
    texts = [
        full_ranking(["C"]),  # 1st
        full_ranking(["A", "B", "D", "C"]),  # 4th
        full_ranking(["A", "B", "D", "E", "F", "G", "C"]),  # 7th
        ranking(*[i for i in IDS if i != "C"], "C"),  # 20th
        ranking("A", "B"),  # C absent: the parser's repair must not count
    ]
    comps = [conv(t) for t in texts]
    got = RankTierReward()(prompts=[[]] * 5, completions=comps, candidate_ids=[IDS] * 5, target=[target] * 5)
    assert got == [1.0, 0.5, 0.0, -0.5, -1.0]


def test_ndcg_reward_orders_completions_by_quality():
    util = np.linspace(1.0, -1.0, 20).tolist()  # A best ... T worst
    good, bad = ranking(*IDS), ranking(*IDS[::-1])
    got = NDCGReward(k=10)([[]] * 2, [good, bad], candidate_ids=[IDS] * 2, utilities=[util] * 2)
    assert got[0] == pytest.approx(1.0)
    assert 0.0 <= got[1] < 0.3


def test_rewards_skip_rows_of_the_other_mode():
    modes = ["fast", "reflect"]
    got = RankTierReward()([[]] * 2, ["Ranking: A", "x"], candidate_ids=[IDS] * 2, target=[0, 0], mode=modes)
    assert got == [1.0, None]


def test_format_reward_prefers_clean_and_short_answers():
    f = FormatReward(budget=40, penalty=0.5)
    clean = ranking(*IDS)
    rambling = clean + " because" * 60
    messy = "I think A then B, maybe A again"
    got = f([[]] * 3, [clean, rambling, messy], candidate_ids=[IDS] * 3)
    assert got[0] == pytest.approx(1.0)
    assert got[1] == pytest.approx(0.5)  # same parse, full length penalty
    assert got[2] < 0.2
    # TRL's completion_ids (token counts) take precedence over word counts
    got_ids = f([[]], [clean], candidate_ids=[IDS], completion_ids=[[0] * 80])
    assert got_ids[0] == pytest.approx(0.5)


def test_click_rating_reward_uses_the_top_of_the_produced_order():
    seen = {}

    def respond(users, slates, rng):
        seen["slates"] = slates.copy()
        clicked = np.where(slates[:, 0] == 100, 0, -1)  # clicks only when item 100 leads the slate
        return clicked, np.full(len(users), 4.0)

    items = list(range(100, 120))
    f = ClickRatingReward(respond, slate_size=3, seed=0)
    got = f([[]] * 2, [ranking("A", "B", "C"), ranking("B", "A")], candidate_ids=[IDS] * 2, user=[0, 1], items=[items] * 2)
    assert got == [pytest.approx(0.8), 0.0]
    assert seen["slates"].tolist() == [[100, 101, 102], [101, 100, 102]]


def test_memory_reward_scores_the_follow_up_ranking():
    calls = {}

    def rank(rows, memories, columns):
        calls["memories"] = memories
        # puts the target first if the memory mentions "comedy", else leaves it out
        return [[0, 1, 2] if "comedy" in m else [1, 2] for m in memories]

    r = MemoryAlignmentReward(rank, metric="tier")
    comps = [
        "<think>missed it</think><preference>Loves comedy and drama.</preference>",
        "<think>hmm</think><preference>Likes thrillers.</preference>",
        "Ranking: A",
    ]
    got = r([[]] * 3, comps, candidate_ids=[IDS[:3]] * 3, target=[0, 0, 0], mode=["reflect", "reflect", "fast"])
    assert got == [1.0, -1.0, None]
    assert calls["memories"] == ["Loves comedy and drama.", "Likes thrillers."]


def test_build_weighted_terms():
    cfg = RewardConfig(rank_tier=1.0, ndcg=0.5, format=0.0, memory=0.0, click_rating=0.0)
    funcs, weights = build_reward_funcs(cfg)
    assert [f.__name__ for f in funcs] == ["rank_tier", "ndcg"] and weights == [1.0, 0.5]
    util = np.linspace(1.0, -1.0, 20).tolist()
    terms = [f([[]], [conv(ranking(*IDS))], candidate_ids=[IDS], target=[0], utilities=[util]) for f in funcs]
    assert terms == [[1.0], [pytest.approx(1.0)]]


def test_configuration_errors_are_clear():
    with pytest.raises(ValueError, match="follow-up ranker"):
        build_reward_funcs(RewardConfig(memory=1.0))
    with pytest.raises(ValueError, match="simulator"):
        build_reward_funcs(RewardConfig(click_rating=1.0, memory=0.0))
    with pytest.raises(ValueError, match="unknown reward option"):
        RewardConfig.from_dict({"rank_teir": 1.0})
    with pytest.raises(ValueError, match="target"):
        RankTierReward()([[]], ["Ranking: A"], candidate_ids=[IDS], target=[-1])


def test_completion_text_formats():
    assert completion_text("x") == "x"
    assert completion_text(conv("y")) == "y"
    with pytest.raises(TypeError):
        completion_text(3)
    assert not math.isnan(RankTierReward()([[]], [conv("garbage")], candidate_ids=[IDS], target=[0])[0])
