"""The oracle: ranks by the simulator's ground truth.

It reads what ordinary agents never see, so it is an upper bound for
reference (``upper_bound=True``, labelled so in every report), not a policy
anyone could deploy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.base import Policy, PolicyContext
from policies.options import check_types, read, takes
from starec_env.types import RankingBatch

RANK_BY = ("choice", "utility")


class OraclePolicy(Policy):
    """Scores = the simulator's truth for each candidate.

    ``rank_by="choice"`` (default) uses the logit the simulated user picks by
    (:meth:`UserSimulator.choice_logit`: utility over temperature plus item
    awareness, before position bias), the ranking that maximises the chance of
    a click; on real data that is the choice model fitted to what users
    consumed. ``"utility"`` uses the preference alone, ignoring that users
    favour items they know.
    """

    upper_bound = True

    def __init__(self, simulator, rank_by: str = "choice") -> None:
        if rank_by not in RANK_BY:
            raise ValueError(f"oracle rank_by: expected one of {RANK_BY}, got {rank_by!r}")
        self.simulator = simulator
        self.rank_by = rank_by

    def score(self, batch: RankingBatch) -> np.ndarray:
        truth = self.simulator.utility if self.rank_by == "utility" else self.simulator.choice_logit
        return np.asarray(truth(batch.users, batch.candidates), dtype=np.float64)


@dataclass(frozen=True)
class OracleOptions:
    """``rank_by``: "choice" (the click logit) or "utility" (preference alone)."""

    rank_by: str = "choice"

    def __post_init__(self) -> None:
        check_types(self)
        if self.rank_by not in RANK_BY:
            raise ValueError(f"rank_by: expected one of {list(RANK_BY)}, got {self.rank_by!r}")


@takes(OracleOptions)
def make_oracle(ctx: PolicyContext) -> Policy:
    if ctx.simulator is None:
        raise ValueError(
            "the oracle ranks by the simulator's truth, but PolicyContext.simulator is None; "
            "build it through the experiments runner (which hands it the simulator) or pass one"
        )
    return OraclePolicy(ctx.simulator, read(OracleOptions, ctx.options).rank_by)
