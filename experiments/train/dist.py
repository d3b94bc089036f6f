"""Process roles under ``accelerate launch`` (light: no torch / transformers import).

Every rank trains; only rank 0 writes models, facts and reports and runs
the evaluation, so a multi-process run leaves exactly one copy of each file.
"""
from __future__ import annotations

import os


def is_main_process() -> bool:
    """True outside ``accelerate launch`` and on its rank-0 process."""
    return int(os.environ.get("RANK", "0")) == 0


def wait_for_everyone() -> None:
    """Barrier between the ranks of a multi-process run (no-op otherwise)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
