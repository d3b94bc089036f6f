"""Batched, accounted inference for the LLM agents.

Two ways to get a ranking out of a model:

* :meth:`LLMBackend.generate` - batched chat generation (prompts padded on
  the left, one prefill then one token per step through the KV cache, greedy
  or sampled from an explicit ``torch.Generator``);
* :meth:`LLMBackend.score_options` - no generation at all: one batched
  forward pass gives the log-likelihood of each candidate identifier as the
  next thing the model would write. This is what makes an LLM agent cheap
  enough for simulations with many users.

Every call is accounted (sequences, batches, prompt/completion tokens,
seconds) per agent and per mode, because the cost of thinking is one of the
things STARec measures.

On CPU, prefill of the prompt is nearly all of a scoring decision's cost, so
the backend never computes the same prompt tokens twice when it can avoid
it: the token prefix that all prompts of a call share (system message,
instructions) is run once per call; each prompt then only runs its own
suffix. With ``keep_prefixes`` (the shared inference backends of
:func:`get_backend`, whose weights never change) a few recent prefixes are
also kept for later calls. ``cached_tokens`` counts the prompt tokens served
from a prefix cache.
"""
from __future__ import annotations

import contextlib
import inspect
import time
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch

from policies.llm.judge import JudgePrompt, answer_direction
from policies.llm.models import TINY, load_model
from policies.llm.prompts import Messages

_COUNTERS = ("calls", "batches", "prompt_tokens", "cached_tokens", "completion_tokens", "seconds", "truncated_prompts")
#: Shared prefixes shorter than this are not worth a cache entry.
MIN_PREFIX_TOKENS = 16
#: How many shared-prefix KV caches are kept (agents/modes alternate prompts).
MAX_PREFIXES = 4


class LLMBackend:
    """A loaded model + tokenizer with batched generation, scoring and accounting.

    ``batch_size`` bounds how many sequences share one forward pass;
    ``max_prompt_tokens`` (default: the model's context minus room to answer)
    bounds prompts, which are cut on the left when longer (and counted).
    ``keep_prefixes`` keeps shared-prompt-prefix KV caches across calls: only
    for frozen weights (a model being trained would read stale keys/values).
    ``bf16`` runs every forward pass under bf16 autocast (for CPUs that
    compute bf16 natively and for GPUs; see :func:`policies.llm.models.bf16_native`).
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        batch_size: int = 16,
        max_prompt_tokens: int | None = None,
        keep_prefixes: bool = False,
        bf16: bool = False,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        context = getattr(model.config, "max_position_embeddings", 2048)
        self.max_prompt_tokens = max_prompt_tokens or max(64, context - 512)
        self.device = next(model.parameters()).device
        self.name = getattr(model, "name_or_alias", getattr(model.config, "_name_or_path", "model"))
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, (list, tuple)) else [eos]
        self.stop_ids = sorted({int(e) for e in eos if e is not None} | {int(tokenizer.eos_token_id)})
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0])
        self._stats: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: dict.fromkeys(_COUNTERS, 0))
        # transformers renamed ``past_key_values`` to ``cache`` (5.x); use what this version takes.
        self._cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.keep_prefixes = keep_prefixes
        self.bf16 = bf16
        self._prefixes: list[tuple[np.ndarray, object]] = []  # (token ids, KV cache), most recent last
        self._cached_tokens = 0

    def _forward(self, cache, **inputs):
        """Model forward through (and filling) ``cache``; returns the logits."""
        return self.model(**inputs, **{self._cache_kw: cache}, use_cache=True).logits

    # ------------------------------------------------------------------ text
    def prompt_text(self, messages: Messages, prefix: str = "") -> str:
        """The chat rendered with the model's template, assistant turn opened,
        followed by ``prefix`` (text the answer is forced to start with)."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return text + prefix

    def _encode(self, texts: Sequence[str]) -> tuple[list[list[int]], int]:
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        cut = [len(x) > self.max_prompt_tokens for x in ids]
        return [x[-self.max_prompt_tokens :] for x in ids], sum(cut)

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            if s:
                ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                mask[row, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _chunks(self, seqs: Sequence[Sequence[int]]):
        """Batches of similar length (less padding), as index arrays."""
        order = np.argsort([len(s) for s in seqs], kind="stable")
        for lo in range(0, len(order), self.batch_size):
            yield order[lo : lo + self.batch_size]

    def _begin_call(self) -> float:
        """Start of a public call: drop prefixes of earlier calls unless they
        may be kept; returns the start time for the accounting."""
        if not self.keep_prefixes:
            self._prefixes.clear()
        return time.perf_counter()

    def _new_cache(self, prefix=None, rows: int = 1):
        """An empty KV cache, or one starting with ``prefix``'s keys/values for
        ``rows`` sequences (the prefix tensors are shared, never modified: the
        cache concatenates new positions into fresh tensors)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        if prefix is not None:
            for layer, entry in enumerate(prefix.layers):
                keys, values = entry.keys, entry.values
                cache.update(keys.expand(rows, *keys.shape[1:]), values.expand(rows, *values.shape[1:]), layer)
        return cache

    def _shared_prefix(self, seqs: Sequence[Sequence[int]], limit: int | None = None) -> tuple[int, object]:
        """``(n, cache)``: the first ``n`` tokens of every prompt are identical and
        ``cache`` holds their keys/values (``(0, None)`` when none is shared).

        A kept prefix is reused when it matches (also for a single prompt);
        otherwise the prompts' own common prefix is computed once and kept.
        Every prompt keeps at least one token of its own (its next-token
        distribution is what the caller needs), and ``n`` never exceeds
        ``limit`` (positions whose outputs the caller reads must be run).
        """
        limit = min(min(len(s) for s in seqs) - 1, limit if limit is not None else 1 << 62)
        arrays = [np.asarray(s) for s in seqs]
        best, best_cache = 0, None
        for ids, cache in self._prefixes:
            n = min(limit, min(_common_length(ids, a) for a in arrays))
            if n > best:
                best, best_cache = n, (cache if n == len(ids) else _sliced(cache, n, self._new_cache()))
        if best >= MIN_PREFIX_TOKENS:
            return best, best_cache
        if len(seqs) < 2:
            return 0, None
        n = min(limit, min(_common_length(arrays[0], a) for a in arrays[1:]))
        if n < MIN_PREFIX_TOKENS:
            return 0, None
        cache = self._new_cache()
        self._forward(cache, input_ids=torch.tensor([list(seqs[0][:n])], device=self.device), logits_to_keep=1)
        self._prefixes = (self._prefixes + [(arrays[0][:n], cache)])[-MAX_PREFIXES:]
        return n, cache

    def _prefill(self, seqs: Sequence[Sequence[int]], *, keep_cache: bool = True):
        """Forward pass over the prompts; returns a left-padded batch KV cache
        (``None`` unless ``keep_cache``), the next-token log-probabilities
        (B, V), the attention mask and the last positions.

        The shared prefix comes from :meth:`_shared_prefix`; only the rest of
        each prompt is run. Prompts of unequal length are prefilled one by one
        and their caches stacked with left padding: CPU attention under a
        padding mask is much slower (measured ~1.7x per token at batch 2, worse
        beyond) than the unmasked causal kernel, and batching gains nothing on
        prompts this long.
        """
        start, prefix = self._shared_prefix(seqs)
        self._cached_tokens += start * len(seqs)
        ids, mask = self._left_pad(seqs)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        if bool(mask.all()):
            cache = self._new_cache(prefix, len(seqs))
            logits = self._forward(
                cache, input_ids=ids[:, start:], attention_mask=mask, position_ids=pos[:, start:], logits_to_keep=1
            )
            return cache if keep_cache else None, torch.log_softmax(logits[:, -1].float(), -1), mask, pos[:, -1:]
        width = ids.shape[1]
        rows, last = [], []
        for seq in seqs:
            row_cache = self._new_cache(prefix)
            positions = torch.arange(start, len(seq), device=self.device)[None]
            logits = self._forward(
                row_cache, input_ids=ids.new_tensor([list(seq[start:])]), position_ids=positions, logits_to_keep=1
            )
            rows.append(row_cache if keep_cache else None)
            last.append(logits[:, -1])
        logp = torch.log_softmax(torch.cat(last).float(), -1)
        if not keep_cache:
            return None, logp, mask, pos[:, -1:]
        cache = self._new_cache()
        for layer in range(len(rows[0].layers)):
            keys, values = [], []
            for seq, row_cache in zip(seqs, rows):
                pad = (0, 0, width - len(seq), 0)  # left-pad the sequence axis (dim -2)
                keys.append(torch.nn.functional.pad(row_cache.layers[layer].keys, pad))
                values.append(torch.nn.functional.pad(row_cache.layers[layer].values, pad))
            cache.update(torch.cat(keys), torch.cat(values), layer)
        return cache, logp, mask, pos[:, -1:]

    # ------------------------------------------------------------ generation
    @torch.inference_mode()
    def generate(
        self,
        chats: Sequence[Messages],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        prefix: str = "",
        agent: str = "default",
        mode: str = "fast",
    ) -> list[str]:
        """Answer every chat; returns ``prefix`` + the generated text per chat.

        Greedy when ``temperature`` is 0, otherwise nucleus sampling whose
        only source of randomness is ``generator`` (required then).
        """
        texts, _ = self.generate_scored(
            chats, None, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            generator=generator, prefix=prefix, agent=agent, mode=mode,
        )
        return texts

    @torch.inference_mode()
    def generate_scored(
        self,
        chats: Sequence[Messages],
        options: Sequence[Sequence[str]] | None,
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        prefix: str = "",
        agent: str = "default",
        mode: str = "fast",
    ) -> tuple[list[str], list[np.ndarray] | None]:
        """:meth:`generate`, plus the log-probability of each option's *first*
        token as the answer's first token - a free by-product of the prefill
        (equal to :meth:`score_options` for single-token options such as
        candidate ids), e.g. to order what a malformed answer left out."""
        if temperature > 0 and generator is None:
            raise ValueError("sampling (temperature > 0) needs an explicit torch.Generator for reproducibility")
        start = self._begin_call()
        seqs, truncated = self._encode([self.prompt_text(c, prefix) for c in chats])
        first_ids = None
        if options is not None:
            first_ids = [[t[0] for t in self.tokenizer(list(o), add_special_tokens=False)["input_ids"]] for o in options]
        outputs: list[list[int]] = [[] for _ in seqs]
        scores: list[np.ndarray] = [np.zeros(0)] * len(seqs)
        for rows in self._chunks(seqs):
            with self.autocast():
                generated, first_logp = self._generate_batch(
                    [seqs[r] for r in rows], max_new_tokens, temperature, top_p, generator
                )
            for i, (r, toks) in enumerate(zip(rows, generated)):
                outputs[r] = toks
                if first_ids is not None:
                    scores[r] = first_logp[i, first_ids[r]].cpu().numpy().astype(np.float64)
        texts = [prefix + self.tokenizer.decode(o, skip_special_tokens=True) for o in outputs]
        self._account(agent, mode, seqs, sum(map(len, outputs)), start, truncated)
        return texts, (scores if first_ids is not None else None)

    def _generate_batch(self, seqs, max_new_tokens, temperature, top_p, generator):
        """Token ids generated per row (stop token cut) and the first step's log-probs."""
        cache, logp, mask, pos = self._prefill(seqs)
        first_logp = logp
        stop = torch.tensor(self.stop_ids, device=self.device)
        done = torch.zeros(len(seqs), dtype=torch.bool, device=self.device)
        tokens = []
        for step in range(max_new_tokens):
            nxt = self._pick(logp, temperature, top_p, generator)
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            tokens.append(nxt)
            done |= torch.isin(nxt, stop)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos + 1
            logits = self._forward(cache, input_ids=nxt[:, None], attention_mask=mask, position_ids=pos)
            logp = torch.log_softmax(logits[:, -1].float(), -1)
        result = []
        steps = torch.stack(tokens, dim=1).tolist() if tokens else [[] for _ in seqs]
        for row in steps:
            cut = next((i for i, t in enumerate(row) if t in self.stop_ids), len(row))
            result.append(row[:cut])
        return result, first_logp

    @staticmethod
    def _pick(logp: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
        if temperature <= 0:
            return logp.argmax(-1)
        probs = torch.softmax(logp / temperature, -1)
        if top_p < 1.0:
            sorted_p, idx = probs.sort(-1, descending=True)
            keep = sorted_p.cumsum(-1) - sorted_p < top_p
            probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p * keep)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    # --------------------------------------------------------------- scoring
    @torch.inference_mode()
    def score_options(
        self,
        chats: Sequence[Messages],
        options: Sequence[Sequence[str]],
        *,
        prefix: str = "",
        agent: str = "default",
        mode: str = "score",
    ) -> list[np.ndarray]:
        """Log-likelihood of each option written right after ``prefix``.

        ``options[b]`` are the continuations to compare for chat ``b`` (e.g.
        " A", " B", ...). Single-token options cost one forward pass over the
        prompts; longer ones reuse the prompt's KV cache for a second, short
        pass over all options at once.
        """
        if len(options) != len(chats):
            raise ValueError(f"{len(chats)} chats but {len(options)} option lists")
        start = self._begin_call()
        seqs, truncated = self._encode([self.prompt_text(c, prefix) for c in chats])
        opt_ids = [self.tokenizer(list(o), add_special_tokens=False)["input_ids"] if len(o) else [] for o in options]
        result: list[np.ndarray] = [np.zeros(0)] * len(seqs)
        for rows in self._chunks(seqs):
            batch_opts = [opt_ids[r] for r in rows]
            single = all(len(t) == 1 for o in batch_opts for t in o)
            with self.autocast():
                cache, logp, mask, pos = self._prefill([seqs[r] for r in rows], keep_cache=not single)
                if single:
                    scores = [logp[i, [t[0] for t in o]].cpu().numpy() for i, o in enumerate(batch_opts)]
                else:
                    scores = self._score_long(cache, logp, mask, pos, batch_opts)
            for r, s in zip(rows, scores):
                result[r] = s.astype(np.float64)
        self._account(agent, mode, seqs, 0, start, truncated)
        return result

    def _score_long(self, cache, logp, mask, pos, batch_opts) -> list[np.ndarray]:
        """Sum of token log-probs of multi-token options, all rows at once."""
        n_opt = max(len(o) for o in batch_opts)
        width = max((len(t) for o in batch_opts for t in o), default=1)
        rows = len(batch_opts)
        ids = torch.full((rows * n_opt, width), self.pad_id, dtype=torch.long)
        valid = torch.zeros((rows * n_opt, width), dtype=torch.bool)
        for i, opts in enumerate(batch_opts):
            for j, toks in enumerate(opts):
                ids[i * n_opt + j, : len(toks)] = torch.tensor(toks)
                valid[i * n_opt + j, : len(toks)] = True
        ids, valid = ids.to(self.device), valid.to(self.device)
        first = logp.repeat_interleave(n_opt, 0).gather(1, ids[:, :1]).squeeze(1)
        total = first
        if width > 1:
            cache.batch_repeat_interleave(n_opt)
            mask = torch.cat([mask.repeat_interleave(n_opt, 0), valid.long()], dim=1)
            positions = pos.repeat_interleave(n_opt, 0) + torch.arange(1, width + 1, device=self.device)
            logits = self._forward(cache, input_ids=ids, attention_mask=mask, position_ids=positions)
            follow = torch.log_softmax(logits[:, :-1].float(), -1).gather(2, ids[:, 1:, None]).squeeze(2)
            total = total + (follow * valid[:, 1:]).sum(1)
        total = total.view(rows, n_opt).cpu().numpy()
        return [total[i, : len(o)] for i, o in enumerate(batch_opts)]

    @torch.inference_mode()
    def score_slots(
        self,
        prompts: Sequence[JudgePrompt],
        answer_ids: tuple[int, int],
        *,
        agent: str = "default",
        mode: str = "judge",
    ) -> list[np.ndarray]:
        """Judgement-slot scores (:mod:`policies.llm.judge`): for each prompt,
        logit(yes) - logit(no) at each of its slot positions, from one forward
        pass per prompt. The system-message prefix shared by all prompts is
        run once (and kept across calls with ``keep_prefixes``)."""
        start = self._begin_call()
        too_long = [i for i, p in enumerate(prompts) if len(p.ids) > self.max_prompt_tokens]
        if too_long:
            raise ValueError(
                f"{len(too_long)} judge prompt(s) exceed {self.max_prompt_tokens} tokens (first: "
                f"{len(prompts[too_long[0]].ids)}); show fewer history items or candidates"
            )
        direction = answer_direction(self.model, answer_ids).float()
        seqs = [p.ids for p in prompts]
        result: list[np.ndarray] = [np.zeros(0)] * len(prompts)
        with self.autocast():
            for rows in self._chunks(seqs):
                batch = [seqs[r] for r in rows]
                first_slot = min(prompts[r].slots[0] for r in rows if prompts[r].slots) if any(prompts[r].slots for r in rows) else None
                n, prefix = self._shared_prefix(batch, limit=first_slot)
                self._cached_tokens += n * len(batch)
                for r in rows:
                    prompt = prompts[r]
                    if not prompt.slots:
                        continue
                    cache = self._new_cache(prefix)
                    out = self.model(
                        input_ids=torch.tensor([prompt.ids[n:]], device=self.device),
                        position_ids=torch.arange(n, len(prompt.ids), device=self.device)[None],
                        output_hidden_states=True,
                        logits_to_keep=1,
                        use_cache=True,
                        **{self._cache_kw: cache},
                    )
                    hidden = out.hidden_states[-1][0].float()
                    at = torch.tensor(prompt.slots, device=self.device) - n
                    result[r] = (hidden[at] @ direction).float().cpu().numpy().astype(np.float64)
        self._account(agent, mode, seqs, 0, start, 0)
        return result

    def autocast(self):
        """bf16 autocast when this backend computes in bf16 (see :func:`policies.llm.models.bf16_native`), else a no-op."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    # ------------------------------------------------------------ accounting
    def _account(self, agent: str, mode: str, seqs, completion_tokens: int, start: float, truncated: int) -> None:
        entry = self._stats[(agent, mode)]
        entry["calls"] += len(seqs)
        entry["batches"] += -(-len(seqs) // self.batch_size)
        entry["prompt_tokens"] += sum(map(len, seqs))
        entry["cached_tokens"] += self._cached_tokens
        self._cached_tokens = 0
        entry["completion_tokens"] += completion_tokens
        entry["seconds"] += time.perf_counter() - start
        entry["truncated_prompts"] += truncated

    def stats(self, agent: str | None = None) -> dict[str, float]:
        """Flat cost counters: ``<mode>_<counter>`` per mode plus ``llm_<counter>``
        totals, for one agent (``agent``) or for all agents sharing this backend."""
        out: dict[str, float] = {}
        for (who, mode), entry in sorted(self._stats.items()):
            if agent is not None and who != agent:
                continue
            for key, value in entry.items():
                out[f"{mode}_{key}"] = out.get(f"{mode}_{key}", 0) + value
                out[f"llm_{key}"] = out.get(f"llm_{key}", 0) + value
        return out

    def reset_stats(self) -> None:
        self._stats.clear()

    def clear_prefixes(self) -> None:
        """Forget the kept shared-prefix KV caches (e.g. to time a path from cold)."""
        self._prefixes.clear()


def _common_length(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the common prefix of two token-id arrays."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


def _sliced(cache, n: int, into):
    """``into`` filled with the first ``n`` positions of ``cache`` (views)."""
    for layer, entry in enumerate(cache.layers):
        into.update(entry.keys[..., :n, :], entry.values[..., :n, :], layer)
    return into


_BACKENDS: dict[tuple, LLMBackend] = {}


def get_backend(
    name: str,
    *,
    dtype: str | torch.dtype | None = None,
    threads: int | None = None,
    device: str | None = None,
    batch_size: int = 16,
    seed: int = 0,
    precision: str = "auto",
) -> LLMBackend:
    """A shared backend per model name, so several agents in one run load the
    model once (their costs stay apart through the ``agent`` label).
    ``precision`` "auto" computes in bf16 where the device does so natively
    (:func:`policies.llm.models.use_bf16`), "bf16"/"fp32" force it."""
    key = (name, str(dtype), device, batch_size, seed if name == TINY else 0, precision)  # only tiny's weights are seeded
    if threads is not None and key in _BACKENDS and _BACKENDS[key].device.type == "cpu":
        torch.set_num_threads(threads)  # the CLI's --threads applies to a model loaded earlier too
    if key not in _BACKENDS:
        model, tokenizer = load_model(name, dtype=dtype, threads=threads, device=device, seed=seed, precision=precision)
        _BACKENDS[key] = LLMBackend(model, tokenizer, batch_size=batch_size, keep_prefixes=True)
    return _BACKENDS[key]
