"""Training data of the judge agents: decisions, their warm-up walks, and rows.

A *decision* is what a user agent faces when it ranks: a user's history up
to a positive item of their training interactions, and that item among
unseen negatives (the paper's protocol, applied to training data). Its
*walk* is the same memory warm-up an evaluated agent runs
(:func:`policies.llm.warmup.plan_walk`): the last ``warmup.steps`` items
before the decision. The rows built here therefore match evaluation exactly:

* **judge rows** (SFT): the decision's judge prompt, pre-tokenized, with the
  slot positions and the teacher's target distribution over the candidates
  (the softmax of the simulator's choice logits). The prompt shows the
  teacher's note after the walk (``memory``), no note (``plain``) or the
  walked items as plain lines (``append``), so one student serves the STARec
  row, its fast-only form and the no-reflection ablation.
* **note rows**: at each walk step, the reflection prompt (the agent's order
  of the step's candidates, what the user chose and rated) and, for SFT, the
  oracle's reflection (:class:`policies.llm.notes.TasteNotes`). GRPO gets
  the prompts with the follow-up decision - the next ranking of the walk,
  or the decision itself after the last step - on which the rewritten note
  is scored.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd

from experiments.config import ProtocolSection
from experiments.train.rollout import protocol_states, view_of
from experiments.world import World
from policies.base import PolicyContext
from policies.llm.evidence import EvidenceBuilder, EvidenceTable
from policies.llm.formats import REFLECT
from policies.llm.judge import HistoryMode, JudgeEncoder, choice_targets, display_order, evidence_text, shown_history
from policies.llm.notes import TasteNotes
from policies.llm.warmup import Walk, WarmupConfig, plan_walk, step_batch
from starec_env.types import RankingBatch, TrainSplit

#: Judge-row variants and the agent rows that rank that way.
VARIANTS: tuple[HistoryMode, ...] = ("memory", "plain", "append")
#: Stands for the note in a follow-up prompt until a completion's note fills it in.
NOTE_SLOT = "\ue001"


@dataclass
class Decisions:
    """Training decisions: the batch ranked, the positive's position, the
    simulator's choice logits over the candidates, each decision's walk, the
    training data without these decisions' targets (``split``, what agents
    ranking them may fit on) and the evidence scorers fitted on it (or None)."""

    batch: RankingBatch
    target_pos: np.ndarray
    choice: np.ndarray
    walks: list[Walk]
    split: TrainSplit
    evidence: EvidenceBuilder | None = None

    def __len__(self) -> int:
        return len(self.batch)


def make_decisions(world: World, interactions: pd.DataFrame, users: np.ndarray, protocol: ProtocolSection, warmup: WarmupConfig,
                   rng: np.random.Generator, *, walk_seed: int = 0, per_user: int = 1, evidence: bool = True) -> Decisions:
    """The last ``per_user`` positives of each user's training interactions as
    decisions (as the protocol draws held-out ones), with their walks and
    evidence scorers fitted on what precedes them."""
    ds = world.dataset
    states, seen = protocol_states(ds, interactions, users, protocol, rng, per_user)
    batch = states.batch
    walks = [plan_walk(ds, int(u), batch.history[r], batch.history_ratings[r], warmup, walk_seed)
             for r, u in enumerate(batch.users)]
    choice = np.asarray(world.simulator.choice_logit(batch.users, batch.candidates), dtype=np.float64)
    split = TrainSplit(ds, seen, np.unique(batch.users))
    scorers = None
    if evidence:
        scorers = EvidenceBuilder(PolicyContext(ds, seed=walk_seed))
        scorers.fit(split)
    return Decisions(batch, states.target_pos, choice, walks, split, scorers)


class RowBuilder:
    """Renders decisions into rows with the agents' own encoder and history rule.

    ``notes`` is the oracle's :class:`~policies.llm.notes.TasteNotes`;
    the evidence comes with each :class:`Decisions` (None: the no-evidence
    ablation); ``max_words`` / ``reflect_top`` as in the agents' prompt
    settings.
    """

    def __init__(self, world: World, encoder: JudgeEncoder, notes: TasteNotes, warmup: WarmupConfig,
                 *, max_words: int = 40, reflect_top: int = 5, target_temperature: float = 1.0) -> None:
        self.world = world
        self.dataset = world.dataset
        self.encoder = encoder
        self.notes = notes
        self.warmup = warmup
        self.max_words = max_words
        self.reflect_top = reflect_top
        self.target_temperature = target_temperature
        self.descriptions = world.dataset.items["description"].to_numpy()

    # ------------------------------------------------------------- judge rows
    def _evidence(self, decisions: Decisions, batch: RankingBatch) -> tuple[EvidenceTable | None, np.ndarray]:
        """The evidence table (or None) and the listing order of ``batch``'s candidates."""
        table = decisions.evidence.table(batch) if decisions.evidence is not None else None
        return table, display_order(self.encoder.config.order, table.scores if table else None, batch.candidates.shape)

    def judge_messages(self, batch: RankingBatch, row: int, table: EvidenceTable | None, order: np.ndarray, mode: HistoryMode, note: str) -> list:
        view = view_of(self.dataset, batch, row)
        take = shown_history(len(view.history), mode, self.encoder.config.history, self.warmup.steps)
        rows = view.history[take]
        descriptions = [str(d) for d in self.descriptions[np.asarray(view.history_items, dtype=np.int64)[take]]]
        evidence = evidence_text(table.ranks, row) if table is not None else None
        return self.encoder.messages(view, note if mode == "memory" else "", evidence, rows, descriptions, order=order[row])

    def walk_notes(self, decisions: Decisions, row: int) -> list[str]:
        """The oracle's note after each step of the decision's walk."""
        walk, seen, out = decisions.walks[row], [], []
        for cands in walk.candidates:
            seen.extend(int(i) for i in cands)
            out.append(self.notes.note(walk.user, seen))
        return out

    def judge_rows(self, decisions: Decisions, modes: list[HistoryMode]) -> list[dict]:
        """Pre-tokenized judge rows (``input_ids``, ``labels`` all -100,
        ``slots``, ``targets``), one per decision in the given mode."""
        table, order = self._evidence(decisions, decisions.batch)
        targets = choice_targets(decisions.choice, self.target_temperature)
        out = []
        for r, mode in enumerate(modes):
            notes = self.walk_notes(decisions, r) if mode == "memory" else []
            note = notes[-1] if notes else ""
            prompt = self.encoder.encode(self.judge_messages(decisions.batch, r, table, order, mode, note))
            out.append({"input_ids": prompt.ids, "labels": [-100] * len(prompt.ids), "slots": prompt.slots,
                        "targets": [float(t) for t in targets[r][order[r]]], "kind": "judge"})  # in listed order
        return out

    # -------------------------------------------------------------- note rows
    def note_steps(self, decisions: Decisions, guess: str = "genre") -> Iterator[dict]:
        """Every walk step of every decision: the note prompt (the agent's order
        by the ``guess`` evidence signal), the oracle's answer and the
        follow-up state the rewritten note is scored on."""
        walks = decisions.walks
        listing = self._evidence(decisions, decisions.batch)
        for step in range(max((len(w.candidates) for w in walks), default=0)):
            rows = [r for r, w in enumerate(walks) if step < len(w.candidates)]
            if not rows:
                continue
            sub = step_batch([walks[r] for r in rows], step, decisions.batch.history.shape[1])
            table = decisions.evidence.table(sub) if decisions.evidence is not None else None
            scores = table.scores[guess] if table is not None and guess in table.scores else np.zeros(sub.candidates.shape)
            for i, r in enumerate(rows):
                walk = walks[r]
                view = view_of(self.dataset, sub, i)
                order = [int(j) for j in np.argsort(-scores[i], kind="stable")]
                chosen = walk.chosen[step]
                notes = self.walk_notes(decisions, r)
                before = notes[step - 1] if step else ""
                messages = self.encoder.note_messages(view, before, predicted=order, chosen=chosen,
                                                      rating=walk.ratings[step], max_words=self.max_words, top=self.reflect_top)
                seen = [int(j) for s in range(step + 1) for j in walk.candidates[s]]
                answer = self.notes.reflection(walk.user, seen, genres=view.candidates[chosen][1],
                                               rank=order.index(chosen) + 1, n=len(order), rating=walk.ratings[step])
                yield {"decision": r, "step": step, "user": walk.user, "prompt": messages, "answer": answer,
                       "followup": self._followup(decisions, r, step, listing)}

    def _followup(self, decisions: Decisions, row: int, step: int, listing: tuple[EvidenceTable | None, np.ndarray]) -> dict:
        """The ranking a note written at ``step`` is scored on: the walk's next
        step, or the decision itself after the last step (with the choice
        probabilities of its candidates, the position of what the user took
        and the order the prompt lists the candidates in)."""
        walk = decisions.walks[row]
        if step + 1 < len(walk.candidates):
            batch = step_batch([walk], step + 1, decisions.batch.history.shape[1])
            table, order = self._evidence(decisions, batch)
            messages = self.judge_messages(batch, 0, table, order, "memory", NOTE_SLOT)
            listed = order[0]
            target = walk.chosen[step + 1]
            choice = np.asarray(self.world.simulator.choice_logit(batch.users, batch.candidates), dtype=np.float64)[0]
        else:
            table, order = listing
            messages = self.judge_messages(decisions.batch, row, table, order, "memory", NOTE_SLOT)
            listed = order[row]
            target = int(decisions.target_pos[row])
            choice = decisions.choice[row]
        probs = choice_targets(np.asarray(choice)[None], self.target_temperature)[0]
        return {"messages": messages, "target": int(target), "choice": [float(c) for c in probs],
                "order": [int(i) for i in listed]}

    def note_sft_row(self, step: dict) -> dict:
        """A note step as a pre-tokenized SFT row: NLL on the oracle's answer only."""
        tok = self.encoder.tokenizer
        prompt = tok.apply_chat_template(step["prompt"], add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(step["prompt"] + [{"role": "assistant", "content": step["answer"]}], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template does not extend the prompt with the answer; cannot mask the prompt")
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tok(full[len(prompt):], add_special_tokens=False)["input_ids"]
        return {"input_ids": p_ids + c_ids, "labels": [-100] * len(p_ids) + c_ids, "slots": [], "targets": [], "kind": "note"}


def note_prompt_row(step: dict, note_before: str | None = None) -> dict:
    """A note step as a GRPO row: chat prompt plus the follow-up state as JSON
    (its :data:`NOTE_SLOT` is filled with each completion's note)."""
    prompt = step["prompt"]
    if note_before is not None:  # continue from the policy's own earlier note
        prompt = [dict(m) for m in prompt]
        prompt[-1]["content"] = _replace_note(prompt[-1]["content"], note_before)
    follow = step["followup"]
    return {"prompt": prompt, "mode": REFLECT.name, "target": follow["target"], "utilities": follow["choice"],
            "candidate_ids": [str(i) for i in range(len(follow["choice"]))], "user": step["user"],
            "memory_key": f"{step['user']}:{step['decision']}:{step['step']}",
            "state": json.dumps({"messages": follow["messages"], "order": follow["order"]})}


def _replace_note(content: str, note: str) -> str:
    lines = content.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("Note: "):
            lines[i] = "Note: " + (note or "(none yet)")
            break
    return "\n".join(lines)
