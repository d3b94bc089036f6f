"""GRU4Rec / SASRec baselines: they learn predictable sequences, are seeded, and respect the variants."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from policies.base import PolicyContext
from policies.registry import make_policy
from policies.sequential import SeqConfig, SequentialPolicy, build_sequences
from starec_env.data.model import Dataset, build_dataset
from starec_env.metrics import ndcg_single
from starec_env.protocol import LeaveOneOut
from starec_env.types import PAD, RankingBatch

torch.set_num_threads(1)

TINY = {"dim": 32, "epochs": 40, "patience": 5, "train_batch_size": 16, "max_len": 20, "val_negatives": 20}
#: expected NDCG@10 of a random ranking of 1 target among 20 candidates
RANDOM_NDCG10 = float(ndcg_single(np.arange(20), 10).mean())


def cyclic_world(n_users: int = 60, n_items: int = 60, seed: int = 0) -> Dataset:
    """Users walk one hidden cycle over the catalogue: the next item follows from the last one."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_items)
    nxt = np.empty(n_items, dtype=np.int64)
    nxt[perm] = np.roll(perm, -1)
    rows = []
    for u in range(n_users):
        item = int(rng.integers(n_items))
        for t in range(int(rng.integers(12, 25))):
            rows.append((f"u{u}", f"i{item}", 4.0, t))
            item = int(nxt[item])
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "title": [f"Item {i}" for i in range(n_items)]})
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(n_users)]})
    return build_dataset("cyclic", items, users, inter)


@pytest.fixture(scope="module")
def protocol() -> LeaveOneOut:
    return LeaveOneOut(cyclic_world(), n_users=30, history_len=10, seed=0)


def _fit(arch: str, variant: str, proto: LeaveOneOut, seed: int = 0, **options) -> SequentialPolicy:
    policy = SequentialPolicy(arch, variant, SeqConfig.from_dict({**TINY, **options}), seed=seed)
    policy.fit(proto.split)
    return policy


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gru4rec", "sasrec"])
def test_learns_cyclic_sequences(arch: str, protocol: LeaveOneOut) -> None:
    policy = _fit(arch, "full", protocol)
    result = protocol.evaluate(policy.score(protocol.batch))
    assert RANDOM_NDCG10 < 0.4
    assert result["ndcg@10"] > 0.9, result
    stats = policy.stats()
    assert stats["epochs"] >= stats["best_epoch"] >= 1
    assert stats["train_s"] > 0 and stats["score_s"] > 0
    assert stats["val_score"] > 0.8


@pytest.mark.slow
def test_original_bce_loss_also_learns(protocol: LeaveOneOut) -> None:
    policy = _fit("sasrec", "full", protocol, loss="bce")
    assert protocol.evaluate(policy.score(protocol.batch))["ndcg@10"] > 0.7


@pytest.mark.parametrize("arch", ["gru4rec", "sasrec"])
def test_same_seed_same_scores(arch: str, protocol: LeaveOneOut) -> None:
    state = torch.get_rng_state()
    a = _fit(arch, "sample", protocol, seed=3, epochs=3).score(protocol.batch)
    b = _fit(arch, "sample", protocol, seed=3, epochs=3).score(protocol.batch)
    c = _fit(arch, "sample", protocol, seed=4, epochs=3).score(protocol.batch)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert torch.equal(state, torch.get_rng_state()), "training must not disturb the global torch RNG"


def test_sample_and_full_variants_train_on_different_data(protocol: LeaveOneOut) -> None:
    split = protocol.split
    sample = _fit("sasrec", "sample", protocol, epochs=1)
    full = _fit("sasrec", "full", protocol, epochs=1)
    assert sample.stats()["train_interactions"] == len(split.for_variant("sample"))
    assert full.stats()["train_interactions"] == len(split.for_variant("full"))
    assert sample.stats()["train_interactions"] < full.stats()["train_interactions"]
    assert sample.stats()["train_fraction"] < full.stats()["train_fraction"] == 1.0


def test_windows_cover_every_transition_once() -> None:
    inter = pd.DataFrame({"user": [0] * 12 + [1] * 2 + [2], "item": list(range(12)) + [3, 4] + [5],
                          "rating": 4.0, "timestamp": list(range(12)) + [0, 1] + [0]})
    data = build_sequences(inter, n_items=12, max_len=4, val_negatives=5, rng=np.random.default_rng(0))
    pairs = sorted((int(a), int(b)) for x, y in zip(data.inputs, data.targets) for a, b in zip(x, y) if b)
    # user 0: last item (11) held out for validation, transitions 0->1 .. 9->10; user 1: 3->4; user 2: none
    assert pairs == sorted([(i + 1, i + 2) for i in range(10)] + [(4, 5)])
    assert data.val_cands[:, 0].tolist() == [12]  # shifted id of item 11
    assert data.popularity.sum() == len(inter)


def test_validation_negatives_avoid_seen_items() -> None:
    inter = pd.DataFrame({"user": [0] * 5, "item": [0, 1, 2, 3, 4], "rating": 4.0, "timestamp": range(5)})
    data = build_sequences(inter, n_items=40, max_len=10, val_negatives=30, rng=np.random.default_rng(1))
    assert not set(data.val_cands[0, 1:].tolist()) & {1, 2, 3, 4, 5}


def test_empty_history_falls_back_to_popularity(protocol: LeaveOneOut) -> None:
    policy = _fit("gru4rec", "full", protocol, epochs=1)
    b = protocol.batch.take(np.arange(3))
    empty = RankingBatch(b.users, b.candidates, np.full_like(b.history, PAD), np.zeros_like(b.history_ratings))
    scores = policy.score(empty)
    np.testing.assert_allclose(scores, np.log1p(policy.popularity[b.candidates]))
    assert np.isfinite(policy.score(b)).all()


def test_registry_factories_and_options(protocol: LeaveOneOut) -> None:
    ctx = PolicyContext(protocol.dataset, seed=1, options={"dim": 16, "epochs": 1, "threads": None})
    for name, variant, arch in [("sasrec", "sample", "sasrec"), ("gru4rec-full", "full", "gru4rec")]:
        policy = make_policy(name, ctx)
        assert (policy.name, policy.variant, policy.arch, policy.cfg.dim) == (name, variant, arch, 16)
    with pytest.raises(ValueError, match="dropuot"):
        make_policy("sasrec-full", PolicyContext(protocol.dataset, options={"dropuot": 0.1}))
    with pytest.raises(ValueError, match="loss"):
        SeqConfig(loss="hinge")
    with pytest.raises(RuntimeError, match="fit"):
        make_policy("sasrec", ctx).score(protocol.batch)


def test_shipped_ml100k_benchmark_config_builds_every_policy(protocol: LeaveOneOut) -> None:
    from pathlib import Path

    from experiments.config import load_run_config

    cfg = load_run_config(Path(__file__).parents[1] / "benchmarks" / "ml100k_classic.toml")
    assert cfg.data.dataset == "ml-100k" and len(cfg.seeds) >= 3
    for name in cfg.policies:
        ctx = PolicyContext(protocol.dataset, options=cfg.policy_options(name))
        if name == "oracle":  # privileged: the runner hands it the simulator, never a bare context
            with pytest.raises(ValueError, match="simulator"):
                make_policy(name, ctx)
            continue
        assert make_policy(name, ctx).name == name
