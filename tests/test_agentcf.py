"""AgentCF baseline: collaborative reflection of user and item agents (scripted backend + tiny model)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from policies.base import PolicyContext
from policies.llm.agentcf import CHOICE_PREFIX, AgentCF, AgentCFConfig, _waves
from policies.llm.agents import LLMAgentConfig
from policies.registry import make_policy
from starec_env.data import load_dataset
from starec_env.protocol import LeaveOneOut

OPTIONS = {
    "model": "tiny",
    "batch_size": 4,
    "evidence": False,
    "max_new_tokens": 6,
    "max_new_tokens_reflect": 8,
    "prompt": {"max_history": 4},
    "memory": {"max_history": 6, "max_preference_chars": 80},
    "item_memory_chars": 50,
    "train_steps": 2,
    "epochs": 3,  # options of other policies are ignored
}


class ScriptedBackend:
    """Stands in for :class:`policies.llm.backend.LLMBackend`: the user agent
    always picks the first item shown (so every pair whose real choice is
    shown second is a mistake); reflections are long answers after the
    forced prefix (returned with it, as the real backend does) naming who
    wrote them. Calls are counted per mode like the real backend."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls: Counter = Counter()
        self.prompts: dict[str, list] = {}

    def _log(self, mode: str, chats) -> None:
        self.calls[mode] += len(chats)
        self.prompts.setdefault(mode, []).extend(chats)

    def score_options(self, chats, options, *, prefix="", agent="default", mode="score"):
        self._log(mode, chats)
        return [-np.arange(len(o), dtype=np.float64) for o in options]

    def generate_scored(self, chats, options, *, prefix="", agent="default", mode="fast", **_):
        self._log(mode, chats)
        who = "ITEMNOTE" if mode == "reflect_item" else "USERNOTE"
        return [f"{prefix} {who} {'drama fans ' * 30}</preference>"] * len(chats), None

    def stats(self, agent=None):
        out = {f"{mode}_calls": n for mode, n in self.calls.items()}
        out["llm_calls"] = sum(self.calls.values())
        return out


@pytest.fixture(scope="module")
def world():
    dataset = load_dataset("synthetic", seed=0, n_users=40, n_items=60)
    return dataset, LeaveOneOut(dataset, n_negatives=5, n_users=6, seed=0)


def scripted_agent(world, seed: int = 0, **cf) -> tuple[AgentCF, ScriptedBackend]:
    dataset, _ = world
    backend = ScriptedBackend()
    ctx = PolicyContext(dataset, seed=seed, options=OPTIONS)
    config = LLMAgentConfig.from_options(OPTIONS)
    agent = AgentCF(ctx, config, AgentCFConfig.from_options({**OPTIONS, **cf}), backend=backend)
    agent.name = "agentcf"
    return agent, backend


def test_plan_is_seeded_and_uses_real_choices_against_unseen_negatives(world):
    dataset, protocol = world
    split = protocol.split
    agent, _ = scripted_agent(world, train_users=4, train_steps=3)
    steps = agent.plan(split)
    again = scripted_agent(world, train_users=4, train_steps=3)[0].plan(split)
    assert [[(p.user, p.items, p.actual) for p in s] for s in steps] == [
        [(p.user, p.items, p.actual) for p in s] for s in again
    ]
    pairs = [p for s in steps for p in s]
    users = {p.user for p in pairs}
    assert len(users) <= 4 and users <= set(split.sample_users.tolist())
    inter = split.interactions
    for user in users:
        rows = inter[inter["user"] == user]
        positives = rows[rows["rating"] > 3.0]["item"].tolist()
        mine = [p for p in pairs if p.user == user]
        assert [p.items[p.actual] for p in mine] == positives[-3:]  # the last positives, oldest first
        for p in mine:
            assert p.items[1 - p.actual] not in set(rows["item"])  # negative never touched in training
            assert p.rating > 3.0 and len(p.history) <= 4
    assert {p.actual for p in pairs} == {0, 1}
    full = {p.user for s in scripted_agent(world, variant="full", train_users=12)[0].plan(split) for p in s}
    assert len(full) == 12 and full - set(split.sample_users.tolist())  # item agents meet other users too
    other = scripted_agent(world, seed=1, train_users=4, train_steps=3)[0]
    assert [(p.user, p.items) for s in other.plan(split) for p in s] != [(p.user, p.items) for p in pairs]


def test_mistakes_update_user_and_item_memories_bounded(world):
    _, protocol = world
    agent, backend = scripted_agent(world, rounds=2)
    steps = agent.plan(protocol.split)
    pairs = [p for s in steps for p in s]
    wrong = [p for p in pairs if p.actual == 1]  # the scripted user agent always picks the first shown
    assert wrong and len(wrong) < len(pairs)

    agent.fit(protocol.split)

    stats = agent.stats()
    assert stats["train_choices"] == len(pairs)
    assert stats["train_mistakes"] == stats["train_still_wrong"] == len(wrong)
    # two rounds: each wrong pair is reflected on twice, by its user and by both of its items
    assert stats["reflect_calls"] == stats["reflections"] == 2 * len(wrong)
    assert stats["reflect_item_calls"] == stats["item_reflections"] == 4 * len(wrong)
    assert stats["choice_calls"] == len(pairs) + 2 * len(wrong)
    assert stats["reflect_format_failures"] == stats["item_reflect_format_failures"] == 0

    wrong_users = {p.user for p in wrong}
    for user in {p.user for p in pairs}:
        preference = agent.memory.get(user).preference if user in agent.memory else ""
        assert preference.startswith("I like USERNOTE") == (user in wrong_users)
        assert len(preference) <= 80
    reflected_items = {i for p in wrong for i in p.items}
    assert {i for i in reflected_items if agent._note(i).startswith("Enjoyed by viewers who ITEMNOTE")} == reflected_items
    assert stats["item_memories"] == len(reflected_items)
    assert all(len(agent._note(i)) <= 50 for i in reflected_items)
    assert stats["item_memory_truncations"] == 4 * len(wrong)

    # the user agent is told what it predicted and what the user really chose
    titles = protocol.dataset.items["title"]
    reflected = [p for step in steps for _ in range(2) for p in step if p.actual == 1]  # per step, per round
    assert len(reflected) == len(backend.prompts["reflect"])
    for p, chat in zip(reflected, backend.prompts["reflect"]):
        happened = chat[-1]["content"].split("## What happened")[1]
        assert f"expected to choose [A] {titles[p.items[0]]}" in happened
        assert f"In fact you chose [B] {titles[p.items[1]]}" in happened
    item_prompts = [chat[-1]["content"] for chat in backend.prompts["reflect_item"]]
    assert sum("but chose this movie" in t for t in item_prompts) == sum("but chose the other one" in t for t in item_prompts)

    # per step: every pair chooses, then the wrong ones choose again after each
    # round, reading the memories that round's reflections wrote for both sides
    prompts, at = [chat[-1]["content"] for chat in backend.prompts["choice"]], 0
    for step in steps:
        at += len(step)
        n_wrong = sum(p.actual == 1 for p in step)
        for _ in range(2):
            again = prompts[at : at + n_wrong]
            assert all("USERNOTE" in text and text.count("ITEMNOTE") == 2 for text in again)
            at += n_wrong
    assert at == len(prompts)


def test_item_memories_are_shared_at_inference(world):
    _, protocol = world
    agent, backend = scripted_agent(world)
    agent.fit(protocol.split)
    noted = {i for i in range(protocol.dataset.n_items) if agent._note(i)}
    batch = protocol.batch
    scores = agent.score(batch)
    assert scores.shape == batch.candidates.shape and np.isfinite(scores).all()
    for row, chat in enumerate(backend.prompts["score"]):
        shown = set(batch.candidates[row].tolist()) & noted
        assert chat[-1]["content"].count("ITEMNOTE") == len(shown)
    assert any(set(c.tolist()) & noted for c in batch.candidates), "fixture should share an item"


def test_waves_never_put_an_item_twice_in_one_batch():
    assert _waves([1, 2, 1, 1, 3]) == [[0, 1, 4], [2], [3]]
    assert _waves([]) == []


def test_config_is_checked():
    with pytest.raises(ValueError, match="ranking"):
        AgentCFConfig(ranking="slow")
    with pytest.raises(ValueError, match="variant"):
        AgentCFConfig(variant="all")
    with pytest.raises(ValueError, match="rounds"):
        AgentCFConfig(rounds=-1)
    assert AgentCFConfig.from_options({"train_steps": 4, "model": "tiny"}).train_steps == 4


@pytest.mark.parametrize("ranking", ["score", "generate"])
def test_tiny_model_end_to_end_is_deterministic(world, tiny_backend, ranking):
    dataset, protocol = world
    runs = []
    for run in range(2):
        policy = make_policy("agentcf", PolicyContext(dataset, seed=0, options={**OPTIONS, "ranking": ranking}))
        policy.fit(protocol.split)
        runs.append((policy.score(protocol.batch), policy))
    (first, policy), (second, other) = runs
    stats = policy.stats()
    assert first.shape == protocol.batch.candidates.shape and np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)
    assert {i: policy._note(i) for i in range(dataset.n_items)} == {i: other._note(i) for i in range(dataset.n_items)}
    metrics = protocol.evaluate(first)
    assert 0.0 <= metrics["ndcg@10"] <= 1.0

    assert stats["model"] == "tiny" and stats["decisions"] == len(protocol.batch)
    assert stats["choice_calls"] >= stats["train_choices"] > 0
    assert stats["reflect_calls"] == stats["reflections"] == stats["train_mistakes"]
    assert stats["llm_prompt_tokens"] > 0 and stats["llm_seconds"] > 0
    assert all(len(policy.memory.get(u).preference) <= 80 for u in protocol.users)
    if ranking == "score":
        assert stats["score_calls"] == len(protocol.batch) and "fast_calls" not in stats
    else:
        assert stats["fast_calls"] == len(protocol.batch)
        assert stats["format_failures"] + stats.get("repairs_missing", 0) >= 0


def test_choice_prefix_matches_the_template(world):
    """The scoring path reads the choice after the prefix the prompt asks for."""
    _, protocol = world
    agent, backend = scripted_agent(world, train_steps=1)
    agent.fit(protocol.split)
    assert all(f'"{CHOICE_PREFIX} <id>"' in chat[0]["content"] for chat in backend.prompts["choice"])
