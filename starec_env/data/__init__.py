"""Datasets by name: one entry point from the CLI, configs and user code.

``load_dataset(name, data_dir, preprocess, seed, **options)`` loads raw data
and applies :func:`preprocess`. Without an explicit ``preprocess`` real data
gets the paper's settings (10-core, last 40 history items, positive = rating
> 3) while the synthetic world is kept whole (it is generated at the size
asked for); pass ``PreprocessConfig(kcore=0)`` for raw real data.

Loader options (``**options``): ``synthetic`` takes SyntheticConfig fields;
``amazon-cds`` takes ``category``, ``source``, ``columns``; ``recbole`` takes
``atomic_name``, ``seq_separator``, ``rating_range`` and the ``*_field``
names; every file loader takes ``duplicates`` ("error", the default, or
"latest"). Loaders never change the data silently: what an option changed
is logged and counted in ``meta`` (see ``Dataset.summary()["loader"]``). An
unknown option or a bad value is a :class:`DataOptionError` naming it.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from starec_env.data.amazon import load_amazon
from starec_env.data.errors import DataFormatError, DataOptionError, DatasetNotFoundError, PreprocessError
from starec_env.data.model import Dataset, build_dataset
from starec_env.data.movielens import load_ml1m, load_ml100k
from starec_env.data.preprocess import PreprocessConfig, kcore_rows
from starec_env.data.preprocess import preprocess as apply_preprocess
from starec_env.data.recbole import load_recbole
from starec_env.data.synthetic import SyntheticConfig, generate_world

__all__ = [
    "DATASETS",
    "DataFormatError",
    "DataOptionError",
    "Dataset",
    "DatasetNotFoundError",
    "PreprocessConfig",
    "PreprocessError",
    "build_dataset",
    "kcore_rows",
    "load_dataset",
]

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "ml-100k": load_ml100k,
    "ml-1m": load_ml1m,
    "amazon-cds": load_amazon,
    "recbole": load_recbole,
}
DATASETS = ("synthetic", *_LOADERS)
_PREPROCESS_SALT = 0x5EED  # keeps user sampling independent of the world generator's stream


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    preprocess: PreprocessConfig | None = None,
    seed: int = 0,
    **options: Any,
) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`) and preprocess it.

    ``seed`` drives the synthetic world and the user sampling of
    ``preprocess.max_users``; the result's ``meta["preprocess"]`` holds the
    settings applied.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataOptionError(f"dataset {name!r} seed: expected an integer >= 0, got {seed!r}")
    if name == "synthetic":
        _check_options(name, {f.name for f in fields(SyntheticConfig)}, options)
        ds = generate_world(_synthetic_config(SyntheticConfig, options), seed)
        cfg = preprocess if preprocess is not None else PreprocessConfig(kcore=0)
    elif name in _LOADERS:
        loader = _LOADERS[name]
        accepted = {p.name for p in inspect.signature(loader).parameters.values() if p.kind is p.KEYWORD_ONLY}
        _check_options(name, accepted - {"dataset_name"}, options)
        ds = loader(None if data_dir is None else Path(data_dir), **options)
        cfg = preprocess if preprocess is not None else PreprocessConfig()
    else:
        raise DataOptionError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    return apply_preprocess(ds, cfg, np.random.default_rng([seed, _PREPROCESS_SALT]))


def _check_options(name: str, accepted: set[str], options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DataOptionError(
            f"dataset {name!r} does not take option(s) {unknown}; it accepts {sorted(accepted) or 'none'}"
        )


#: Python types a SyntheticConfig annotation allows (``None`` only where the annotation says so).
_ANNOTATED = {"int": (int,), "float": (int, float), "tuple[float, ...]": (list, tuple), "tuple[int, int]": (list, tuple)}


def _synthetic_config(cls: type, options: dict[str, Any]) -> Any:
    """SyntheticConfig from user options: each value's type is checked against the
    field's annotation (TOML gives strings, bools, lists) and the config's own
    checks become a :class:`DataOptionError`, so no bad size reaches numpy."""
    types = {f.name: str(f.type) for f in fields(cls)}
    for key, value in options.items():
        annotation = types[key].removesuffix(" | None")
        allowed = _ANNOTATED.get(annotation, (object,))
        if value is None and types[key].endswith("| None"):
            continue
        bad = isinstance(value, bool) or not isinstance(value, allowed)
        bad = bad or (isinstance(value, float) and not math.isfinite(value))
        if isinstance(value, (list, tuple)):
            element = int if annotation == "tuple[int, int]" else (int, float)
            bad = bad or not all(isinstance(v, element) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        if not bad and annotation in ("int", "float") and key != "start_time" and value < 0:
            bad = True
        if not bad and isinstance(value, int) and value >= 2**31:  # sizes and times numpy can index
            bad = True
        if bad:
            sign = "" if key == "start_time" else "non-negative "
            raise DataOptionError(f"dataset 'synthetic' option {key}: expected a {sign}{annotation} below 2**31, got {value!r}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    except (TypeError, ValueError) as err:
        raise DataOptionError(f"dataset 'synthetic': {err}") from None
