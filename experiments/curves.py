"""The learning-curve figure of a training run: held-out NDCG@10 over training.

Reads the ``curve.csv`` files the training callbacks write
(:mod:`experiments.train.pipeline`): ``sft/curve.csv`` (the judge with no
memory, against SFT examples) and ``rl/curve.csv`` / ``rl-only/curve.csv``
(the whole agent - warm-up walk with its own notes, then the ranking that
reads them - against GRPO steps), and draws both panels into
``learning_curve.png`` in the run folder.
"""
from __future__ import annotations

from pathlib import Path

from experiments.train.common import read_csv
from starec_env.files import atomic_write

FIGURE = "learning_curve.png"


def write_learning_curves(out: Path) -> Path | None:
    """Draw ``out/learning_curve.png``; None when no curve was recorded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    sft = read_csv(out / "sft" / "curve.csv")
    rl = {name: read_csv(out / name / "curve.csv") for name in ("rl", "rl-only")}
    if not sft and not any(rl.values()):
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    if sft:
        left.plot([float(r["examples"]) for r in sft], [100 * float(r["ndcg@10"]) for r in sft], marker="o")
    left.set_xlabel("SFT examples seen")
    left.set_ylabel("held-out NDCG@10 x 100")
    left.set_title("distillation (judge, no memory)")
    for name, rows in rl.items():
        if rows:
            right.plot([float(r["step"]) for r in rows], [100 * float(r["ndcg@10"]) for r in rows], marker="o", label=name)
    right.set_xlabel("GRPO step")
    right.set_title("RL (warm-up notes + judge)")
    if any(rl.values()):
        right.legend(fontsize=8)
    fig.tight_layout()
    path = out / FIGURE
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    plt.close(fig)
    return path
