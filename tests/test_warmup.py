"""Memory warm-up: walk order and leakage, the memory cache, the memory log, and
the no-reflection ablation (tiny model or a scripted backend; fp32)."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from policies.base import PolicyContext  # noqa: E402
from policies.llm.agents import LLMAgent, LLMAgentConfig  # noqa: E402
from policies.llm.warmup import MemoryCache, WarmupConfig, plan_walk  # noqa: E402
from policies.registry import make_policy  # noqa: E402
from starec_env.data import load_dataset  # noqa: E402
from starec_env.protocol import LeaveOneOut  # noqa: E402

OPTIONS = {"model": "tiny", "precision": "fp32", "batch_size": 4, "judge": {"history": 2},
           "warmup": {"steps": 2, "candidates": 4, "max_new_tokens": 8}, "prompt": {"max_words": 20}}


@pytest.fixture(scope="module")
def world():
    ds = load_dataset("synthetic", seed=0, n_users=60, n_items=80)
    return ds, LeaveOneOut(ds, n_negatives=5, n_users=8, seed=0)


def test_walk_is_the_last_items_before_the_target_and_never_shows_it(world):
    ds, protocol = world
    cfg = WarmupConfig(steps=3, candidates=6)
    for row, user in enumerate(protocol.users):
        walk = plan_walk(ds, int(user), protocol.batch.history[row], protocol.batch.history_ratings[row], cfg, seed=4)
        hist = protocol.batch.history[row][protocol.batch.history[row] >= 0]
        assert list(walk.items) == list(hist[-3:])  # the last k items before the target, in time order
        lo, hi = ds.user_offsets[user], ds.user_offsets[user + 1]
        target_row = protocol.target_rows[row]
        later = set(ds.item_arr[target_row:hi])  # the held-out item and everything after it
        for step, (cands, pos) in enumerate(zip(walk.candidates, walk.chosen)):
            assert cands[pos] == walk.items[step] and len(cands) == 6
            shown = set(cands) | set(walk.histories[step])
            assert not shown & later
            assert list(walk.histories[step]) == list(hist[: len(hist) - 3 + step])
            negatives = set(cands) - {cands[pos]}
            assert not negatives & set(ds.item_arr[lo:hi])  # negatives: items the user never touched
        again = plan_walk(ds, int(user), protocol.batch.history[row], protocol.batch.history_ratings[row], cfg, seed=4)
        assert again.key == walk.key and all(np.array_equal(a, b) for a, b in zip(again.candidates, walk.candidates))


class NoteBackend:
    """Scripted model: reflections write a note naming a genre; the judge
    scores a candidate 1 when its line carries the genre the note names, so
    the memory text decides the ranking."""

    device = "cpu"

    def __init__(self, tiny) -> None:
        self.tokenizer = tiny.tokenizer
        self.generated = 0

    def generate_scored(self, chats, options, *, mode, **kwargs):
        self.generated += len(chats)
        return ["<think>ok</think><preference>Likes horror.</preference>"] * len(chats), None

    def score_slots(self, prompts, answer_ids, **kwargs):
        out = []
        for p in prompts:
            text = self.tokenizer.decode(p.ids)
            likes_horror = "Taste: Likes horror." in text
            lines = [self.tokenizer.decode(p.ids[: s + 1]).rsplit("\n", 1)[-1] for s in p.slots]
            out.append(np.array([float(likes_horror and "Horror" in line) for line in lines]))
        return out

    def stats(self, agent=None) -> dict:
        return {}


def make_agent(ds, tiny, *, reflect: bool, append: bool, memory_dir=None, options=OPTIONS) -> LLMAgent:
    opts = dict(options, memory_dir=str(memory_dir) if memory_dir else None)
    agent = LLMAgent(PolicyContext(ds, seed=0, options=opts), LLMAgentConfig.from_options(opts), ranking="judge",
                     reflect=reflect, append_history=append, backend=NoteBackend(tiny))
    agent.name = "scripted"
    return agent


def test_reflection_changes_the_ranking_and_the_ablation_differs(world, tiny_backend, tmp_path):
    ds, protocol = world
    starec = make_agent(ds, tiny_backend, reflect=True, append=False, memory_dir=tmp_path)
    noreflect = make_agent(ds, tiny_backend, reflect=False, append=True)
    for agent in (starec, noreflect):
        agent.fit(protocol.split)
    with_memory = starec.score(protocol.batch)
    without = noreflect.score(protocol.batch)
    assert not np.array_equal(with_memory, without)
    assert without.max() == 0  # no note: the scripted judge sees no taste
    assert starec.stats()["warmed_users"] == len(protocol) and starec.stats()["reflections"] == 2 * len(protocol)
    assert noreflect.backend.generated == 0  # the ablation never reflects
    # the memory log: one JSON line per user, the memory after every step
    lines = [json.loads(line) for line in next(tmp_path.glob("memories-*.jsonl")).read_text().splitlines()]
    assert len(lines) == len(protocol) and {e["user"] for e in lines} == set(map(int, protocol.users))
    for entry in lines:
        assert len(entry["steps"]) == 2 and entry["memory"] == entry["steps"][-1]["memory"] == "Likes horror."
        assert all(1 <= s["chosen_rank"] <= 4 and s["item"] in entry["walk"] for s in entry["steps"])
    assert json.loads(next(tmp_path.glob("memories-*.json")).read_text())["warmup"]["steps"] == 2


def test_memory_cache_reuses_and_invalidates(world, tiny_backend, tmp_path):
    ds, protocol = world
    first = make_agent(ds, tiny_backend, reflect=True, append=False, memory_dir=tmp_path)
    first.fit(protocol.split)
    first.score(protocol.batch)
    assert first.backend.generated == 2 * len(protocol)
    # a repeated evaluation (a new agent, same checkpoint and settings) regenerates nothing
    again = make_agent(ds, tiny_backend, reflect=True, append=False, memory_dir=tmp_path)
    again.fit(protocol.split)
    scores = again.score(protocol.batch)
    assert again.backend.generated == 0 and again.stats()["warm_cache_hits"] == len(protocol)
    np.testing.assert_array_equal(scores, first.score(protocol.batch))
    # another k: new walks, new memories
    other_k = make_agent(ds, tiny_backend, reflect=True, append=False, memory_dir=tmp_path,
                         options=dict(OPTIONS, warmup={"steps": 1, "candidates": 4, "max_new_tokens": 8}))
    other_k.fit(protocol.split)
    other_k.score(protocol.batch)
    assert other_k.backend.generated == len(protocol)
    assert len(list(tmp_path.glob("memories-*.jsonl"))) == 2


def test_cache_key_follows_the_checkpoint(tmp_path, tiny_backend):
    from policies.llm.models import load_model
    from policies.llm.warmup import cache_settings

    model, tok = load_model("tiny", threads=1, seed=0)
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    cfg = WarmupConfig()
    key = MemoryCache(tmp_path, cache_settings(str(folder), 0, cfg, 0, {})).key
    assert MemoryCache(tmp_path, cache_settings(str(folder), 0, cfg, 0, {})).key == key
    model.save_pretrained(folder)  # retrained in place: new weights file
    assert MemoryCache(tmp_path, cache_settings(str(folder), 0, cfg, 0, {})).key != key
    assert MemoryCache(tmp_path, cache_settings(str(folder), 0, cfg, 1, {})).key != key  # another walk seed


def test_torn_log_line_is_ignored(tmp_path):
    cache = MemoryCache(tmp_path, {"x": 1})
    cache.path.write_text('{"walk_key": "1:2", "user": 1, "memory": "Likes war."}\n{"walk_key": "3:')
    assert len(MemoryCache(tmp_path, {"x": 1})) == 1


def test_tiny_model_warm_up_end_to_end(world, tiny_backend):
    """The real code path on the tiny model: walks, reflections, ranking; deterministic."""
    ds, protocol = world
    runs = []
    for _ in range(2):
        policy = make_policy("starec", PolicyContext(ds, seed=0, options=OPTIONS))
        policy.fit(protocol.split)
        runs.append(policy.score(protocol.batch))
        stats = policy.stats()
        assert stats["warmed_users"] == len(protocol) and stats["warm_reflect_calls"] == 2 * len(protocol)
        assert stats["judge_calls"] == len(protocol) and stats["warm_judge_calls"] == 2 * len(protocol)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_note_value_benchmark_reads_oracle_grounded_and_evidence_notes():
    """benchmarks.bench_note_value: one row per walk length and note kind, on the
    same held-out users; the grounded note names only what the walk showed; the
    evidence note is read over the global fusion of the evidence signals, which
    a fitted reader can always fall back to (zero per-user weights)."""
    from benchmarks.bench_note_value import grounded_note, note_value
    from experiments.config import load_run_config

    assert grounded_note([["drama", "witty"], ["horror"], ["comedy"]], [5.0, 1.0, 3.0]) == "Likes drama, witty; dislikes horror"
    assert grounded_note([["drama"]], [3.0]) == ""
    rows = note_value(load_run_config(preset="smoke"), users=40, steps=[1, 2])
    assert [(r["steps"], r["note"]) for r in rows] == [(k, n) for k in (1, 2) for n in ("oracle", "grounded", "evidence")]
    assert {(r["first_stage"], r["base"]) for r in rows if r["note"] != "evidence"} == {("genre", rows[0]["base"])}
    assert len({(r["first_stage"], r["base"]) for r in rows if r["note"] == "evidence"}) == 1
    assert all(0.0 <= r["with_note"] <= 100.0 for r in rows)
    assert all(len(r["weights"]) == 3 for r in rows if r["note"] == "evidence")
