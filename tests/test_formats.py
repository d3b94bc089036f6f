"""The answer-format registry is the one source: every format renders and
parses its own answer, and a newly registered format is usable by prompts,
agents, rewards and the config without touching them."""
from __future__ import annotations

import numpy as np
import pytest

from policies.base import PolicyContext
from policies.llm import formats
from policies.llm.formats import FAST, RANKING_PREFIX, THINK, AnswerFormat, generated_format, get_format, rankings
from policies.llm.parsing import parse_ranking, parse_reflection
from policies.llm.prompts import TEMPLATE_DIR, render_rank_prompt
from reward.ranking import NDCGReward, RankTierReward
from tests.test_llm_prompts import make_view

#: One clean answer per registered format (a new format adds its own here).
ANSWERS = {
    "fast": "Ranking: C > A > B > E > D",
    "think": "<think>Likes comedy and romance, dislikes horror.</think>\n"
             "1. [C] - romance\n2. [A] - sci-fi\n3. [B] - comedy\n4. [E] - comedy\n5. [D] - action",
    "reflect": "<think>The user rated the romance 5/5.</think>\n<preference>Likes romance and comedy.</preference>",
}


def parse(fmt: AnswerFormat, text: str, ids: list[str]):
    if fmt.parser == "ranking":
        return parse_ranking(text, ids, expect_think=fmt.expect_think)
    return parse_reflection(text)


@pytest.mark.parametrize("name", list(formats.FORMATS))
def test_every_format_renders_and_parses_its_own_answer(name):
    fmt = get_format(name)
    assert fmt.name == name and (TEMPLATE_DIR / f"{fmt.template}.j2").exists()
    assert name in ANSWERS, f"add a clean {name!r} answer to ANSWERS"
    parsed = parse(fmt, ANSWERS[name], list("ABCDE"))
    assert parsed.format_score == 1.0
    if fmt.parser == "ranking":
        assert parsed.order == [2, 0, 1, 4, 3]
        prompt = render_rank_prompt(make_view(), "Likes comedies.", mode=name)
        assert (f'starts with "{fmt.prefix}"' in prompt[0]["content"] + prompt[1]["content"]) == bool(fmt.prefix)
    else:
        with pytest.raises(ValueError, match="ranking answer format"):
            render_rank_prompt(make_view(), None, mode=name)


def test_lookups_name_what_is_known():
    assert FAST.prefix == RANKING_PREFIX and generated_format("think") is THINK and generated_format("generate") is FAST
    assert set(rankings()) == {"judge", "score", "adaptive", "generate", "think"}
    with pytest.raises(ValueError, match="known formats: fast, think, reflect"):
        get_format("slow")
    with pytest.raises(ValueError, match="generated rankings"):
        generated_format("judge")
    with pytest.raises(ValueError, match="clashes"):
        formats.register(AnswerFormat("think", "rank_think", "ranking"))


class ScriptedBackend:
    """Stands in for the model: one answer per format, every call recorded."""

    device = "cpu"

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, int]] = []

    def generate_scored(self, chats, options, *, mode: str, prefix: str, max_new_tokens: int, **_):
        self.calls.append((mode, prefix, max_new_tokens))
        first = None if options is None else [np.zeros(len(o)) for o in options]
        return [self.answers[mode]] * len(chats), first


def test_a_registered_format_is_usable_everywhere(monkeypatch):
    from policies.llm.agents import LLMAgent, LLMAgentConfig
    from starec_env.batched import BatchedEnv
    from starec_env.config import EnvConfig

    monkeypatch.setattr(formats, "FORMATS", dict(formats.FORMATS))
    terse = formats.register(AnswerFormat("terse", FAST.template, "ranking", prefix=RANKING_PREFIX,
                                          rewards=("rank_tier",), ranking="terse"))
    # prompts: the template asks for the format's prefix, in the full layout (not a compact format)
    full = render_rank_prompt(make_view(), None, mode="terse")
    assert "## Task" in full[1]["content"] and f'starts with "{RANKING_PREFIX}"' in full[1]["content"]
    # config and agents: a new ranking method that generates the format
    assert "terse" in rankings()
    env = BatchedEnv(EnvConfig(dataset="synthetic", n_users=3, n_candidates=5, slate_size=2, max_cycles=2, seed=0,
                               world={"n_users": 30, "n_items": 40}))
    batch = env.reset(seed=1)
    options = {"evidence": False, "calibrate": False, "max_new_tokens": 7}
    backend = ScriptedBackend({"terse": "Ranking: C > A > B > E > D"})
    agent = LLMAgent(PolicyContext(env.dataset, seed=0, options=options), LLMAgentConfig.from_options(options),
                     ranking="terse", reflect=False, backend=backend)
    scores = agent.score(batch)
    assert all(list(np.argsort(-row, kind="stable")) == [2, 0, 1, 4, 3] for row in scores)
    assert backend.calls == [("terse", RANKING_PREFIX, 7)]  # its cost label, forced prefix and token budget
    # rewards: the terms the format lists score its rows, the others skip them
    row = {"candidate_ids": [list("ABCDE")], "target": [0], "utilities": [[1.0, 0, 0, 0, 0]], "mode": [terse.name]}
    assert RankTierReward()([[]], ["Ranking: A > B"], **row) == [1.0]
    assert NDCGReward()([[]], ["Ranking: A > B"], **row) == [None]
    with pytest.raises(ValueError, match="ranking must be one of"):
        LLMAgent(PolicyContext(env.dataset, seed=0, options=options), LLMAgentConfig.from_options(options),
                 ranking="slow", reflect=False, backend=backend)
