"""Simulator settings (a dataclass, loadable from a TOML table)."""
from __future__ import annotations

from dataclasses import dataclass

from starec_env.configtools import config_from_dict


@dataclass
class SimulatorConfig:
    """Knobs of the response model, the user dynamics and the real-data fit.

    ``None`` for temperature / popularity_weight / rating_noise means "take
    it from the world": the synthetic truth's generating values, or the
    values estimated when fitting real data.
    """

    temperature: float | None = None
    popularity_weight: float | None = None
    #: Position bias: the click logit of slot k (0-based) drops by decay * log(1 + k).
    position_decay: float = 1.0
    #: Logit of the no-click option (higher: users click less).
    no_click_logit: float = 1.5
    rating_noise: float | None = None
    #: Genre fatigue: utility penalty per unit of accumulated same-genre consumption.
    fatigue_weight: float = 0.4
    fatigue_decay: float = 0.7
    #: Patience: starts here, drops on slates without a click, moves with ratings.
    patience: float = 1.0
    no_click_cost: float = 0.2
    rating_gain: float = 0.05
    step_cost: float = 0.0
    #: Decay of the shared item-click counts behind popularity coupling.
    coupling_decay: float = 0.9
    #: Matrix-factorisation fit on real data.
    fit_factors: int = 8
    fit_epochs: int = 150
    fit_lr: float = 0.05
    fit_l2: float = 0.05

    @classmethod
    def from_dict(cls, values: dict) -> "SimulatorConfig":
        return config_from_dict(cls, values, "simulator")
