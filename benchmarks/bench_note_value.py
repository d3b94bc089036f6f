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
the other half, beside `genre` alone on that half. If the grounded note
adds nothing, no student note can beat the first stage by reflection in
that world: its information is not in what the agent observes::

    python -m benchmarks.bench_note_value --preset cpu --users 600 --steps 1,3,5
    python -m benchmarks.bench_note_value --dataset ml-100k --users 600 --steps 1,3,5
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

import numpy as np

from experiments.config import load_run_config
from experiments.world import load_world
from policies.base import PolicyContext
from policies.llm.judge import about, note_marks
from policies.llm.notes import TasteNotes
from policies.llm.warmup import plan_walk
from policies.registry import make_policy
from starec_env.metrics import ndcg_single, rank_of

#: Weights (a for likes, d for dislikes) tried when fitting a reader on the first half.
GRID = [(a, d) for a in (0.0, 0.1, 0.2, 0.3, 0.5, 0.8) for d in (0.0, 0.2, 0.5, 1.0)]


def grounded_note(item_words: list[list[str]], ratings: list[float]) -> str:
    """Liked / disliked genres and words of the walked items, by their rating."""
    liked = sorted({w for words, r in zip(item_words, ratings) if r >= 4 for w in words})
    disliked = sorted({w for words, r in zip(item_words, ratings) if r <= 2 for w in words} - set(liked))
    parts = ([f"Likes {', '.join(liked)}"] if liked else []) + ([f"dislikes {', '.join(disliked)}"] if disliked else [])
    return "; ".join(parts)


def note_value(cfg: Any, users: int, steps: list[int], seed: int = 0) -> list[dict]:
    """Rows of {steps, note, genre, with_marks, a, d}: held-out NDCG@10 x 100."""
    world = load_world(cfg)
    ds = world.dataset
    proto = replace(cfg.protocol, users=users).leave_one_out(ds, seed)
    batch, target = proto.batch, proto.target_pos
    genre = make_policy("genre", PolicyContext(ds, seed=seed))
    genre.fit(proto.split)
    base = genre.score(batch)
    z = (base - base.mean(1, keepdims=True)) / (base.std(1, keepdims=True) + 1e-9)
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

    out = []
    for k in steps:
        notes: dict[str, list[str]] = {"oracle": [], "grounded": []}
        for r, user in enumerate(batch.users):
            walk = plan_walk(ds, int(user), batch.history[r], batch.history_ratings[r],
                             replace(cfg.warmup, steps=k), cfg.data.seed)
            notes["oracle"].append(oracle.note(int(user), [int(i) for c in walk.candidates for i in c]))
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
            out.append({"steps": k, "note": kind, "genre": ndcg(base, ~fit),
                        "with_marks": ndcg(z + a * likes - d * dislikes, ~fit), "a": a, "d": d})
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
    print(f"{'steps':>5} {'note':>9} {'genre':>7} {'+ marks':>8} {'gain':>6}  weights (likes, dislikes)")
    for row in rows:
        print(f"{row['steps']:>5} {row['note']:>9} {row['genre']:7.2f} {row['with_marks']:8.2f} "
              f"{row['with_marks'] - row['genre']:+6.2f}  ({row['a']}, {row['d']})")
    print(f"NDCG@10 x 100 on the held-out half of {args.users} users (reader fitted on the other half)")


if __name__ == "__main__":
    main()
