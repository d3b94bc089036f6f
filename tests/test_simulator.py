"""User simulator: preference, response (MNL, position bias, ratings), dynamics, fit, fidelity."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from starec_env.batched import BatchedEnv
from starec_env.data.model import Dataset
from starec_env.data.synthetic import SyntheticConfig, generate_world
from starec_env.simulator import (
    CandidateSampler,
    SimulatorConfig,
    UserState,
    build_simulator,
    fidelity_report,
)
from starec_env.simulator.fidelity import rating_histogram


@pytest.fixture(scope="module")
def world():
    return generate_world(SyntheticConfig(n_users=150, n_items=300), seed=3)


@pytest.fixture(scope="module")
def sim(world):
    return build_simulator(world, seed=0)


@pytest.fixture(scope="module")
def real_like(world):
    """The same interactions without the ground truth: the simulator must fit them."""
    return Dataset("real-like", world.items, world.users, world.interactions, dict(world.meta))


@pytest.fixture(scope="module")
def fitted(real_like):
    return build_simulator(real_like, SimulatorConfig(fit_epochs=60), seed=0)


def _env(world, sim=None, **kw):
    options = dict(dataset=world, n_users=world.n_users, n_candidates=20, slate_size=5, seed=0, max_cycles=30)
    options.update(kw)
    return BatchedEnv(simulator=sim, **options)


def test_synthetic_simulator_uses_exact_truth(world, sim):
    users = np.arange(10)
    items = np.tile(np.arange(20), (10, 1))
    np.testing.assert_array_equal(sim.utility(users, items), world.truth.utility(users, items))
    assert sim.preference.source == "truth"


def test_position_bias_favours_top_slots(sim):
    logits = np.zeros((1, 5), np.float32)
    items = np.zeros((1, 5), np.int64)
    biased = sim.response.click_probabilities(sim.response.click_logits(logits, items))[0]
    assert np.all(np.diff(biased[:5]) < 0)
    flat = dataclasses.replace(sim.response, position_decay=0.0)
    unbiased = flat.click_probabilities(flat.click_logits(logits, items))[0]
    np.testing.assert_allclose(unbiased[:5], unbiased[0])
    # Sampling follows the probabilities.
    rng = np.random.default_rng(0)
    many = np.repeat(sim.response.click_logits(logits, items), 20000, axis=0)
    freq = np.bincount(sim.response.choose(many, rng), minlength=6) / len(many)
    np.testing.assert_allclose(freq, biased, atol=0.015)


def test_no_click_option_grows_with_its_logit(sim):
    logits = np.zeros((1, 5), np.float32)
    p = [dataclasses.replace(sim.response, no_click_logit=c).click_probabilities(logits)[0, -1] for c in (0.0, 2.0)]
    assert 0 < p[0] < p[1] < 1


@pytest.mark.slow
def test_ratings_are_calibrated_to_the_data(world, sim, real_like, fitted):
    rng = np.random.default_rng(0)
    for ds, model in ((world, sim), (real_like, fitted)):
        util = model.rating_utility(ds.user_arr, ds.item_arr[:, None])[:, 0]
        replay = rating_histogram(model.response.rate(util, rng))
        assert 0.5 * np.abs(np.subtract(replay, rating_histogram(ds.rating_arr))).sum() < 0.05


@pytest.mark.slow
def test_fit_is_seeded_and_learns_the_truth(world, real_like, fitted):
    again = build_simulator(real_like, SimulatorConfig(fit_epochs=60), seed=0)
    np.testing.assert_array_equal(again.preference.user_emb, fitted.preference.user_emb)
    assert fitted.preference.source == "fitted"
    # Unseen pairs get plausible ratings: the rating model and the true utilities agree on random pairs.
    rng = np.random.default_rng(1)
    users = rng.integers(0, world.n_users, 2000)
    items = rng.integers(0, world.n_items, (2000, 1))
    true = world.truth.utility(users, items)[:, 0]
    est = fitted.rating_utility(users, items)[:, 0]
    assert np.corrcoef(true, est)[0, 1] > 0.4


def test_no_re_consumption(world, sim):
    env = _env(world, sim)
    batch = env.reset(seed=1)
    seen = [set(world.item_arr[world.user_offsets[u]:world.user_offsets[u + 1]].tolist()) for u in env.users]
    rng = np.random.default_rng(0)
    for _ in range(25):
        alive = env.alive.copy()
        for r in np.flatnonzero(alive):
            row = batch.candidates[r].tolist()
            assert len(set(row)) == len(row) and not seen[r] & set(row)
        res = env.step(rng.random(batch.candidates.shape))
        for r in np.flatnonzero(res.feedback.clicked >= 0):
            seen[r].add(int(res.feedback.clicked[r]))
        batch = res.batch
        if not env.alive.any():
            break
    clicked = np.flatnonzero(res.feedback.clicked >= 0)
    assert clicked.size and env.state.consumed_rows(clicked)[np.arange(clicked.size), res.feedback.clicked[clicked]].all()


def test_users_leave_when_patience_runs_out(world):
    picky = build_simulator(world, SimulatorConfig(no_click_logit=50.0, no_click_cost=0.25), seed=0)
    env = _env(world, picky, max_cycles=100)
    batch = env.reset(seed=0)
    steps = 0
    while env.alive.any():
        res = env.step(np.zeros(batch.candidates.shape))
        batch, steps = res.batch, steps + 1
        assert not res.truncated.any()
    assert steps == 4  # patience 1.0 / 0.25 per ignored slate
    assert res.terminated.all() and not res.alive.any()
    with pytest.raises(ValueError, match="reset"):
        env.step(np.zeros(batch.candidates.shape))


def test_good_recommendations_keep_users_longer(world, sim):
    env = _env(world, sim, max_cycles=60)
    lengths = {}
    for name, sign in (("oracle", 1.0), ("anti", -1.0)):
        batch = env.reset(seed=2)
        total = 0
        while env.alive.any():
            total += int(env.alive.sum())
            batch = env.step(sign * sim.utility(batch.users, batch.candidates)).batch
        lengths[name] = total / env.n_agents
    assert lengths["oracle"] > 1.5 * lengths["anti"]


def test_genre_fatigue_lowers_utility_of_repeated_genres(world, sim):
    state = sim.start(world, np.array([0]))
    items = np.arange(world.n_items)[None, :]
    before = sim.current_utility(state, items)[0]
    genre = sim.preference.genre_block(np.arange(world.n_items))
    item = int(np.flatnonzero(genre[:, 7] > 0.9)[0])  # a pure single-genre item
    sim.update(state, np.array([item]), np.array([4.0], np.float32))
    after = sim.current_utility(state, items)[0]
    drop = before - after
    same = genre[:, 7] > 0
    assert drop[same].min() > 0 and np.allclose(drop[~same & (genre @ genre[item] == 0)], 0)


def test_popularity_coupling_concentrates_clicks(world, sim):
    top_share = {}
    for coupling in (0.0, 3.0):
        env = _env(world, sim, popularity_coupling=coupling, max_cycles=15)
        batch = env.reset(seed=4)
        clicks = []
        rng = np.random.default_rng(0)
        while env.alive.any():
            res = env.step(rng.random(batch.candidates.shape))
            clicks.append(res.feedback.clicked[res.feedback.clicked >= 0])
            batch = res.batch
        counts = np.sort(np.bincount(np.concatenate(clicks), minlength=world.n_items))[::-1]
        top_share[coupling] = counts[:10].sum() / counts.sum()
    assert top_share[3.0] > 1.15 * top_share[0.0]


def test_popularity_boost_follows_other_users_clicks(world, sim):
    state = sim.start(world, np.arange(4))
    assert state.popularity_boost(1.0) is None
    sim.update(state, np.array([5, 5, 5, 9]), np.full(4, 4.0, np.float32))
    boost = state.popularity_boost(1.0)
    assert boost[5] > boost[9] > boost[0] == 0.0
    assert state.popularity_boost(0.0) is None


def test_candidate_sampler_distinct_unconsumed_and_restores_state():
    rng = np.random.default_rng(0)
    n_items = 50
    consumed = np.zeros((60, n_items), bool)
    consumed[:, :20] = True
    consumed[1, :29] = True  # 21 free: needs the exact fallback
    state = UserState(np.arange(60), np.packbits(consumed, axis=1, bitorder="little"), consumed.sum(1),
                      np.zeros((60, 1), np.float32), np.ones(60, np.float32), np.ones(60, bool), np.zeros(n_items), n_items)
    np.testing.assert_array_equal(state.consumed_rows(np.arange(60)), consumed)
    before = state.consumed.copy()
    popular = np.repeat(np.arange(n_items), np.arange(n_items))  # item i logged i times
    for mix in (0.0, 0.5, 1.0):
        cand = CandidateSampler(popular, n_items, mix).sample(state, np.arange(60), 20, rng)
        np.testing.assert_array_equal(state.consumed, before)
        assert all(len(set(row)) == 20 for row in cand.tolist())
        assert not np.take_along_axis(consumed, cand, axis=1).any()
    only_logged = CandidateSampler(np.array([3, 4, 5]), 10, 1.0).draw(1000, rng)
    assert set(only_logged.tolist()) == {3, 4, 5}


def test_fidelity_report(world, sim, real_like, fitted):
    for ds, model in ((world, sim), (real_like, fitted)):
        rep = fidelity_report(ds, model, seed=0)
        assert set(rep) >= {"rating_hist", "popularity", "rating_tv_distance", "mean_rating", "fit"}
        assert len(rep["rating_hist"]["simulated"]) == 5 and abs(sum(rep["rating_hist"]["data"]) - 1) < 1e-9
        assert 0 <= rep["rating_tv_distance"] <= 1
    exact = fidelity_report(world, sim, seed=0)
    # The truth regenerates data like the original: same rating histogram, similar popularity curve.
    assert exact["rating_tv_distance"] < 0.05
    assert abs(exact["popularity"]["data"]["gini"] - exact["popularity"]["simulated"]["gini"]) < 0.1
    assert fidelity_report(world, sim, seed=0) == exact  # seeded


def test_candidate_sampler_exact_completion_when_draws_cannot_succeed():
    # Only consumed items were ever logged, so popularity draws always fail:
    # the exact completion must serve the 20 free (never-logged) items.
    n_items = 50
    consumed = np.zeros((3, n_items), bool)
    consumed[:, :30] = True
    state = UserState(np.arange(3), np.packbits(consumed, axis=1, bitorder="little"), consumed.sum(1),
                      np.zeros((3, 1), np.float32), np.ones(3, np.float32), np.ones(3, bool), np.zeros(n_items), n_items)
    cand = CandidateSampler(np.arange(10), n_items, 1.0).sample(state, np.arange(3), 20, np.random.default_rng(0))
    for row in cand.tolist():
        assert sorted(row) == list(range(30, 50))


def _first_two_exact(prob: np.ndarray, free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact law of the first two candidates under sequential sampling without replacement."""
    p = np.where(free, prob, 0.0)
    first = p / p.sum()
    second = np.array([sum(first[i] * p[j] / (p.sum() - p[i]) for i in range(len(p)) if i != j) for j in range(len(p))])
    return first, second


def test_candidate_sampler_follows_the_mixture_without_replacement():
    # 12 items, logged counts 0..11 (item 0 never logged): mixture of popularity and uniform.
    n_items, mix, n_cand = 12, 0.5, 5
    logged = np.repeat(np.arange(n_items), np.arange(n_items))
    prob = mix * np.arange(n_items) / len(logged) + (1 - mix) / n_items
    sampler = CandidateSampler(logged, n_items, mix)
    rng = np.random.default_rng(7)
    draws = sampler.draw(400_000, rng)
    freq = np.bincount(draws, minlength=n_items) / len(draws)
    assert np.all(np.abs(freq - prob) < 5 * np.sqrt(prob * (1 - prob) / len(draws)))
    # Light users (2 consumed: round 1 suffices) and heavy ones (7 consumed, exactly 5 free:
    # the continuation rounds and the exact top-up decide the order).
    n_rows = 20_000
    consumed = np.zeros((n_rows, n_items), bool)
    consumed[::2, [10, 11]] = True
    consumed[1::2, [1, 3, 5, 7, 9, 10, 11]] = True
    state = UserState(np.arange(n_rows), np.packbits(consumed, axis=1, bitorder="little"), consumed.sum(1),
                      np.zeros((n_rows, 1), np.float32), np.ones(n_rows, np.float32), np.ones(n_rows, bool),
                      np.zeros(n_items), n_items)
    cand = sampler.sample(state, np.arange(n_rows), n_cand, rng)
    assert all(len(set(row)) == n_cand for row in cand.tolist())
    assert not np.take_along_axis(consumed, cand, axis=1).any()
    for rows in (slice(0, None, 2), slice(1, None, 2)):
        first, second = _first_two_exact(prob, ~consumed[rows][0])
        m = len(cand[rows])
        for slot, law in ((0, first), (1, second)):
            seen = np.bincount(cand[rows][:, slot], minlength=n_items) / m
            assert np.all(np.abs(seen - law) < 5 * np.sqrt(law * (1 - law) / m) + 1e-9), (slot, seen, law)
