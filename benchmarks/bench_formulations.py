"""Which fast-thinking formulation learns most per CPU-hour? Held-out NDCG@10 against training tokens.

Three ways for the student to read a user's text view and score all 20
candidates, trained on the same decisions, with the same teacher targets
(the oracle's choice distribution) and the same listwise loss, so only the
formulation differs:

* ``judge`` (what STARec uses, :mod:`policies.llm.judge`): one sequence,
  candidate lines each ending in a judgement slot; the score is
  logit(" yes") - logit(" no") at the slot;
* ``pointwise``: one short yes/no question per candidate after a shared
  user prefix whose keys/values are computed once per user (KV reuse, in
  training as in inference);
* ``pointer``: the previous formulation - the same list with identifiers,
  answered with "Ranking:"; the score is the log-probability of each
  candidate's identifier as the first one ranked.

Every ``--eval-every`` training tokens each formulation is scored on the
same held-out decisions (users outside the training set). The script
prints the curves and a tokens-per-second figure, and writes
``formulations.csv`` / ``formulations.png`` into ``--out``. Training runs
under bf16 autocast where the CPU computes bf16 natively::

    python -m benchmarks.bench_formulations --tokens 150000 --out runs/formulations
"""
from __future__ import annotations

import argparse
import csv
import inspect
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.config import load_run_config
from experiments.train.pipeline import decisions_for, prepare
from experiments.train.rollout import view_of
from policies.base import PolicyContext
from policies.llm.formats import RANKING_PREFIX
from policies.llm.judge import JudgeEncoder, choice_targets, evidence_text, listwise_loss, shown_history, slot_scores
from policies.llm.models import load_model, use_bf16
from policies.llm.prompts import candidate_ids
from policies.registry import make_policy
from starec_env.metrics import ndcg_single, rank_of


class Formulation:
    """Builds a decision's inputs once, then scores its candidates (with or without grad)."""

    name = "formulation"

    def __init__(self, model: Any, encoder: JudgeEncoder) -> None:
        self.model = model
        self.encoder = encoder

    def tokens(self, item: dict) -> int:
        raise NotImplementedError

    def scores(self, item: dict) -> torch.Tensor:
        raise NotImplementedError


class Judge(Formulation):
    name = "judge"

    def tokens(self, item: dict) -> int:
        return len(item["judge"].ids)

    def scores(self, item: dict) -> torch.Tensor:
        p = item["judge"]
        return slot_scores(self.model, torch.tensor([p.ids]), None, torch.tensor([p.slots]), self.encoder.answer_ids)[0]


class Pointwise(Formulation):
    """A shared prefix (system, user, history) run once; each candidate's
    question is a suffix read at its last token."""

    name = "pointwise"

    def tokens(self, item: dict) -> int:
        return len(item["prefix"]) + sum(len(s) for s in item["suffixes"])

    def scores(self, item: dict) -> torch.Tensor:
        from transformers import DynamicCache

        prefix = torch.tensor([item["prefix"]])
        out = self.model(input_ids=prefix, use_cache=True)
        n, width = len(item["suffixes"]), max(len(s) for s in item["suffixes"])
        ids = torch.full((n, width), self.encoder.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((n, prefix.shape[1] + width), dtype=torch.long)
        mask[:, : prefix.shape[1]] = 1
        last = []
        for i, s in enumerate(item["suffixes"]):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, prefix.shape[1] : prefix.shape[1] + len(s)] = 1
            last.append(len(s) - 1)
        cache = DynamicCache(config=self.model.config)
        for layer, entry in enumerate(out.past_key_values.layers):
            cache.update(entry.keys.expand(n, *entry.keys.shape[1:]), entry.values.expand(n, *entry.values.shape[1:]), layer)
        positions = prefix.shape[1] + torch.arange(width)[None].expand(n, -1)
        kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        hidden = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True,
                            logits_to_keep=1, **{kw: cache}).hidden_states[-1]
        at = hidden[torch.arange(n), torch.tensor(last)]
        weight = self.model.get_output_embeddings().weight
        yes, no = self.encoder.answer_ids
        return at.float() @ (weight[yes] - weight[no]).float()


class Pointer(Formulation):
    """Identifier likelihoods after "Ranking:" (the listwise pointer)."""

    name = "pointer"

    def tokens(self, item: dict) -> int:
        return len(item["pointer"])

    def scores(self, item: dict) -> torch.Tensor:
        out = self.model(input_ids=torch.tensor([item["pointer"]]), logits_to_keep=1)
        return torch.log_softmax(out.logits[0, -1].float(), -1)[item["pointer_ids"]]


def build_items(cfg: Any, ctx: Any, decisions: Any, tokenizer: Any, encoder: JudgeEncoder) -> list[dict]:
    """Every formulation's inputs for each decision, from the same view, note-free."""
    ranks = decisions.evidence.table(decisions.batch).ranks if decisions.evidence is not None else None
    descriptions = ctx.world.dataset.items["description"].to_numpy()
    targets = choice_targets(decisions.choice, cfg.distill.target_temperature)
    items = []
    for r in range(len(decisions)):
        view = view_of(ctx.world.dataset, decisions.batch, r)
        take = shown_history(len(view.history), "plain", cfg.judge.history, 0)
        hist = view.history[take]
        hist_desc = [str(d) for d in descriptions[np.asarray(view.history_items, dtype=np.int64)[take]]]
        evidence = evidence_text(ranks, r) if ranks is not None else None
        messages = encoder.messages(view, "", evidence, hist, hist_desc)
        judge = encoder.encode(messages)
        # pointwise: the user part before "Candidates:" is the shared prefix, then one question per candidate
        user = messages[-1]["content"]
        head = user.split("Candidates:")[0]
        lines = [line.rsplit(" ->", 1)[0] for line in user.split("Candidates:")[1].strip("\n").split("\n") if line.strip()]
        chat = tokenizer.apply_chat_template([messages[0], {"role": "user", "content": head + "Candidate:"}], tokenize=False)
        prefix_text = chat.rsplit("<|im_end|>", 1)[0] if "<|im_end|>" in chat else chat
        prefix = tokenizer(prefix_text, add_special_tokens=False)["input_ids"]
        suffixes = [tokenizer("\n" + line + " ->", add_special_tokens=False)["input_ids"] for line in lines]
        # pointer: the same lines with identifiers, answered with "Ranking:"
        ids = candidate_ids(len(lines))
        listed = head + "Candidates:\n" + "\n".join(f"[{i}] {line[2:]}" for i, line in zip(ids, lines))
        listed += "\nRank all candidates, best first."
        pointer_text = tokenizer.apply_chat_template([messages[0], {"role": "user", "content": listed}],
                                                     tokenize=False, add_generation_prompt=True) + RANKING_PREFIX
        pointer = tokenizer(pointer_text, add_special_tokens=False)["input_ids"]
        pointer_ids = [tokenizer(" " + i, add_special_tokens=False)["input_ids"][0] for i in ids]
        items.append({"judge": judge, "prefix": prefix, "suffixes": suffixes, "pointer": pointer,
                      "pointer_ids": pointer_ids, "target": torch.tensor(targets[r], dtype=torch.float32),
                      "pos": int(decisions.target_pos[r])})
    return items


def evaluate(form: Formulation, items: list[dict], autocast: bool) -> float:
    form.model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        scores = np.stack([form.scores(item).float().numpy() for item in items])
    form.model.train()
    return float(ndcg_single(rank_of(scores, np.array([i["pos"] for i in items])), 10).mean())


def run(name: str, cls: type, items: list[dict], val: list[dict], args: argparse.Namespace, cfg: Any, bf16: bool) -> list[dict]:
    model, tok = load_model(cfg.model.name, threads=args.threads, seed=cfg.data.seed)
    model.train()
    encoder = JudgeEncoder(tok, cfg.judge)
    form = cls(model, encoder)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    curve = [{"formulation": name, "tokens": 0, "examples": 0, "seconds": 0.0, "ndcg@10": evaluate(form, val, bf16)}]
    print(curve[-1], flush=True)
    seen, examples, next_eval, train_s = 0, 0, args.eval_every, 0.0
    order = np.random.default_rng(cfg.data.seed).permutation(len(items))
    step = 0
    while seen < args.tokens:
        item = items[order[step % len(order)]]
        began = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            scores = form.scores(item)
        loss = listwise_loss(scores[None].float(), item["target"][None], torch.ones(1, len(item["target"]), dtype=torch.bool))
        (loss / args.accum).backward()
        step += 1
        if step % args.accum == 0:
            opt.step()
            opt.zero_grad()
        train_s += time.perf_counter() - began
        seen += form.tokens(item)
        examples += 1
        if seen >= next_eval or seen >= args.tokens:
            next_eval += args.eval_every
            curve.append({"formulation": name, "tokens": seen, "examples": examples, "seconds": round(train_s, 1),
                          "ndcg@10": evaluate(form, val, bf16)})
            print(curve[-1], flush=True)
    return curve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_formulations", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu", help="run preset giving the world, model and prompt settings")
    parser.add_argument("--formulations", default="judge,pointwise,pointer")
    parser.add_argument("--train-users", type=int, default=600)
    parser.add_argument("--val-users", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=150_000, help="training tokens per formulation")
    parser.add_argument("--eval-every", type=int, default=30_000)
    parser.add_argument("--lr", type=float, default=1.5e-4)
    parser.add_argument("--accum", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/formulations")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_run_config(preset=args.preset)
    ctx = prepare(cfg)
    _, tok = load_model(cfg.model.name, threads=args.threads)
    encoder = JudgeEncoder(tok, cfg.judge)
    users = np.unique(ctx.split.interactions["user"].to_numpy(np.int64))
    picked = np.random.default_rng([cfg.data.seed, 9]).permutation(users)
    val_decisions = decisions_for(ctx, np.sort(picked[: args.val_users]), np.random.default_rng(1))
    val = build_items(cfg, ctx, val_decisions, tok, encoder)
    references = reference_rows(ctx, val_decisions)
    train = build_items(cfg, ctx, decisions_for(ctx, np.sort(picked[args.val_users : args.val_users + args.train_users]),
                                                np.random.default_rng(2)), tok, encoder)
    bf16 = use_bf16(cfg.model.precision, "cpu")
    kinds = {"judge": Judge, "pointwise": Pointwise, "pointer": Pointer}
    rows = []
    for name in args.formulations.split(","):
        rows += run(name, kinds[name], train, val, args, cfg, bf16)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "formulations.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "formulations.png")
    print(f"\nwrote {out / 'formulations.csv'} and {out / 'formulations.png'}")
    print("same held-out decisions: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in references.items()))
    for name in args.formulations.split(","):
        mine = [r for r in rows if r["formulation"] == name]
        rate = mine[-1]["tokens"] / max(mine[-1]["seconds"], 1e-9)
        print(f"{name:>10}: NDCG@10 {100 * mine[0]['ndcg@10']:.1f} -> {100 * mine[-1]['ndcg@10']:.1f} after "
              f"{mine[-1]['tokens']:,} tokens ({mine[-1]['examples']} decisions), {rate:.0f} training tokens/s")
    return 0


def reference_rows(ctx: Any, decisions: Any) -> dict[str, float]:
    """NDCG@10 of the rule-based agents and the oracle on the same held-out decisions."""
    out = {}
    for name in ("pop", "genre", "itemknn"):
        policy = make_policy(name, PolicyContext(ctx.world.dataset, seed=0))
        policy.fit(decisions.split)
        out[name] = float(ndcg_single(rank_of(policy.score(decisions.batch), decisions.target_pos), 10).mean())
    out["oracle (upper bound)"] = float(ndcg_single(rank_of(decisions.choice, decisions.target_pos), 10).mean())
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in dict.fromkeys(r["formulation"] for r in rows):
        mine = [r for r in rows if r["formulation"] == name]
        ax.plot([r["tokens"] for r in mine], [100 * r["ndcg@10"] for r in mine], marker="o", label=name)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("held-out NDCG@10 x 100")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
