"""Behaviour models: the base-class split, the typed truth and the one-way layering."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from starec_env.behaviour import (
    ChoiceModel,
    EmbeddingUserModel,
    MultinomialLogit,
    OrdinalRatings,
    SyntheticTruth,
    UserModel,
)
from starec_env.data import PreprocessConfig, load_dataset
from starec_env.simulator import build_simulator
from starec_env.simulator.preference import PreferenceModel


@pytest.fixture(scope="module")
def world():
    return load_dataset("synthetic", seed=0, n_users=60, n_items=80)


class _FavouriteFirst(ChoiceModel):
    """Every user picks ``favourite`` first, then the rest of the catalogue by index."""

    def __init__(self, n_items: int, favourite: int) -> None:
        self._n_items, self.favourite = n_items, favourite

    @property
    def n_items(self) -> int:
        return self._n_items

    def logits(self, users: np.ndarray) -> np.ndarray:
        logits = np.tile(-100.0 * np.arange(self._n_items, dtype=np.float32), (len(users), 1))
        logits[:, self.favourite] = 1e4
        return logits


def test_a_custom_choice_model_samples_sequences() -> None:
    rows, items = _FavouriteFirst(6, favourite=4).sequences(np.array([7, 3, 9]), np.array([3, 1, 6]), np.random.default_rng(0))
    assert rows.tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 2, 2]
    assert items.tolist() == [4, 0, 1, 4, 4, 0, 1, 2, 3, 5]


class _LikesEvenItems(UserModel):
    """A user model that is no embedding: even items are worth 1, odd ones 0."""

    def utility(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return (np.asarray(items) % 2 == 0).astype(np.float32)

    def full(self, users: np.ndarray) -> np.ndarray:
        return self.utility(users, np.broadcast_to(np.arange(10), (len(users), 10)))


def test_multinomial_logit_takes_any_user_model() -> None:
    choice = MultinomialLogit(_LikesEvenItems(), temperature=0.05, item_bias=np.zeros(10, np.float32))
    rows, items = choice.sequences(np.arange(200), np.full(200, 5), np.random.default_rng(1))
    assert len(rows) == 1000 and np.all(items % 2 == 0)  # 20 logits apart: odd items essentially never


def test_truth_choice_logits_are_the_generators(world) -> None:
    truth = world.truth
    bias = (truth.popularity_weight * truth.log_exposure).astype(np.float32)
    choice = MultinomialLogit(truth, truth.temperature, bias)
    users = np.array([0, 5, 9])
    np.testing.assert_allclose(choice.logits(users), truth.full(users) / truth.temperature + bias, rtol=1e-6)
    np.testing.assert_allclose(truth.full(users)[:, :3], truth.utility(users, np.broadcast_to(np.arange(3), (3, 3))), rtol=1e-5, atol=1e-6)


def test_simulator_models_are_behaviour_models(world) -> None:
    sim = build_simulator(world)
    assert isinstance(world.truth, SyntheticTruth) and isinstance(world.truth, EmbeddingUserModel)
    assert isinstance(sim.preference, PreferenceModel) and isinstance(sim.preference, UserModel)
    utility = np.linspace(-2, 2, 50, dtype=np.float32)
    rating = OrdinalRatings(sim.response.rating_thresholds, sim.response.rating_noise)
    np.testing.assert_array_equal(sim.response.rate(utility, np.random.default_rng(3)), rating.rate(utility, np.random.default_rng(3)))


def test_embedding_widths_must_match() -> None:
    with pytest.raises(ValueError, match="PreferenceModel: user and item embeddings differ in width"):
        PreferenceModel(np.zeros((2, 3), np.float32), np.zeros((4, 2), np.float32), 1)


def test_truth_is_typed_and_follows_subsets(world) -> None:
    assert "truth" not in world.meta
    users, items = np.array([4, 1, 7]), np.arange(10, 40)
    sub = world.subset(users, items)
    np.testing.assert_array_equal(sub.truth.user_emb, world.truth.user_emb[users])
    np.testing.assert_array_equal(sub.truth.log_exposure, world.truth.log_exposure[items])
    cut = load_dataset("synthetic", seed=0, n_users=60, n_items=80, preprocess=PreprocessConfig(kcore=12, max_users=20))
    assert cut.truth.user_emb.shape[0] == cut.n_users and cut.truth.item_emb.shape[0] == cut.n_items
    assert replace(world, truth=None).truth is None and build_simulator(replace(world, truth=None), seed=0).fit_stats["source"] == "fitted"


def test_layers_stay_one_way() -> None:
    """behaviour imports nothing of the package; the data layer (generator included) never imports the simulator."""
    code = (
        "import sys, starec_env.behaviour; assert not [m for m in sys.modules if m.startswith('starec_env.') "
        "and m != 'starec_env.behaviour'], sorted(sys.modules)\n"
        "import starec_env.data.synthetic; from starec_env.data import load_dataset; load_dataset('synthetic', n_users=5, n_items=20)\n"
        "assert not [m for m in sys.modules if m.startswith(('starec_env.simulator', 'policies', 'experiments'))]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
