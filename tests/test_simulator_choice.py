"""Real-data simulator: a choice model fitted on the protocol's training rows only, and its fidelity figures."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.recbole_world import WorldSpec, write_world
from experiments.run import main as run_main
from policies.oracle import OraclePolicy
from starec_env.data.model import Dataset
from starec_env.data.synthetic import SyntheticConfig, generate_world
from starec_env.protocol import LeaveOneOut
from starec_env.simulator import SimulatorConfig, build_simulator, fidelity_report, heldout_start
from starec_env.simulator.holdout import training_part


def _without_truth(world: Dataset, interactions=None) -> Dataset:
    """The same log as real data: no ground truth for the simulator to read."""
    return Dataset("real-like", world.items, world.users, world.interactions if interactions is None else interactions, dict(world.meta))


@pytest.fixture(scope="module")
def world():
    return generate_world(SyntheticConfig(n_users=150, n_items=300), seed=3)


@pytest.fixture(scope="module")
def real_like(world):
    return _without_truth(world)


@pytest.fixture(scope="module")
def fitted(real_like):
    return build_simulator(real_like, seed=0)


def _same_simulator(a, b) -> bool:
    pairs = [(a.preference.user_emb, b.preference.user_emb), (a.preference.item_emb, b.preference.item_emb),
             (a.rating_model.user_emb, b.rating_model.user_emb), (a.rating_model.item_emb, b.rating_model.item_emb),
             (a.response.log_exposure, b.response.log_exposure), (a.response.rating_thresholds, b.response.rating_thresholds)]
    return all(np.array_equal(x, y) for x, y in pairs) and a.response.rating_noise == b.response.rating_noise


@pytest.mark.slow
def test_fit_is_deterministic_for_a_seed(real_like, fitted):
    assert fitted.preference.source == "fitted" and fitted.rating_model is not None
    assert _same_simulator(build_simulator(real_like, seed=0), fitted)
    assert not np.array_equal(build_simulator(real_like, seed=1).preference.item_emb, fitted.preference.item_emb)


def test_heldout_part_is_every_protocol_target_and_what_follows(real_like, fitted):
    start = fitted.heldout_start
    for seed in (0, 1):
        protocol = LeaveOneOut(real_like, n_users=None, seed=seed)
        np.testing.assert_array_equal(start[protocol.users], protocol.target_rows)
    train = training_part(real_like, start)
    assert len(train.interactions) == fitted.fit_stats["train_interactions"]
    kept = np.arange(len(real_like.interactions)) < start[real_like.user_arr]
    np.testing.assert_array_equal(train.item_arr, real_like.item_arr[kept])
    # Users without a positive keep their whole log; the held-out part of the others is not empty.
    positive = np.zeros(real_like.n_users, bool)
    positive[real_like.user_arr[real_like.rating_arr > 3]] = True
    np.testing.assert_array_equal(start[~positive], real_like.user_offsets[1:][~positive])
    assert np.all(start[positive] < real_like.user_offsets[1:][positive])


@pytest.mark.slow
def test_no_heldout_row_reaches_the_fit(real_like, fitted):
    """Changing every held-out item (the protocol's targets and what follows) leaves the fit bit-identical."""
    start = fitted.heldout_start
    inter = real_like.interactions.copy()
    held = np.arange(len(inter)) >= start[real_like.user_arr]
    inter.loc[held, "item"] = (inter.loc[held, "item"] + 7) % real_like.n_items
    changed = _without_truth(real_like, inter)
    np.testing.assert_array_equal(heldout_start(changed, 3.0), start)
    assert _same_simulator(build_simulator(changed, seed=0), fitted)


def test_fidelity_refuses_a_protocol_whose_targets_the_fit_saw(real_like, fitted):
    stricter = LeaveOneOut(real_like, n_users=None, positive_threshold=4.0, seed=0)  # earlier targets
    with pytest.raises(ValueError, match="holdout_threshold"):
        fidelity_report(real_like, fitted, protocol=stricter)


@pytest.mark.slow
def test_fitted_oracle_recovers_most_of_the_true_oracle():
    """On a generated world whose choice model is known, the oracle of the simulator
    fitted to its log (truth hidden) gets most of the true oracle's NDCG."""
    world = generate_world(SyntheticConfig(n_users=400, n_items=300, latent_dim=4), seed=5)
    true, fit = build_simulator(world, seed=0), build_simulator(_without_truth(world), seed=0)
    protocol = LeaveOneOut(world, n_users=None, seed=0)
    b = protocol.batch
    ndcg = {name: protocol.evaluate(sim.choice_logit(b.users, b.candidates))["ndcg@10"] for name, sim in
            (("true", true), ("fitted", fit))}
    counts = np.bincount(protocol.split.interactions["item"], minlength=world.n_items).astype(float)
    pop = protocol.evaluate(counts[b.candidates])["ndcg@10"]
    assert ndcg["fitted"] >= 0.75 * ndcg["true"] and ndcg["fitted"] >= pop + 0.06, (ndcg, pop)
    # Over the whole catalogue, each user's fitted choice logits follow the true ones.
    items = np.broadcast_to(np.arange(world.n_items), (world.n_users, world.n_items))
    t, f = true.choice_logit(np.arange(world.n_users), items), fit.choice_logit(np.arange(world.n_users), items)
    corr = [np.corrcoef(t[u], f[u])[0, 1] for u in range(world.n_users)]
    assert np.median(corr) > 0.75


def test_choice_logit_is_what_users_click_by(world, real_like, fitted):
    truth = world.truth
    users = np.arange(12)
    slate = np.tile(np.arange(5), (12, 1)) + users[:, None]
    exact = build_simulator(world, seed=0)
    np.testing.assert_allclose(exact.choice_logit(users, slate),
                               truth.utility(users, slate) / truth.temperature + truth.popularity_weight * truth.log_exposure[slate],
                               rtol=1e-5, atol=1e-5)
    for sim in (exact, fitted):
        util = sim.utility(users, slate)
        bias = sim.response.position_bias(slate.shape[1])
        np.testing.assert_allclose(sim.response.click_logits(util, slate), sim.choice_logit(users, slate) + bias, rtol=1e-5, atol=1e-5)


def test_oracle_ranks_by_the_choice_logit_or_the_utility(real_like, fitted):
    protocol = LeaveOneOut(real_like, n_users=30, seed=0)
    b = protocol.batch
    np.testing.assert_array_equal(OraclePolicy(fitted).score(b), fitted.choice_logit(b.users, b.candidates).astype(np.float64))
    np.testing.assert_array_equal(OraclePolicy(fitted, "utility").score(b), fitted.utility(b.users, b.candidates).astype(np.float64))


def test_fitted_ratings_come_from_the_rating_model(real_like, fitted):
    state = fitted.start(real_like, np.arange(40))
    slate = np.tile(np.arange(5), (40, 1))
    util = fitted.utility(state.users, slate)
    clicked, rating = fitted.respond(state, slate, util, np.random.default_rng(3))
    hit = clicked >= 0
    assert hit.any()
    # Replay the same draws: choice first, then ratings from the rating model's utilities.
    rng = np.random.default_rng(3)
    fitted.response.choose(fitted.response.click_logits(util, slate), rng)
    expected = fitted.response.rate(fitted.rating_utility(state.users[hit], clicked[hit, None])[:, 0], rng)
    np.testing.assert_array_equal(rating[hit], expected)
    assert not np.allclose(fitted.rating_utility(state.users, slate), util)


def test_config_rejects_bad_settings_by_name():
    for bad in ({"choice_decay": 1.5}, {"choice_factors": 0}, {"choice_patience": 2.5}, {"temperature": 0.0},
                {"holdout_threshold": "3"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SimulatorConfig(**bad)
    with pytest.raises(ValueError, match="choice_lrr"):
        SimulatorConfig.from_dict({"choice_lrr": 0.1})


def test_fidelity_stage_reports_heldout_behaviour(tmp_path, capsys):
    """`--stage fidelity` on a RecBole dataset: the JSON holds the held-out figures, fit time and memory."""
    data = write_world(tmp_path / "books", WorldSpec(n_users=150, n_items=120, median_length=25.0), seed=1)
    out = tmp_path / "run"
    assert run_main(["--stage", "fidelity", "--dataset", "recbole", "--data-dir", str(data), "--out", str(out),
                     "--no-progress"]) == 0
    assert "held-out choices" in capsys.readouterr().out
    report = json.loads((out / "fidelity.json").read_text())
    held = report["heldout"]
    assert set(held["ndcg"]) == {"oracle_choice", "oracle_utility", "popularity"}
    assert 0 <= held["ndcg"]["oracle_choice"]["ndcg@10"] <= 1
    loglik = held["loglik"]
    assert loglik["uniform"] < loglik["catalogue"] < 0 and loglik["candidates_uniform"] < loglik["candidates"] < 0
    calibration = held["calibration"]
    assert 0 <= calibration["ece"] <= 1 and 0 <= calibration["top_choice"]["ece"] <= 1
    assert sum(b["count"] for b in calibration["bins"]) == held["users"] * held["candidates"]
    assert 0 < held["ctr"]["random_slate"] < held["ctr"]["oracle_slate"] < 1
    fit = report["fit"]
    assert fit["source"] == "fitted" and fit["fit_s"] > 0 and fit["choice"]["epochs"] >= 1 and fit["rating"]["fit_s"] > 0
    assert fit["heldout_interactions"] > 0 and report["peak_rss_mb"] > 0
    assert 0 <= report["rating_tv_distance"] <= 1 and 0 <= report["popularity"]["simulated"]["gini"] <= 1
