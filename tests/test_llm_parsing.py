"""The ranking/reflection parsers: a corpus of realistic malformed outputs
(tests/corpus/malformed_rankings.jsonl) and hypothesis fuzzing (never raises,
always a full permutation, repairs counted exactly)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.llm.parsing import bound_text, parse_ranking, parse_reflection, split_think
from policies.llm.prompts import candidate_ids

CORPUS = [json.loads(line) for line in (Path(__file__).parent / "corpus" / "malformed_rankings.jsonl").open(encoding="utf-8")]
TITLES = ["Alien", "Babe", "Casablanca", "Die Hard", "Emma"]
REPAIR_KEYS = ("missing", "duplicate", "hallucinated", "title_matched")


def _check_invariants(parsed, n: int) -> None:
    assert sorted(parsed.order) == list(range(n))
    assert 0.0 <= parsed.format_score <= 1.0
    assert parsed.repairs["missing"] == n - parsed.n_valid
    assert all(parsed.repairs[k] >= 0 for k in REPAIR_KEYS)
    scores = parsed.scores()
    assert list(np.argsort(-scores, kind="stable")) == parsed.order


@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
def test_corpus_of_malformed_outputs(case):
    n = case["n_candidates"]
    parsed = parse_ranking(case["text"], candidate_ids(n), titles=TITLES, expect_think=case["has_think"])
    _check_invariants(parsed, n)
    prefix = case["valid_prefix"]
    assert parsed.order[: len(prefix)] == prefix and parsed.n_valid == len(prefix)
    expected = {k: 0 for k in REPAIR_KEYS} | {"missing": n - len(prefix)} | case["repairs"]
    assert parsed.repairs == expected
    assert parsed.source == case["source"]
    assert bool(parsed.think) == case["has_think"]
    clean = len(prefix) == n and not case["repairs"] and case["source"] in ("ranking_line", "list")
    think_ok = split_think(case["text"])[2] == 1.0 if case["has_think"] else True
    assert (parsed.format_score == 1.0) == (clean and think_ok)


def test_format_score_orders_quality():
    ids = candidate_ids(5)
    perfect = parse_ranking("<think>likes comedy</think>\nRanking: C > A > B > E > D", ids, expect_think=True)
    no_think = parse_ranking("Ranking: C > A > B > E > D", ids, expect_think=True)
    partial = parse_ranking("Ranking: C > A > B", ids)
    bare = parse_ranking("C A B E D", ids)
    nothing = parse_ranking("no idea", ids)
    assert perfect.format_score == 1.0
    assert 1.0 > no_think.format_score == 0.5
    assert partial.format_score == pytest.approx(0.6)
    assert bare.format_score == 0.5
    assert nothing.format_score == 0.0


def test_reasons_are_kept_per_candidate():
    parsed = parse_ranking("<think>x</think>\n1. [B] - a comedy, their favourite\n2. [A]: horror\n3. [C]", candidate_ids(3))
    assert parsed.reasons == {1: "a comedy, their favourite", 0: "horror"}


def test_missing_are_appended_by_fallback_scores_then_candidate_order():
    ids = candidate_ids(6)
    by_scores = parse_ranking("Ranking: D > B", ids, fallback_scores=[0.1, 0.0, 0.9, 0.0, 0.5, float("nan")])
    assert by_scores.order == [3, 1, 2, 4, 0, 5]
    assert parse_ranking("Ranking: D > B", ids).order == [3, 1, 0, 2, 4, 5]
    # A fallback of the wrong length is ignored rather than trusted.
    assert parse_ranking("Ranking: D > B", ids, fallback_scores=[1.0]).order == [3, 1, 0, 2, 4, 5]


def test_ids_beyond_26_candidates():
    ids = candidate_ids(30)
    parsed = parse_ranking("Ranking: D1 > A > A1 > Z", ids)
    assert parsed.order[:4] == [29, 0, 26, 25] and parsed.n_valid == 4


def test_split_think_variants():
    assert split_think("<think>a</think>b") == ("a", "b", 1.0)
    assert split_think("a</think>b") == ("a", "b", 0.5)
    assert split_think("<think>a") == ("a", "", 0.5)
    assert split_think("<think></think>b") == ("", "b", 0.5)
    assert split_think("plain") == ("", "plain", 0.0)


FRAGMENTS = st.sampled_from(
    ["<think>", "</think>", "Ranking:", "ranking：", "[A]", "[Z9]", "B", " > ", "1. ", "2) ", "- ", "\n", ",", "Babe",
     "<preference>", "</preference>", "Preference:", "I ", "**", "→", "[", "]"]
)
ANY_TEXT = st.lists(st.one_of(st.text(max_size=20), FRAGMENTS), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=ANY_TEXT, n=st.integers(0, 30), expect_think=st.booleans())
def test_parse_ranking_never_raises(text, n, expect_think):
    parsed = parse_ranking(text, candidate_ids(n), titles=TITLES[: min(n, 5)], expect_think=expect_think)
    _check_invariants(parsed, n)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(1, 26))
def test_repairs_are_counted_exactly(data, n):
    ids = candidate_ids(n)
    fake = [c for c in candidate_ids(26 * 3)[n:] if c not in ids][:10]
    tokens = data.draw(st.lists(st.sampled_from(ids + fake), max_size=2 * n + 5))
    sep = data.draw(st.sampled_from([" > ", ", ", " ; ", " -> "]))
    parsed = parse_ranking("Ranking: " + sep.join(tokens), ids)
    _check_invariants(parsed, n)
    valid = [t for t in tokens if t in ids]
    unique = list(dict.fromkeys(valid))
    assert parsed.order[: len(unique)] == [ids.index(t) for t in unique]
    assert parsed.repairs["duplicate"] == len(valid) - len(unique)
    assert parsed.repairs["hallucinated"] == len(tokens) - len(valid)
    assert parsed.repairs["missing"] == n - len(unique)


@settings(max_examples=200, deadline=None)
@given(text=ANY_TEXT, max_chars=st.integers(1, 200), fallback=st.text(max_size=300))
def test_parse_reflection_never_raises_and_is_bounded(text, max_chars, fallback):
    parsed = parse_reflection(text, max_chars=max_chars, fallback=fallback)
    assert len(parsed.preference) <= max_chars
    assert 0.0 <= parsed.format_score <= 1.0
    assert "<preference>" not in parsed.preference.lower()


def test_parse_reflection_sources():
    good = parse_reflection("<think>I missed comedy.</think>\n<preference>Likes comedy; avoids horror.</preference>")
    assert (good.preference, good.think, good.source, good.format_score) == ("Likes comedy; avoids horror.", "I missed comedy.", "tag", 1.0)
    unclosed = parse_reflection("<think>x</think><preference>Likes drama and")
    assert unclosed.source == "open_tag" and unclosed.preference == "Likes drama and" and unclosed.format_score == 0.6
    untagged = parse_reflection("<think>x</think>\nPreference: likes westerns.")
    assert untagged.source == "after_think" and untagged.preference == "likes westerns."
    no_think_tag = parse_reflection("<preference>Likes noir.</preference>")
    assert no_think_tag.preference == "Likes noir." and no_think_tag.format_score == 0.5
    empty = parse_reflection("<think>hmm</think>", fallback="Old description.")
    assert (empty.preference, empty.source, empty.format_score) == ("Old description.", "fallback", 0.0)


def test_bound_text_cuts_at_sentence_or_word():
    assert bound_text("Likes comedy. Hates horror a lot.", 20) == ("Likes comedy.", True)
    assert bound_text("one two three four", 10) == ("one two", True)
    assert bound_text("  a   b ", 10) == ("a b", False)
    long = parse_reflection("<think>x</think><preference>" + "word " * 500 + "</preference>", max_chars=100)
    assert long.truncated and len(long.preference) <= 100 and long.format_score == pytest.approx(0.8)
