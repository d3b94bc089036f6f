"""RecBole atomic files (``<name>.inter``, optional ``.item`` / ``.user``).

RecBole has converted dozens of public datasets to this format, so reading it
gives users most of the field's data without a loader per dataset. Files are
tab-separated, UTF-8, with a typed header line such as
``user_id:token	item_id:token	rating:float	timestamp:float``.

Fields read (first match wins; others are ignored):

- ``.inter``: ``user_id``, ``item_id`` (required), ``rating`` (optional: an
  implicit-feedback file gets rating 5 for every interaction) and
  ``timestamp`` (optional: file order is used instead; decimal timestamps
  are floored, exact integers are kept exact). Ratings must lie in 1-5; a
  dataset on another scale names it with the loader option ``rating_range =
  [lo, hi]``, which maps [lo, hi] linearly onto 1-5 (a value outside it is an
  error; the count is logged and kept in ``meta["ratings_rescaled"]``). A
  (user, item) pair listed twice is an error unless ``duplicates="latest"``.
- ``.item``: title from ``title``/``movie_title``/``item_title``/``name``/
  ``item_name``/``book_title``; genres from ``genre``/``genres``/``class``/
  ``categories``/``category``; year from ``year``/``release_year``/
  ``publication_year``/``year_of_publication`` (non-years become 0);
  description from ``description``/``desc``/``overview``/``plot``.
- ``.user``: ``age`` (empty = unknown, else a number 0-150), ``gender``,
  ``occupation``.

``token_seq`` values are split on ``seq_separator`` (RecBole's default, a
space), so a title stored as ``token_seq`` is re-joined with spaces.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from starec_env.data.errors import DataFormatError, DataOptionError, DatasetNotFoundError, check_choice
from starec_env.data.model import Dataset, build_dataset
from starec_env.data.tables import (
    DUPLICATE_POLICIES,
    Table,
    log,
    read_delimited,
    read_text,
    repeated_pairs,
    split_lines,
    year_from_text,
)

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
TITLE_FIELDS = ("title", "movie_title", "item_title", "name", "item_name", "book_title")
GENRE_FIELDS = ("genre", "genres", "class", "categories", "category")
YEAR_FIELDS = ("year", "release_year", "publication_year", "year_of_publication")
DESCRIPTION_FIELDS = ("description", "desc", "overview", "plot")
UNKNOWN_GENRES = frozenset({"unknown", "(no genres listed)"})
MAX_AGE = 150


@dataclass(frozen=True)
class AtomicFile:
    """One atomic file: its rows (as strings) and the declared type of every field."""

    table: Table
    types: dict[str, str]

    def require(self, field: str, kind: str = "token") -> None:
        if field not in self.types:
            raise DataFormatError(
                self.table.path, 1, field, f"a header field '{field}:{kind}' (header has {list(self.types)})"
            )

    def first_of(self, names: tuple[str, ...]) -> str | None:
        return next((n for n in names if n in self.types), None)


def read_atomic(path: Path, exact: Sequence[str] = ()) -> AtomicFile:
    """Parse an atomic file's typed header and rows: ``float`` fields as float64,
    except the ``exact`` ones (timestamps), which stay text for exact parsing."""
    text = read_text(path, "utf-8")
    lines = split_lines(text)
    if not lines or not lines[0].strip():
        raise DataFormatError(path, 1, None, "a header line of tab-separated 'name:type' fields", "")
    types: dict[str, str] = {}
    for column in lines[0].split("\t"):
        name, _, kind = column.strip().rpartition(":")
        if not name or kind not in FIELD_TYPES:
            raise DataFormatError(path, 1, column, f"a header field 'name:type' with type one of {', '.join(FIELD_TYPES)}")
        if name in types:
            raise DataFormatError(path, 1, column, "each field name once in the header")
        types[name] = kind
    numeric = [name for name, kind in types.items() if kind == "float" and name not in exact]
    return AtomicFile(read_delimited(path, "\t", list(types), skip_lines=1, text=text, numeric=numeric), types)


def locate_atomic(data_dir: Path | None, atomic_name: str | None) -> Path:
    """The ``.inter`` file to read: ``data_dir`` itself, ``<name>.inter`` or the only one there."""
    if data_dir is None:
        raise DatasetNotFoundError(
            "recbole", ["<data_dir>/<name>.inter"], "pass data_dir (--data-dir) pointing at a folder of RecBole atomic files"
        )
    data_dir = Path(data_dir)
    if data_dir.is_file() and data_dir.suffix == ".inter":
        return data_dir
    if atomic_name is not None:
        wanted = [data_dir / f"{atomic_name}.inter", data_dir / atomic_name / f"{atomic_name}.inter"]
        found = next((p for p in wanted if p.is_file()), None)
        if found is None:
            raise DatasetNotFoundError("recbole", wanted)
        return found
    found_all = sorted(data_dir.glob("*.inter")) if data_dir.is_dir() else []
    if len(found_all) == 1:
        return found_all[0]
    hint = ""
    if found_all:
        hint = f"several .inter files there ({', '.join(p.stem for p in found_all)}): pass atomic_name=<one of them>"
    raise DatasetNotFoundError("recbole", [data_dir / "*.inter"], hint)


def load_recbole(
    data_dir: Path | None,
    *,
    atomic_name: str | None = None,
    seq_separator: str = " ",
    user_field: str = "user_id",
    item_field: str = "item_id",
    rating_field: str = "rating",
    time_field: str = "timestamp",
    rating_range: Sequence[float] | None = None,
    duplicates: str = "error",
    dataset_name: str | None = None,
) -> Dataset:
    """Load ``<atomic_name>.inter`` (+ ``.item``, ``.user`` beside it) from ``data_dir``.

    The field options mirror RecBole's ``USER_ID_FIELD`` etc. settings for
    datasets that renamed them. ``rating_range`` is the file's rating scale
    when it is not 1-5; ``duplicates`` ("error" or "latest") what to do with
    a pair listed twice. ``dataset_name`` names the result (default: the
    atomic files' base name).
    """
    name = dataset_name or "recbole"
    _check_options(name, atomic_name, seq_separator, (user_field, item_field, rating_field, time_field))
    scale = _rating_range(name, rating_range)
    check_choice(name, "duplicates", duplicates, DUPLICATE_POLICIES)
    inter_path = locate_atomic(data_dir, atomic_name)
    inter_file = read_atomic(inter_path, exact=[time_field])
    inter_file.require(user_field)
    inter_file.require(item_field)
    table = inter_file.table
    table.require_rows("interaction")
    meta: dict = {"source": "recbole", "files": [str(inter_path)]}
    inter = pd.DataFrame(
        {"user_id": table.strings(user_field, "a user id").to_numpy(), "item_id": table.strings(item_field, "an item id").to_numpy()}
    )
    if rating_field in inter_file.types:
        inter["rating"] = _ratings(table, rating_field, scale, meta)
    elif scale is not None:
        inter_file.require(rating_field, "float")  # rating_range was given for ratings the file lacks
    else:
        inter["rating"] = 5.0
        meta["implicit"] = True
    if time_field in inter_file.types:
        inter["timestamp"] = table.integers(
            time_field, "a timestamp: an integer, or a decimal number of magnitude at most 2**53", fractions=True
        )
    else:
        inter["timestamp"] = np.arange(len(table), dtype=np.int64)
        meta["timestamp_from_file_order"] = True
    inter, meta["repeated_pairs_dropped"] = repeated_pairs(inter, table, user_field, item_field, duplicates)

    items = pd.DataFrame({"item_id": pd.Series([], dtype=str)})
    item_path = inter_path.with_suffix(".item")
    if item_path.is_file():
        items = _items(read_atomic(item_path), item_field, seq_separator)
        meta["files"].append(str(item_path))
    users = pd.DataFrame({"user_id": pd.Series([], dtype=str)})
    user_path = inter_path.with_suffix(".user")
    if user_path.is_file():
        users = _users(read_atomic(user_path), user_field)
        meta["files"].append(str(user_path))
    return build_dataset(dataset_name or inter_path.stem, items, users, inter, meta)


def _check_options(dataset: str, atomic_name: object, seq_separator: object, field_names: tuple) -> None:
    if atomic_name is not None and (not isinstance(atomic_name, str) or not atomic_name):
        raise DataOptionError(f"dataset {dataset!r} option atomic_name: expected a file base name, got {atomic_name!r}")
    if not isinstance(seq_separator, str) or len(seq_separator) != 1:
        raise DataOptionError(f"dataset {dataset!r} option seq_separator: expected one character, got {seq_separator!r}")
    for value in field_names:
        if not isinstance(value, str) or not value:
            raise DataOptionError(f"dataset {dataset!r}: a *_field option must be a field name, got {value!r}")


def _rating_range(dataset: str, value: Sequence[float] | None) -> tuple[float, float] | None:
    """The ``rating_range`` option as (lo, hi), refusing anything but two increasing finite numbers."""
    if value is None:
        return None
    numbers = isinstance(value, (list, tuple)) and len(value) == 2
    numbers = numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    lo, hi = (float(v) for v in value) if numbers else (math.nan, math.nan)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise DataOptionError(f"dataset {dataset!r} option rating_range: expected [lo, hi] with lo < hi, got {value!r}")
    return lo, hi


def _ratings(table: Table, field: str, scale: tuple[float, float] | None, meta: dict) -> np.ndarray:
    """Ratings on the 1-5 scale; a declared other scale is mapped onto it (and counted)."""
    if scale is None:
        return table.numbers(field, "a rating 1-5 (a dataset on another scale needs the loader option rating_range = [lo, hi])", 1.0, 5.0)
    lo, hi = scale
    ratings = table.numbers(field, f"a rating within rating_range [{lo:g}, {hi:g}]", lo, hi)
    meta["ratings_rescaled"] = {"from": [lo, hi], "rows": len(ratings)}
    log.warning("%s: rescaled %d ratings from [%g, %g] onto 1-5 (rating_range)", table.path, len(ratings), lo, hi)
    return 1.0 + 4.0 * (ratings - lo) / (hi - lo)


def _items(atomic: AtomicFile, item_field: str, sep: str) -> pd.DataFrame:
    atomic.require(item_field)
    table = atomic.table
    table.require_rows("item")
    table.unique(item_field)
    items = pd.DataFrame({"item_id": table.strings(item_field, "an item id").to_numpy()})
    title = atomic.first_of(TITLE_FIELDS)
    if title is not None:
        raw = table.frame[title].astype(str)
        items["title"] = (raw.str.replace(sep, " ", regex=False) if atomic.types[title] == "token_seq" and sep != " " else raw).to_numpy()
    genre = atomic.first_of(GENRE_FIELDS)
    if genre is not None:
        seq = atomic.types[genre].endswith("_seq")
        items["genres"] = [
            tuple(g for g in (value.split(sep) if seq else [value]) if g and g.lower() not in UNKNOWN_GENRES)
            for value in table.frame[genre].astype(str)
        ]
    year = atomic.first_of(YEAR_FIELDS)
    if year is not None:
        items["year"] = [year_from_text(v) for v in table.frame[year]]
    description = atomic.first_of(DESCRIPTION_FIELDS)
    if description is not None:
        items["description"] = table.frame[description].astype(str).to_numpy()
    return items


def _users(atomic: AtomicFile, user_field: str) -> pd.DataFrame:
    atomic.require(user_field)
    table = atomic.table
    table.require_rows("user")
    table.unique(user_field)
    users = pd.DataFrame({"user_id": table.strings(user_field, "a user id").to_numpy()})
    if "age" in atomic.types:
        ages = table.frame["age"]
        unknown = (ages.isna() | ages.astype(str).isin(("", "nan", "NaN"))).to_numpy()  # how RecBole files leave it out
        known = Table(table.path, table.frame[~unknown].reset_index(drop=True), table.lines[~unknown])
        users["age"] = np.zeros(len(table), dtype=np.int64)
        users.loc[~unknown, "age"] = known.integers("age", f"an age 0-{MAX_AGE} (or empty when unknown)", 0, MAX_AGE, fractions=True)
    for column in ("gender", "occupation"):
        if column in atomic.types:
            users[column] = table.frame[column].astype(str).to_numpy()
    return users
