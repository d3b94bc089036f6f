"""LLM agents driven by the environment loop and the offline protocol (tiny model)."""
from __future__ import annotations

import numpy as np
import pytest

from policies.base import PolicyContext
from policies.llm.agents import LLMAgent, LLMAgentConfig
from policies.llm.memory import MemoryConfig, MemoryStore
from policies.registry import make_policy
from starec_env.batched import BatchedEnv
from starec_env.config import EnvConfig
from starec_env.protocol import LeaveOneOut

LLM_POLICIES = ("llmrank", "starec", "starec-noreflect", "starec-fast", "starec-think", "starec-adaptive")
OPTIONS = {
    "model": "tiny",
    "precision": "fp32",  # the same arithmetic on every CPU
    "batch_size": 4,
    "max_new_tokens": 6,
    "max_new_tokens_think": 8,
    "max_new_tokens_reflect": 8,
    "prompt": {"max_history": 4},
    "memory": {"max_history": 6, "max_preference_chars": 80},
    "warmup": {"steps": 1, "candidates": 3, "max_new_tokens": 8},
    "epochs": 3,  # options of other policies are ignored
}
JUDGES = ("starec", "starec-noreflect", "starec-fast", "starec-adaptive")


@pytest.fixture(scope="module")
def env():
    cfg = EnvConfig(
        dataset="synthetic", n_users=5, n_candidates=6, slate_size=2, max_cycles=3, seed=0,
        world={"n_users": 40, "n_items": 60},
    )
    return BatchedEnv(cfg)


def run_episode(policy, env, steps: int = 2) -> list[np.ndarray]:
    """The environment loop: score, step, let the policy observe its feedback."""
    batch = env.reset(seed=1)
    all_scores = []
    for _ in range(steps):
        scores = policy.score(batch)
        all_scores.append(scores)
        result = env.step(scores)
        policy.observe(batch, result.feedback)
        batch = result.batch
    return all_scores


@pytest.mark.parametrize("name", LLM_POLICIES)
def test_agent_runs_environment_steps(name, env, tiny_backend):
    policy = make_policy(name, PolicyContext(env.dataset, seed=0, options=OPTIONS))
    scores = run_episode(policy, env)
    for s in scores:
        assert s.shape == (env.n_agents, env.n_candidates) and np.isfinite(s).all()
    stats = policy.stats()
    assert stats["decisions"] == 2 * env.n_agents
    assert stats["model"] == "tiny"
    generated = stats.get("fast_calls", 0) + stats.get("think_calls", 0)
    if name in JUDGES:  # one forward pass per user and step scores every candidate
        assert stats["judge_calls"] == 2 * env.n_agents
        if name == "starec-adaptive":
            assert stats["think_decisions"] == stats.get("think_calls", 0) <= 0.25 * stats["decisions"]
        else:
            assert generated == 0
    else:
        assert generated == 2 * env.n_agents
        assert stats["format_failures"] + stats.get("repairs_missing", 0) >= 0
    if name in ("starec", "starec-think", "starec-adaptive"):
        # slow thinking after each feedback, for every user, memory bounded
        assert stats["reflect_calls"] == 2 * env.n_agents
        assert stats["memory_users"] == env.n_agents
        assert all(len(policy.memory.get(u).preference) <= 80 for u in env.users)
        assert all(len(policy.memory.get(u).history) <= 6 for u in env.users)
    else:
        assert "reflect_calls" not in stats and "warm_reflect_calls" not in stats
    if name in ("starec", "starec-adaptive"):  # the memory was warmed over each user's last interaction first
        assert stats["warmed_users"] == env.n_agents and stats["warm_reflect_calls"] == env.n_agents


def test_sampling_agents_are_reproducible(env, tiny_backend):
    options = dict(OPTIONS, temperature=1.0)
    first = run_episode(make_policy("starec", PolicyContext(env.dataset, seed=7, options=options)), env)
    again = run_episode(make_policy("starec", PolicyContext(env.dataset, seed=7, options=options)), env)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


class ScriptedBackend:
    """Stands in for the model: replays given answers per mode (row i gets
    answer i modulo their number), records the prompts."""

    device = "cpu"

    def __init__(self, answers: dict[str, list[str]], tiny_backend) -> None:
        self.answers = answers
        self.prompts: list = []
        self.tiny = tiny_backend

    def generate_scored(self, chats, options, *, mode: str, **kwargs):
        self.prompts.extend(chats)
        answers = self.answers[mode]
        first = None if options is None else [np.zeros(len(o)) for o in options]
        return [answers[i % len(answers)] for i in range(len(chats))], first

    def score_options(self, chats, options, **kwargs):
        return self.tiny.score_options(chats, options, **kwargs)

    def stats(self, agent=None) -> dict:
        return {}


def test_malformed_answers_never_crash_and_are_counted(env, tiny_backend):
    answers = ["", "Ranking: C > A > C > Z9 > Q", "<think>unclosed [B] then [F]", "\x00garbage\n1. [E]\n2. E"]
    ctx = PolicyContext(env.dataset, seed=0, options=OPTIONS)
    agent = LLMAgent(
        ctx, LLMAgentConfig.from_options(OPTIONS), ranking="generate", reflect=True,
        backend=ScriptedBackend({"fast": answers, "reflect": answers}, tiny_backend),
    )
    agent.name = "scripted"
    scores = run_episode(agent, env, steps=1)[0]
    for row in scores:  # every row is a full ranking despite the garbage
        assert sorted(np.argsort(-row)) == list(range(env.n_candidates))
    # row 1: "C > A" read, duplicate C and unknown Z9/Q repaired; C ranked first
    assert np.argmax(scores[1]) == 2
    stats = agent.stats()
    assert stats["format_failures"] >= 1  # the empty answer
    assert stats["repairs_duplicate"] >= 1 and stats["repairs_hallucinated"] >= 1
    assert stats["repairs_missing"] > 0
    assert stats["reflect_format_failures"] == stats["reflections"] == env.n_agents


def test_reflection_rewrites_bounded_preference(env, tiny_backend):
    long_text = "<think>the user chose a comedy</think><preference>" + "Likes comedy and drama. " * 40 + "</preference>"
    options = dict(OPTIONS, memory={"max_preference_chars": 120, "max_history": 6})
    ctx = PolicyContext(env.dataset, seed=0, options=options)
    agent = LLMAgent(
        ctx, LLMAgentConfig.from_options(options), ranking="generate", reflect=True,
        backend=ScriptedBackend({"fast": ["Ranking: A > B"], "reflect": [long_text]}, tiny_backend),
    )
    agent.name = "scripted"
    run_episode(agent, env, steps=2)
    user = int(env.users[0])
    pref = agent.memory.get(user).preference
    assert pref.startswith("Likes comedy and drama.") and len(pref) <= 120
    assert agent.stats()["memory_truncations"] >= 1
    # the next ranking prompt carries the rewritten description
    assert any("Likes comedy and drama." in m["content"] for chat in agent.backend.prompts for m in chat)


def test_memory_store_bounds():
    store = MemoryStore(MemoryConfig(max_history=3, max_preference_chars=50))
    history = [(f"Movie {k}", ("Drama",), 1990, 4.0) for k in range(10)]
    mem = store.sync_history(7, history, {"age": 30})
    for k in range(10):
        store.set_preference(7, "word " * (k * 20))
    assert mem.profile == {"age": 30}
    assert [e[0] for e in mem.history] == ["Movie 7", "Movie 8", "Movie 9"]
    assert len(mem.preference) <= 50 and mem.updates == 10
    assert store.stats()["memory_users"] == 1 and 7 in store and len(store) == 1
    with pytest.raises(ValueError, match="max_history"):
        MemoryConfig(max_history=-1)
    with pytest.raises(ValueError, match="unknown memory option"):
        MemoryConfig.from_dict({"max_hist": 3})


def test_agents_under_the_offline_protocol(env, tiny_backend):
    protocol = LeaveOneOut(env.dataset, n_negatives=5, n_users=6, seed=0)
    for name in ("llmrank", "starec-fast"):
        policy = make_policy(name, PolicyContext(env.dataset, seed=0, options=OPTIONS))
        policy.fit(protocol.split)
        metrics = protocol.evaluate(policy.score(protocol.batch))
        assert 0.0 <= metrics["ndcg@10"] <= 1.0


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="think_budget"):
        LLMAgentConfig.from_options({"think_budget": 2.0})
    with pytest.raises(ValueError, match="unknown prompt option"):
        LLMAgentConfig.from_options({"prompt": {"nope": 1}})


def test_shared_prefix_kv_reuse_changes_nothing_but_cost(tiny_backend):
    """Prompts sharing a system message: the prefix runs once (and is kept for
    later calls), scores and greedy answers equal the one-by-one results."""
    from policies.llm.backend import LLMBackend

    system = {"role": "system", "content": "You rank candidate movies for one user. Answer with one line that starts with Ranking."}
    chats = [[system, {"role": "user", "content": f"User {k} likes {'comedy ' * k}. Rank A, B, C."}] for k in range(1, 6)]
    options = [[" A", " B", " C"]] * 5

    def fresh(keep: bool = True) -> LLMBackend:
        return LLMBackend(tiny_backend.model, tiny_backend.tokenizer, batch_size=4, keep_prefixes=keep)

    alone = [fresh().score_options([c], [o])[0] for c, o in zip(chats, options)]
    backend = fresh()
    together = backend.score_options(chats, options)
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a, b, atol=1e-5)
    cached = backend.stats()["llm_cached_tokens"]
    assert 0 < cached < backend.stats()["llm_prompt_tokens"]
    np.testing.assert_allclose(backend.score_options(chats[:1], options[:1])[0], alone[0], atol=1e-5)
    assert backend.stats()["llm_cached_tokens"] > cached  # a single prompt reuses the kept prefix
    long_options = [[" A b", " B c d"]] * 5
    for a, b in zip([fresh().score_options([c], [o])[0] for c, o in zip(chats, long_options)],
                    fresh().score_options(chats, long_options)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert [fresh().generate([c], max_new_tokens=6)[0] for c in chats] == fresh().generate(chats, max_new_tokens=6)
    backend.clear_prefixes()
    backend.reset_stats()
    backend.score_options(chats[:1], options[:1])
    assert backend.stats()["llm_cached_tokens"] == 0
    # a backend over weights that may change (training) shares prefixes within a call only
    training = fresh(keep=False)
    training.score_options(chats, options)
    training.score_options(chats[:1], options[:1])
    assert training.stats()["llm_cached_tokens"] == cached


def test_scoring_prompt_is_compact_and_threads_apply(env, tiny_backend):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        policy = make_policy("starec-fast", PolicyContext(env.dataset, seed=0, options=dict(OPTIONS, threads=1)))
        assert torch.get_num_threads() == 1  # --threads reaches a model loaded earlier
    finally:
        torch.set_num_threads(threads)
    batch = env.reset(seed=1)
    views = policy._views(batch)
    evidence = policy.evidence.lines(batch)
    fast = policy._rank_prompt(views[0], evidence[0], "fast")
    slow = policy._rank_prompt(views[0], evidence[0], "think")
    assert len(fast[1]["content"]) < 0.7 * len(slow[1]["content"])


def test_each_instance_reports_its_own_costs(env, tiny_backend):
    """The backend is shared per process; a new policy per seed must not report
    the running total of every earlier policy of the same name."""
    protocol = LeaveOneOut(env.dataset, n_negatives=5, n_users=4, seed=0)
    costs = []
    for _ in range(2):
        policy = make_policy("starec-fast", PolicyContext(env.dataset, seed=0, options=OPTIONS))
        policy.fit(protocol.split)
        policy.score(protocol.batch)
        costs.append(policy.stats()["llm_calls"])
    assert costs[0] == costs[1] > 0


class RecordingScorer:
    """Returns scripted per-id log-likelihoods (row i gets rows[i]) and records the prompts."""

    device = "cpu"

    def __init__(self, rows: list[np.ndarray]) -> None:
        self.rows = rows
        self.chats: list = []

    def score_options(self, chats, options, **kwargs):
        start = len(self.chats)
        self.chats.extend(chats)
        return [self.rows[(start + i) % len(self.rows)] for i in range(len(chats))]

    def stats(self, agent=None) -> dict:
        return {}


def test_calibration_prior_averages_real_item_prompts(env):
    """The prior is the mean over several prompts of real catalogue titles in
    different orders (no placeholder title that would favour one letter), and
    the scoring path subtracts it."""
    from policies.llm.agents import CALIBRATION_PROMPTS

    n = env.n_candidates
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=n) for _ in range(CALIBRATION_PROMPTS)]
    backend = RecordingScorer(rows)
    agent = LLMAgent(PolicyContext(env.dataset, seed=0, options=OPTIONS), LLMAgentConfig.from_options(OPTIONS),
                     ranking="score", reflect=False, backend=backend)
    prior = agent._content_free_prior(n)
    np.testing.assert_allclose(prior, np.mean(rows, axis=0))
    assert len(backend.chats) == CALIBRATION_PROMPTS
    titles = set(env.dataset.items["title"])
    shown = [[line.split("] ", 1)[1].split(" | ")[0] for line in chat[-1]["content"].splitlines() if line.startswith("[")]
             for chat in backend.chats]
    assert all(len(s) == n and set(s) <= titles for s in shown)
    assert len({tuple(s) for s in shown}) == CALIBRATION_PROMPTS  # different items / orders
    assert "N/A" not in str(backend.chats)
    # the prior is computed once per candidate count, then subtracted from every score
    backend.rows = [np.arange(n, dtype=float)]
    batch = env.reset(seed=1)
    np.testing.assert_allclose(agent.score(batch)[0], np.arange(n) - prior)
    assert len(backend.chats) == CALIBRATION_PROMPTS + len(batch)
