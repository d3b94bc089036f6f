"""How much can a taste note add over the `genre` first stage? An upper bound for slow thinking.

For each walk length ``k`` the script writes two notes per evaluation user
and reads them onto the candidates with the judge's own note marks
(:func:`policies.llm.judge.note_marks`: + per liked genre or word, - per
disliked one):

* ``oracle``: the oracle teacher's note after the walk
  (:class:`policies.llm.notes.TasteNotes`; privileged: it ranks the genres
  it names by the simulator's true utilities);
* ``grounded``: a note a student could write from what the walk shows -
  the genres and description words of the walked items rated 4-5 (liked)
  or 1-2 (disliked).

The ranking is the `genre` agent's z-scored score plus ``a * likes - d *
dislikes``; (a, d) are fitted on half the users and NDCG@10 is reported on
the other half, beside `genre` alone on that half.

A third note, ``evidence``, says which of the judge's evidence signals
(popularity, genre match, similarity to the history) the user's choices
followed during the walk: per user, the mean z-score of each walked choice
under each signal. It is read as per-user weights on top of the best global
fusion of the three signals (both fitted on the first half), and compared
with that fusion. If the grounded and evidence notes add nothing, no
student note can beat the first stage by reflection in that world: its
information is not in what the agent observes::

    python -m benchmarks.bench_note_value --preset cpu --users 600 --steps 1,3,5
    python -m benchmarks.bench_note_value --dataset ml-100k --users 600 --steps 1,3,5
"""
from __future__ import annotations

import argparse
import itertools
from dataclasses import replace
from typing import Any

import numpy as np

from experiments.config import load_run_config
from experiments.world import load_world
from policies.base import PolicyContext
from policies.llm.evidence import SIGNALS, EvidenceBuilder
from policies.llm.judge import about, note_marks
from policies.llm.notes import TasteNotes
from policies.llm.warmup import plan_walk, step_batch
from policies.registry import make_policy
from starec_env.metrics import ndcg_single, rank_of

#: Weights (a for likes, d for dislikes) tried when fitting a reader on the first half.
GRID = [(a, d) for a in (0.0, 0.1, 0.2, 0.3, 0.5, 0.8) for d in (0.0, 0.2, 0.5, 1.0)]
#: Global weights of the evidence signals, and the per-user weights an evidence note adds to them.
FUSION_GRID = list(itertools.product((0.0, 0.25, 0.5, 1.0, 2.0), repeat=len(SIGNALS)))
FOLLOW_GRID = list(itertools.product((0.0, 0.25, 0.5, 1.0), repeat=len(SIGNALS)))


def grounded_note(item_words: list[list[str]], ratings: list[float]) -> str:
    """Liked / disliked genres and words of the walked items, by their rating."""
    liked = sorted({w for words, r in zip(item_words, ratings) if r >= 4 for w in words})
    disliked = sorted({w for words, r in zip(item_words, ratings) if r <= 2 for w in words} - set(liked))
    parts = ([f"Likes {', '.join(liked)}"] if liked else []) + ([f"dislikes {', '.join(disliked)}"] if disliked else [])
    return "; ".join(parts)


def zscore(scores: np.ndarray) -> np.ndarray:
    """Scores standardised per row (per user's candidate set)."""
    scores = np.asarray(scores, dtype=np.float64)
    return (scores - scores.mean(-1, keepdims=True)) / (scores.std(-1, keepdims=True) + 1e-9)


def note_value(cfg: Any, users: int, steps: list[int], seed: int = 0) -> list[dict]:
    """Rows of {steps, note, first_stage, base, with_note, weights}: held-out
    NDCG@10 x 100 of the first stage alone and with the note read onto it."""
    world = load_world(cfg)
    ds = world.dataset
    proto = replace(cfg.protocol, users=users).leave_one_out(ds, seed)
    batch, target = proto.batch, proto.target_pos
    genre = make_policy("genre", PolicyContext(ds, seed=seed))
    genre.fit(proto.split)
    base = genre.score(batch)
    z = zscore(base)
    evidence = EvidenceBuilder(PolicyContext(ds, seed=seed))
    evidence.fit(proto.split)
    signals = np.stack([zscore(evidence.table(batch).scores[name]) for name in SIGNALS])  # (signal, user, candidate)
    judge = cfg.judge_config("starec")
    words = max(judge.description_words, 2)
    oracle = TasteNotes(ds, world.simulator.utility, description_words=words, noun=judge.noun, seed=cfg.data.seed)
    names = list(ds.genre_names)
    descriptions = list(ds.items["description"])
    genres_of = [[names[j] for j in np.flatnonzero(row)] for row in np.asarray(ds.item_genres)]
    about_of = [about(str(d), words) for d in descriptions]
    fit = np.arange(len(target)) % 2 == 0

    def ndcg(scores: np.ndarray, rows: np.ndarray) -> float:
        return float(100 * ndcg_single(rank_of(scores[rows], target[rows]), 10).mean())

    fusion_w = max(FUSION_GRID, key=lambda w: ndcg(np.tensordot(w, signals, 1), fit))
    fusion = np.tensordot(fusion_w, signals, 1)
    out = []
    for k in steps:
        walks = [plan_walk(ds, int(user), batch.history[r], batch.history_ratings[r], replace(cfg.warmup, steps=k), cfg.data.seed)
                 for r, user in enumerate(batch.users)]
        notes: dict[str, list[str]] = {"oracle": [], "grounded": []}
        for walk in walks:
            notes["oracle"].append(oracle.note(walk.user, [int(i) for c in walk.candidates for i in c]))
            walked = [[g.lower() for g in genres_of[i]] + about_of[i].replace(",", "").lower().split() for i in walk.items]
            notes["grounded"].append(grounded_note(walked, list(walk.ratings)))
        for kind, texts in notes.items():
            likes, dislikes = np.zeros(z.shape), np.zeros(z.shape)
            for r, text in enumerate(texts):
                cands = batch.candidates[r]
                marks = note_marks(text, [genres_of[i] for i in cands], [about_of[i] for i in cands])
                likes[r] = [m.count("+") for m in marks]
                dislikes[r] = [m.count("-") for m in marks]
            a, d = max(GRID, key=lambda w: ndcg(z + w[0] * likes - w[1] * dislikes, fit))
            out.append({"steps": k, "note": kind, "first_stage": "genre", "base": ndcg(base, ~fit),
                        "with_note": ndcg(z + a * likes - d * dislikes, ~fit), "weights": (a, d)})
        follows = np.zeros(signals.shape[:2])
        lengths = np.array([len(w.items) for w in walks])
        for t in range(int(lengths.max(initial=0))):
            rows = np.flatnonzero(lengths > t)
            step = evidence.table(step_batch([walks[r] for r in rows], t, cfg.protocol.history_len)).scores
            chosen = [walks[r].chosen[t] for r in rows]
            follows[:, rows] += np.stack([zscore(step[name])[np.arange(len(rows)), chosen] for name in SIGNALS]) / lengths[rows]
        def followed(c: tuple, follows: np.ndarray = follows) -> np.ndarray:
            return fusion + np.einsum("s,su,suc->uc", c, follows, signals)

        c = max(FOLLOW_GRID, key=lambda c: ndcg(followed(c), fit))
        out.append({"steps": k, "note": "evidence", "first_stage": "fusion", "base": ndcg(fusion, ~fit),
                    "with_note": ndcg(followed(c), ~fit), "weights": c})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--dataset", default=None, help="e.g. ml-100k (default: the preset's world)")
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--steps", default="1,3,5", help="walk lengths, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = load_run_config(preset=args.preset, overrides={"data": {"dataset": args.dataset}} if args.dataset else None)
    rows = note_value(cfg, args.users, [int(s) for s in args.steps.split(",")], args.seed)
    print(f"{'steps':>5} {'note':>9} {'first stage':>12} {'alone':>6} {'+ note':>7} {'gain':>6}  weights")
    for row in rows:
        print(f"{row['steps']:>5} {row['note']:>9} {row['first_stage']:>12} {row['base']:6.2f} {row['with_note']:7.2f} "
              f"{row['with_note'] - row['base']:+6.2f}  {row['weights']}")
    print(f"NDCG@10 x 100 on the held-out half of {args.users} users (reader fitted on the other half); weights: "
          f"(likes, dislikes) for the marks, per-user weights on {', '.join(SIGNALS)} for the evidence note")


if __name__ == "__main__":
    main()
