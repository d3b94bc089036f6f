"""GRPO scores only the completion tokens through TRL's chunked LM head on a CPU too (same log-probabilities)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

import trl.trainer.utils as trl_utils  # noqa: E402

from experiments.train.grpo import score_completions_only  # noqa: E402
from policies.llm.models import tiny_model  # noqa: E402


def _completion_logps(model, ids: torch.Tensor, labels: torch.Tensor):
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, fused_lm_head=True)
    out.loss.backward()
    grad = model.model.layers[0].mlp.up_proj.weight.grad.clone()
    model.zero_grad()
    return out.log_probs.detach(), grad


def test_compact_head_gives_the_same_logps_and_gradients(monkeypatch):
    monkeypatch.setattr(trl_utils, "_use_triton", trl_utils._use_triton)  # restored after the test
    model = tiny_model(vocab_size=300, seed=0)
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 300, (3, 40), generator=gen)
    labels = ids.clone()
    labels[:, :32] = -100  # a 32-token prompt, an 8-token completion: only the completion is scored
    assert not trl_utils._use_triton(torch.device("cpu"))  # TRL alone: every position goes through the head
    full, full_grad = _completion_logps(model, ids, labels)
    score_completions_only()
    assert trl_utils._use_triton(torch.device("cpu"))
    score_completions_only()  # idempotent: wrapping twice keeps one wrapper
    assert not hasattr(trl_utils._use_triton.__closure__[0].cell_contents, "compacts_everywhere")
    compact, compact_grad = _completion_logps(model, ids, labels)
    assert torch.allclose(full, compact, atol=1e-5) and torch.allclose(full_grad, compact_grad, atol=1e-6)
    assert (compact[:, :31] == 0).all() and (compact[:, 31:] < 0).all()  # prompt positions masked, completion scored
