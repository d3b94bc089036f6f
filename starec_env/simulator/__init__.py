"""The user simulator: the ground truth agents are judged against.

Split like RecSim into a preference model (true utilities), a response model
(click + rating) and user state dynamics (consumption, fatigue, patience,
popularity coupling), built on the behaviour models of
:mod:`starec_env.behaviour`; every random draw takes an explicit generator.
:func:`build_simulator` uses the exact truth of a synthetic world
(``Dataset.truth``). On real data it fits, on the rows the offline protocol
does not hold out, a choice model (which item a user picks next:
``choice.py``) that drives clicks and a rating model (``fit.py``) that gives
the ratings.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from starec_env.behaviour import calibrate_thresholds
from starec_env.data.model import Dataset
from starec_env.simulator.choice import FittedChoice, fit_choice
from starec_env.simulator.config import SimulatorConfig
from starec_env.simulator.dynamics import CandidateSampler, UserState
from starec_env.simulator.fidelity import fidelity_report
from starec_env.simulator.fit import fit_preference
from starec_env.simulator.holdout import heldout_start, positive_threshold_of, training_part
from starec_env.simulator.preference import PreferenceModel
from starec_env.simulator.response import ResponseModel

__all__ = [
    "SimulatorConfig", "UserSimulator", "UserState", "CandidateSampler", "PreferenceModel",
    "ResponseModel", "build_simulator", "fidelity_report", "heldout_start",
]


@dataclass
class UserSimulator:
    """Preference + response + dynamics settings for one dataset.

    ``preference`` is the utility users choose by; ``rating_model`` the one
    their ratings follow (None: the same, as in the synthetic truth).
    ``heldout_start`` (real data) is, per user, the first row the fit did not
    see: the protocol's held-out positive and everything after it.
    """

    preference: PreferenceModel
    response: ResponseModel
    cfg: SimulatorConfig
    fit_stats: dict = field(default_factory=dict)
    rating_model: PreferenceModel | None = None
    heldout_start: np.ndarray | None = None

    def utility(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True (state-free) utility, (B,) x (B, C) -> (B, C): the user's taste for the
        item, before item awareness (exposure) and position bias."""
        return self.preference.utility(users, items)

    def choice_logit(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The logit users choose by, (B,) x (B, C) -> (B, C): ``utility / temperature +
        popularity_weight * log_exposure``, before position bias and state (fatigue,
        coupling). Among shown items a user clicks item i with probability proportional
        to ``exp(choice_logit)`` (times the slot's position factor), so ranking by it
        maximises the chance of a click; on real data it is the fitted choice model's
        logit. The same formula on both worlds, for oracle rankings and training labels.
        """
        resp = self.response
        util = np.asarray(self.utility(users, items), dtype=np.float32)
        return util * np.float32(1.0 / resp.temperature) + np.float32(resp.popularity_weight) * np.take(resp.log_exposure, items)

    def rating_utility(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The utility ratings follow, (B,) x (B, C) -> (B, C) (``response.rate`` maps it to stars)."""
        model = self.preference if self.rating_model is None else self.rating_model
        return model.utility(users, items)

    def start(self, dataset: Dataset, users: np.ndarray) -> UserState:
        return UserState.start(dataset, users, self.preference.n_genres, self.cfg)

    def user_vectors(self, state: UserState) -> np.ndarray:
        """(N, D) user vectors as they are now (genre fatigue included)."""
        return state.effective_users(self.preference.user_emb, self.cfg)

    def current_utility(self, state: UserState, items: np.ndarray, vectors: np.ndarray | None = None) -> np.ndarray:
        """Utility of ``items`` (N, C) for the state's users *now* (genre fatigue included)."""
        return self.preference.utility_from(self.user_vectors(state) if vectors is None else vectors, items)

    def respond(
        self,
        state: UserState,
        slate: np.ndarray,
        slate_utility: np.ndarray,
        rng: np.random.Generator,
        coupling: float = 0.0,
        active: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Click and rating for each row's slate: (item or -1, rating or 0).

        ``slate_utility`` are the current utilities of the shown items (they
        drive the click); the rating reflects the item's fatigue-free utility.
        Rows outside the ``active`` mask never click, so what they were shown
        does not change the random draws of the others. Ratings come from
        the rating model.
        """
        logits = self.response.click_logits(slate_utility, slate, state.popularity_boost(coupling))
        slot = self.response.choose(logits, rng)
        hit = slot < slate.shape[1]
        if active is not None:
            hit &= active
        hit = np.flatnonzero(hit)
        clicked = np.full(len(slot), -1, np.int64)
        clicked[hit] = slate[hit, slot[hit]]
        rating = np.zeros(len(slot), np.float32)
        rating[hit] = self.response.rate(self.rating_utility(state.users[hit], clicked[hit, None])[:, 0], rng)
        return clicked, rating

    def update(self, state: UserState, clicked: np.ndarray, rating: np.ndarray) -> np.ndarray:
        """Apply the outcome to the state; returns the rows whose users left."""
        return state.apply(clicked, rating, self.preference.genre_block(clicked), self.cfg)


def build_simulator(dataset: Dataset, cfg: SimulatorConfig | None = None, seed: int = 0) -> UserSimulator:
    """The simulator for ``dataset``: exact truth when it has one, fitted otherwise."""
    cfg = cfg or SimulatorConfig()
    truth = dataset.truth
    if truth is not None:
        pref = PreferenceModel(truth.user_emb, truth.item_emb, truth.n_genres, source="truth")
        noise = truth.rating_noise if cfg.rating_noise is None else cfg.rating_noise
        thresholds = truth.rating_thresholds
        if cfg.rating_noise is not None and cfg.rating_noise != truth.rating_noise:
            observed = pref.utility(dataset.user_arr, dataset.item_arr[:, None])[:, 0]
            thresholds = _calibrate(observed, noise, dataset, seed)
        response = ResponseModel(
            truth.log_exposure,
            truth.temperature if cfg.temperature is None else cfg.temperature,
            truth.popularity_weight if cfg.popularity_weight is None else cfg.popularity_weight,
            cfg.position_decay, cfg.no_click_logit, thresholds, noise,
        )
        return UserSimulator(pref, response, cfg, {"source": "truth"})
    return _fit_simulator(dataset, cfg, seed)


def _fit_simulator(dataset: Dataset, cfg: SimulatorConfig, seed: int) -> UserSimulator:
    """Real data: choice and rating models fitted on the rows the protocol does not hold out."""
    start_time, start_cpu = time.perf_counter(), time.process_time()
    threshold = positive_threshold_of(dataset, cfg.holdout_threshold)
    start = heldout_start(dataset, threshold)
    train = training_part(dataset, start)
    if len(train.interactions) == 0:
        raise ValueError(f"dataset {dataset.name!r}: every interaction is held out; nothing left to fit a user simulator on")
    rated = fit_preference(train, cfg, seed)
    rating_s = time.perf_counter() - start_time
    choice = fit_choice(train, cfg, seed, threshold)
    noise = rated.rating_noise if cfg.rating_noise is None else cfg.rating_noise
    pref, log_exposure, quality_weight = _choice_preference(choice, rated.model, train)
    response = ResponseModel(
        log_exposure,
        1.0 if cfg.temperature is None else cfg.temperature,
        1.0 if cfg.popularity_weight is None else cfg.popularity_weight,
        cfg.position_decay, cfg.no_click_logit,
        _calibrate(rated.observed_utility, noise, train, seed), noise,
    )
    stats = {
        "source": "fitted",
        "holdout_threshold": threshold,
        "train_interactions": int(len(train.interactions)),
        "heldout_interactions": int(len(dataset.interactions) - len(train.interactions)),
        "rating": {**rated.stats, "fit_s": rating_s},
        "choice": choice.stats,
        "quality_weight": quality_weight,
        "fit_s": time.perf_counter() - start_time,
        # CPU seconds of the whole process: on a shared machine wall time also counts waiting.
        "fit_cpu_s": time.process_time() - start_cpu,
    }
    return UserSimulator(pref, response, cfg, stats, rated.model, start)


def _choice_preference(choice: FittedChoice, rating: PreferenceModel, train: Dataset) -> tuple[PreferenceModel, np.ndarray, float]:
    """The choice model in the shared form: utility (taste) and log exposure.

    The item term b_i of the choice logit mixes exposure and quality. The part
    of it that the item's ratings explain (least squares on the average user's
    rating utility, slope clipped at 0) counts as quality and joins the
    utility; the rest is exposure. Choice logits are unchanged by the split.
    """
    quality = rating.user_emb.mean(axis=0) @ rating.item_emb.T
    quality = (quality - quality.mean()).astype(np.float64)
    seen = np.bincount(train.item_arr, minlength=train.n_items) > 0
    q, b = quality[seen], choice.item_bias[seen].astype(np.float64)
    var = float(np.var(q))
    weight = max(0.0, float(np.mean((q - q.mean()) * (b - b.mean()))) / var) if var > 0 else 0.0
    n_users, n_genres = len(choice.user_factors), choice.item_features.shape[1] - 1
    # Genre block first (fatigue shifts it), then taste factors, popularity following, quality.
    user_emb = np.concatenate([choice.affinity[:, :n_genres], choice.user_factors, choice.affinity[:, n_genres:],
                               np.ones((n_users, 1), np.float32)], axis=1)
    item_emb = np.concatenate([choice.item_features[:, :n_genres], choice.item_factors, choice.item_features[:, n_genres:],
                               (weight * quality)[:, None]], axis=1)
    exposure = choice.item_bias - weight * quality
    pref = PreferenceModel(user_emb.astype(np.float32), item_emb.astype(np.float32), n_genres, source="fitted")
    return pref, (exposure - exposure.mean()).astype(np.float32), weight


def _calibrate(observed_utility: np.ndarray, noise: float, dataset: Dataset, seed: int) -> np.ndarray:
    """Rating cut points that reproduce the data's histogram on the data's own pairs."""
    rng = np.random.default_rng([seed, 0xCA1B])
    latent = observed_utility + noise * rng.standard_normal(len(observed_utility)).astype(np.float32)
    stars = np.clip(np.rint(dataset.rating_arr), 1, 5).astype(np.int64)
    hist = np.bincount(stars, minlength=6)[1:].astype(np.float64)
    return calibrate_thresholds(latent, hist)
