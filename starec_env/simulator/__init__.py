"""The user simulator: the ground truth agents are judged against.

Split like RecSim into a preference model (true utilities), a response model
(click + rating) and user state dynamics (consumption, fatigue, patience,
popularity coupling); every random draw takes an explicit generator.
:func:`build_simulator` uses the exact truth of a synthetic world and fits a
model to real ratings otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from starec_env.data.model import Dataset
from starec_env.data.synthetic import SyntheticTruth, calibrate_thresholds
from starec_env.simulator.config import SimulatorConfig
from starec_env.simulator.dynamics import CandidateSampler, UserState
from starec_env.simulator.fidelity import fidelity_report
from starec_env.simulator.fit import fit_preference
from starec_env.simulator.preference import PreferenceModel
from starec_env.simulator.response import ResponseModel

__all__ = [
    "SimulatorConfig", "UserSimulator", "UserState", "CandidateSampler", "PreferenceModel",
    "ResponseModel", "build_simulator", "fidelity_report",
]


@dataclass
class UserSimulator:
    """Preference + response + dynamics settings for one dataset."""

    preference: PreferenceModel
    response: ResponseModel
    cfg: SimulatorConfig
    fit_stats: dict = field(default_factory=dict)

    def utility(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True (state-free) utility, (B,) x (B, C) -> (B, C); what the oracle ranks by."""
        return self.preference.utility(users, items)

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
        does not change the random draws of the others.
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
        rating[hit] = self.response.rate(self.preference.utility(state.users[hit], clicked[hit, None])[:, 0], rng)
        return clicked, rating

    def update(self, state: UserState, clicked: np.ndarray, rating: np.ndarray) -> np.ndarray:
        """Apply the outcome to the state; returns the rows whose users left."""
        return state.apply(clicked, rating, self.preference.genre_block(clicked), self.cfg)


def build_simulator(dataset: Dataset, cfg: SimulatorConfig | None = None, seed: int = 0) -> UserSimulator:
    """The simulator for ``dataset``: exact truth when it has one, fitted otherwise."""
    cfg = cfg or SimulatorConfig()
    truth = dataset.meta.get("truth")
    if isinstance(truth, SyntheticTruth):
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
    fitted = fit_preference(dataset, cfg, seed)
    noise = fitted.rating_noise if cfg.rating_noise is None else cfg.rating_noise
    pop = dataset.item_popularity
    log_exposure = np.log1p(pop) - np.log1p(pop).mean()
    response = ResponseModel(
        log_exposure.astype(np.float32),
        1.0 if cfg.temperature is None else cfg.temperature,
        1.0 if cfg.popularity_weight is None else cfg.popularity_weight,
        cfg.position_decay, cfg.no_click_logit,
        _calibrate(fitted.observed_utility, noise, dataset, seed), noise,
    )
    return UserSimulator(fitted.model, response, cfg, {"source": "fitted", **fitted.stats})


def _calibrate(observed_utility: np.ndarray, noise: float, dataset: Dataset, seed: int) -> np.ndarray:
    """Rating cut points that reproduce the data's histogram on the data's own pairs."""
    rng = np.random.default_rng([seed, 0xCA1B])
    latent = observed_utility + noise * rng.standard_normal(len(observed_utility)).astype(np.float32)
    stars = np.clip(np.rint(dataset.rating_arr), 1, 5).astype(np.int64)
    hist = np.bincount(stars, minlength=6)[1:].astype(np.float64)
    return calibrate_thresholds(latent, hist)
