"""One strict config path: nested policy tables merge key by key, training and
evaluation build the same prompts, typos are refused with the table and the
closest key, and a user's own LLM policy gets the run's model settings."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments.config import ConfigError, load_run_config
from policies import registry
from policies.llm.agents import LLMAgentConfig, make_starec
from policies.llm.judge import JudgeEncoder
from policies.llm.prompts import render_rank_prompt
from policies.options import PolicyOptionError, check, takes

PROMPTS = """
policies = ["pop", "starec"]

[prompt]
max_words = 33
reflect_top = 3
noun = "book"
fast_layout = "full"

[policy.starec.prompt]
max_history = 7

[policy.starec.judge]
history = 5

[policy.starec.warmup]
steps = 3
"""


def _cfg(tmp_path: Path, text: str = PROMPTS):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return load_run_config(path)


def test_a_policy_prompt_table_overrides_single_keys_of_prompt(tmp_path: Path) -> None:
    prompt = _cfg(tmp_path).policy_options("starec")["prompt"]
    assert prompt["max_history"] == 7  # [policy.starec.prompt]
    assert (prompt["max_words"], prompt["reflect_top"], prompt["noun"]) == (33, 3, "book")  # kept from [prompt]


class _Tokenizer:
    """Just enough of a tokenizer for :class:`JudgeEncoder` (single-token answers)."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [hash(text) % 1000]}


def test_training_and_evaluation_render_the_same_prompts(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    evaluated = LLMAgentConfig.from_options(cfg.policy_options("starec"))  # what the agent renders with
    prompt, judge = cfg.prompt_config("starec"), cfg.judge_config("starec")  # what training renders with
    assert (prompt, judge) == (evaluated.prompt, evaluated.judge)
    assert (prompt.max_history, prompt.max_words, prompt.reflect_top, judge.history) == (7, 33, 3, 5)
    view = SimpleNamespace(profile={"age": 30}, history=[("Old", ("Drama",), 1990, 4.0)] * 9,
                           candidates=[("A film", ("Comedy",), 2000), ("B film", ("Drama",), 2001)], user=0)
    assert render_rank_prompt(view, config=prompt) == render_rank_prompt(view, config=evaluated.prompt)
    notes = [JudgeEncoder(_Tokenizer(), j).note_messages(view, "likes dramas", predicted=[1, 0], chosen=0, rating=4.0,
                                                         max_words=p.max_words, top=p.reflect_top)
             for j, p in ((judge, prompt), (evaluated.judge, evaluated.prompt))]
    assert notes[0] == notes[1] and "33" in str(notes[0])


def test_training_walks_the_way_the_evaluated_agent_warms_up(tmp_path: Path) -> None:
    """[policy.starec.warmup] reaches the training decisions' walks, not only the evaluated agent."""
    import numpy as np

    from experiments.train.pipeline import decisions_for, prepare

    text = PROMPTS.replace('policies = ["pop", "starec"]', 'preset = "smoke"\npolicies = ["pop", "starec"]')
    cfg = _cfg(tmp_path, text)
    assert cfg.warmup.steps != 3 and cfg.warmup_config("starec") == LLMAgentConfig.from_options(cfg.policy_options("starec")).warmup
    ctx = prepare(cfg)
    users = np.unique(ctx.split.interactions["user"].to_numpy(np.int64))[:4]
    walks = decisions_for(ctx, users, np.random.default_rng(0)).walks
    assert max(len(w.items) for w in walks) == 3


def test_a_typo_inside_a_policy_prompt_table_names_table_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[policy.starec\].*'max_wrods'.*did you mean 'max_words'"):
        _cfg(tmp_path, '[policy.starec.prompt]\nmax_wrods = 5\n')
    with pytest.raises(PolicyOptionError, match=r"\[policy.agentcf\].*'item_max_word'.*did you mean 'item_max_words'"):
        check("agentcf", registry.load_factory("agentcf"), {"item_max_word": 3})


def test_enum_values_are_checked_by_their_owner_with_the_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"run.toml \[reward\]: reward.memory_metric .*'rank'"):
        _cfg(tmp_path, '[reward]\nmemory_metric = "rank"\n')
    with pytest.raises(ConfigError, match=r"run.toml \[prompt\]: prompt fast_layout .*'wide'"):
        _cfg(tmp_path, '[prompt]\nfast_layout = "wide"\n')


@takes(LLMAgentConfig)
def make_my_agent(ctx):  # pragma: no cover - only its registration is under test
    return make_starec(ctx)


def test_a_user_registered_llm_policy_gets_the_model_and_prompt_options(tmp_path: Path) -> None:
    registry.register("my-agent", make_my_agent, llm=True)
    registry.register("my-rules", lambda ctx: None)
    try:
        cfg = _cfg(tmp_path, PROMPTS.replace('"starec"]', '"starec", "my-agent", "my-rules"]')
                   + "[policy.my-agent.prompt]\nmax_words = 12\n")
        options = cfg.policy_options("my-agent")
        assert options["model"] == cfg.model.name and options["prompt"]["max_words"] == 12
        assert options["prompt"]["reflect_top"] == 3 and cfg.prompt_config("my-agent").max_words == 12
        assert "model" not in cfg.policy_options("my-rules")
    finally:
        for name in ("my-agent", "my-rules"):
            registry._FACTORIES.pop(name)
            registry._LLM.discard(name)
