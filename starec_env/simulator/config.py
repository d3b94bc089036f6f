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
    #: Rating model on real data (biased matrix factorisation, see ``fit.py``).
    fit_factors: int = 8
    fit_epochs: int = 150
    fit_lr: float = 0.05
    fit_l2: float = 0.05
    #: Real data: each user's last positive (rating above this) and the rows after it are
    #: held out of every fit, as the offline protocol holds them out; None = the dataset's
    #: preprocessing threshold (the paper's 3.0). Set it to the protocol's positive_threshold.
    holdout_threshold: float | None = None
    #: Choice model on real data (sampled softmax on consumption, see ``choice.py``).
    choice_factors: int = 32
    #: Recent choices that shape the next one, and the weight decay per step back.
    choice_context: int = 10
    choice_decay: float = 0.7
    choice_negatives: int = 256
    choice_batch: int = 1024
    #: Most epochs; training stops earlier once the validation log-likelihood has not
    #: improved for ``choice_patience`` epochs.
    choice_epochs: int = 30
    choice_patience: int = 3
    choice_lr: float = 0.005
    choice_l2: float = 1e-5
    #: Validation users (each user's last training choice), sampled when there are more.
    choice_val_users: int = 5000

    def __post_init__(self) -> None:
        """Check every setting by name: a wrong value must fail here, not deep inside a fit."""
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SimulatorConfig.{name}: expected an integer >= 1, got {value!r}")
        for name, (low, high, optional) in _FLOATS.items():
            value = getattr(self, name)
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                none = " or None" if optional else ""
                raise ValueError(f"SimulatorConfig.{name}: expected a number in [{low}, {high}]{none}, got {value!r}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"SimulatorConfig.temperature: expected a positive number or None, got {self.temperature!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "SimulatorConfig":
        return config_from_dict(cls, values, "simulator")


_POSITIVE_INTS = ("fit_factors", "fit_epochs", "choice_factors", "choice_context", "choice_negatives", "choice_batch",
                  "choice_epochs", "choice_patience", "choice_val_users")
_INF = float("inf")
#: name -> (lowest, highest, None allowed)
_FLOATS = {
    "temperature": (0.0, _INF, True), "popularity_weight": (-_INF, _INF, True), "position_decay": (0.0, _INF, False),
    "no_click_logit": (-_INF, _INF, False), "rating_noise": (0.0, _INF, True), "fatigue_weight": (0.0, _INF, False),
    "fatigue_decay": (0.0, 1.0, False), "patience": (0.0, _INF, False), "no_click_cost": (0.0, _INF, False),
    "rating_gain": (0.0, _INF, False), "step_cost": (0.0, _INF, False), "coupling_decay": (0.0, 1.0, False),
    "fit_lr": (0.0, _INF, False), "fit_l2": (0.0, _INF, False), "holdout_threshold": (-_INF, _INF, True),
    "choice_decay": (0.0, 1.0, False), "choice_lr": (0.0, _INF, False), "choice_l2": (0.0, _INF, False),
}
