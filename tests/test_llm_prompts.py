"""Prompt rendering (golden files), candidate ids and evidence lines.

Golden files live in tests/golden/; after an intended wording change,
regenerate them with ``STAREC_UPDATE_GOLDEN=1 python -m pytest tests/test_llm_prompts.py``
and review the diff.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from policies.base import PolicyContext
from policies.llm.evidence import EvidenceBuilder, EvidenceConfig, candidate_ranks, level_of
from policies.llm.prompts import (
    PromptConfig,
    candidate_ids,
    compact_evidence,
    render_llmrank_prompt,
    render_rank_prompt,
    render_reflect_prompt,
    render_rethink_prompt,
)
from starec_env.data.model import build_dataset
from starec_env.text import AgentTextView
from starec_env.types import PAD, RankingBatch

GOLDEN = Path(__file__).with_name("golden")


def make_view(n_candidates: int = 5) -> AgentTextView:
    pool = [
        ("Alien", ("Horror", "Sci-Fi"), 1979),
        ("Babe", ("Comedy", "Children's"), 1995),
        ("Casablanca", ("Drama", "Romance"), 1942),
        ("Die Hard", ("Action", "Thriller"), 1988),
        ("Emma", ("Comedy", "Romance"), 1996),
        ("Fargo", ("Crime", "Drama"), 1996),
        ("Up", (), 0),
    ]
    return AgentTextView(
        user=41,
        profile={"user_id": "42", "age": 31, "gender": "F", "occupation": "librarian"},
        history=[
            ("Toy Story", ("Animation", "Comedy"), 1995, 5.0),
            ("Heat", ("Action", "Crime"), 1995, 2.0),
            ("Sense and Sensibility", ("Drama", "Romance"), 1995, 4.0),
            ("Scream", ("Horror",), 1996, 1.0),
        ],
        candidates=pool[:n_candidates],
        candidate_descriptions=[f"A film called {t}." for t, _g, _y in pool[:n_candidates]],
    )


EVIDENCE = [f"popularity #{i + 1} (high)" for i in range(5)]
#: Lines in the exact form evidence.j2 writes them.
REAL_EVIDENCE = [
    "popularity #1 (high), genre match #3 (medium), similarity to history #2 (high)",
    "popularity #2 (high), genre match none, similarity to history none",
    "popularity #5 (low), genre match #1 (high), similarity to history #5 (low)",
    "popularity #3 (medium), genre match #2 (high), similarity to history #4 (medium)",
    "popularity #4 (medium), genre match #4 (medium), similarity to history #1 (high)",
]


def _golden(name: str, messages: list[dict]) -> None:
    text = "".join(f"<<{m['role']}>>\n{m['content']}\n" for m in messages)
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("STAREC_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with STAREC_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"{name} prompt changed; review and regenerate {path}"


def test_rank_prompts_match_golden_files():
    view = make_view()
    _golden("rank_fast", render_rank_prompt(view, "Likes comedies.", mode="fast"))
    _golden("rank_fast_evidence", render_rank_prompt(view, "Likes comedies.", mode="fast", evidence=REAL_EVIDENCE))
    _golden("rank_fast_full", render_rank_prompt(view, "Likes comedies.", mode="fast", config=PromptConfig(fast_layout="full")))
    _golden("rank_think_evidence", render_rank_prompt(view, "Likes comedies.", mode="think", evidence=EVIDENCE))
    _golden("llmrank", render_llmrank_prompt(view))
    _golden("reflect", render_reflect_prompt(view, "Likes comedies.", predicted=[3, 0, 1, 2, 4], chosen=1, rating=5))
    _golden("reflect_no_click", render_reflect_prompt(view, None, predicted=[0, 1], chosen=None))
    _golden(
        "rethink",
        render_rethink_prompt(
            ["missing_reasoning", "missing_ranking", "no_preference_keywords", "low_ndcg"],
            n_candidates=5,
            missing=["B", "E"],
            target_id="B",
            target_rank=4,
        ),
    )


def test_rank_prompt_structure():
    view = make_view()
    fast = render_rank_prompt(view, None, mode="fast")
    assert [m["role"] for m in fast] == ["system", "user"]
    user = fast[1]["content"]
    for cid, (title, _g, _y) in zip(candidate_ids(5), view.candidates):
        assert f"[{cid}] {title}" in user
    assert "<think>" not in user and "Ranking:" in fast[0]["content"]
    assert "(none yet)" in user and "user_id" not in user  # ids are not demographics
    slow = render_rank_prompt(view, "Likes comedies.", mode="think", evidence=EVIDENCE)[1]["content"]
    assert "<think>" in slow and "Likes comedies." in slow and slow.count("evidence:") == 5
    # A memory object with a .preference attribute works like a string.
    memory = type("Memory", (), {"preference": "Likes comedies."})()
    assert render_rank_prompt(view, memory, mode="think", evidence=EVIDENCE)[1]["content"] == slow


def test_fast_prompt_is_compact_and_configurable():
    view = make_view()
    slow = render_rank_prompt(view, None, mode="think", evidence=REAL_EVIDENCE)[1]["content"]
    compact = render_rank_prompt(view, None, mode="fast", evidence=REAL_EVIDENCE)[1]["content"]
    assert len(compact) < 0.6 * len(slow)
    assert "[B] Babe | Comedy, Children's | pop2 genre- sim-" in compact and "(1995)" not in compact
    # fast prompts show the last min(fast_history, max_history) items; slow ones max_history
    short = PromptConfig(fast_history=2)
    assert "Toy Story" not in render_rank_prompt(view, None, config=short)[1]["content"]
    assert "Toy Story" in render_rank_prompt(view, None, mode="think", config=short)[1]["content"]
    assert "Heat" not in render_rank_prompt(view, None, config=PromptConfig(max_history=2, fast_history=9))[1]["content"]
    # compact candidates never carry descriptions; the full layout is the slow prompt's
    assert "about:" not in render_rank_prompt(view, None, config=PromptConfig(descriptions=True))[1]["content"]
    full = render_rank_prompt(view, None, mode="fast", evidence=REAL_EVIDENCE, config=PromptConfig(fast_layout="full"))
    assert "evidence: popularity #2 (high), genre match none" in full[1]["content"]
    # every user's compact prompt starts with the same system message (shared KV prefix)
    other = dataclasses.replace(view, profile={"age": 60}, history=[])
    assert render_rank_prompt(other, "x", evidence=REAL_EVIDENCE)[0] == render_rank_prompt(view, None, evidence=REAL_EVIDENCE)[0]
    with pytest.raises(ValueError, match="fast_layout"):
        PromptConfig.from_dict({"fast_layout": "tiny"})
    with pytest.raises(ValueError, match="fast_history"):
        PromptConfig(fast_history=-1)


def test_compact_evidence_keeps_every_rank():
    assert compact_evidence(REAL_EVIDENCE[0]) == "pop1 genre3 sim2"
    assert compact_evidence(REAL_EVIDENCE[1]) == "pop2 genre- sim-"
    assert compact_evidence("popularity #12 (low)") == "pop12"
    assert compact_evidence("something else, popularity #3 (high)") == "something else pop3"  # unknown parts kept
    assert compact_evidence("") == ""


def test_candidate_descriptions_are_optional():
    view = make_view()
    assert "about:" not in render_rank_prompt(view, None)[1]["content"]
    text = render_rank_prompt(view, None, mode="think", config=PromptConfig(descriptions=True))[1]["content"]
    assert "[B] Babe (1995) | Comedy, Children's\n    about: A film called Babe." in text


def test_zero_shot_prompt_has_no_memory_or_profile():
    text = render_llmrank_prompt(make_view())[1]["content"]
    assert "librarian" not in text and "preference" not in text and "evidence" not in text
    assert "[A] Alien (1979)" in text


def test_history_is_bounded_most_recent_kept():
    view = make_view()
    text = render_rank_prompt(view, None, mode="think", config=PromptConfig(max_history=2))[1]["content"]
    assert "Toy Story" not in text and "Heat" not in text and "Scream" in text
    text = render_rank_prompt(view, None, config=PromptConfig(max_history=0))[1]["content"]
    assert "(no movies yet)" in text


def test_bad_arguments_give_clear_errors():
    view = make_view()
    with pytest.raises(ValueError, match="mode"):
        render_rank_prompt(view, None, mode="medium")
    with pytest.raises(ValueError, match="evidence has 2 lines"):
        render_rank_prompt(view, None, evidence=["a", "b"])
    with pytest.raises(ValueError, match="candidate indices"):
        render_reflect_prompt(view, None, predicted=[0, 9], chosen=1)
    with pytest.raises(ValueError, match="unknown prompt option"):
        PromptConfig.from_dict({"max_histroy": 3})
    assert PromptConfig.from_dict({"max_history": 3, "noun": "album"}).noun == "album"


def test_candidate_ids_unique_single_token_for_20():
    assert candidate_ids(20) == list("ABCDEFGHIJKLMNOPQRST")
    ids = candidate_ids(300)
    assert len(set(ids)) == 300 and ids[26] == "A1" and all(i.isalnum() for i in ids)
    with pytest.raises(ValueError):
        candidate_ids(-1)


# ------------------------------------------------------------------ evidence
def tiny_dataset():
    """Items 0-2 comedies, 3-5 horror; users 0-3 love comedies, 4-5 horror; item 0 most popular."""
    genres = [("Comedy",)] * 3 + [("Horror",)] * 3
    items = pd.DataFrame({"item_id": [str(i) for i in range(6)], "title": [f"M{i}" for i in range(6)], "genres": genres, "year": 2000})
    rows = []
    for u in range(6):
        liked = [0, 1, 2] if u < 4 else [3, 4, 5]
        for t, i in enumerate(liked[: 2 + (u % 2)]):
            rows.append((str(u), str(i), 5.0, t))
        rows.append((str(u), "0", 4.0, 9))
    rows = list({(r[0], r[1]): r for r in rows}.values())
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return build_dataset("tiny", items, pd.DataFrame({"user_id": [str(u) for u in range(6)]}), inter)


def test_evidence_lines_from_rule_based_agents():
    pytest.importorskip("policies.rule_based", reason="rule-based agents (BENCH engineer) not available")
    ds = tiny_dataset()
    batch = RankingBatch(
        users=np.array([0, 4]),
        candidates=np.array([[1, 3, 0], [1, 3, 0]]),
        history=np.array([[PAD, 1, 2], [PAD, PAD, PAD]]),
        history_ratings=np.array([[0, 5, 5], [0, 0, 0]], dtype=np.float32),
    )
    builder = EvidenceBuilder(PolicyContext(ds, seed=0))
    lines = builder.lines(batch)
    assert len(lines) == 2 and all(len(row) == 3 for row in lines)
    # Comedy fan: the comedy candidates match (popularity breaks their tie), horror has no genre match.
    table = builder.table(batch)
    assert table.ranks["genre"][0].tolist() == [2, 0, 1]
    assert lines[0][1].startswith("popularity #") and "genre match none" in lines[0][1]
    assert "genre match #1 (high)" in lines[0][2]
    # Item 0 is the most popular item; an empty history gives no genre / kNN signal.
    assert lines[1][2] == "popularity #1 (high), genre match none, similarity to history none"
    assert EvidenceBuilder(PolicyContext(ds), EvidenceConfig(enabled=False)).lines(batch) is None
    only_pop = EvidenceBuilder(PolicyContext(ds), EvidenceConfig.from_dict({"signals": ["pop"]})).lines(batch)
    assert "genre" not in only_pop[0][0]


def test_evidence_ranks_and_config():
    ranks = candidate_ranks(np.array([[0.5, 0.9, 0.5, 0.0, -0.3]]))
    assert ranks.tolist() == [[2, 1, 2, 0, 5]]
    assert [level_of(r, 6) for r in (0, 1, 2, 3, 4, 5)] == ["none", "high", "high", "medium", "medium", "low"]
    with pytest.raises(ValueError, match="unknown evidence signal"):
        EvidenceConfig(signals=("pop", "bm25"))
    with pytest.raises(ValueError, match="unknown evidence option"):
        EvidenceConfig.from_dict({"enable": True})
