"""RecBole atomic files (``<name>.inter``, optional ``.item`` / ``.user``).

RecBole has converted dozens of public datasets to this format, so reading it
gives users most of the field's data without a loader per dataset. Files are
tab-separated, UTF-8, with a typed header line such as
``user_id:token	item_id:token	rating:float	timestamp:float``.

Fields read (first match wins; others are ignored):

- ``.inter``: ``user_id``, ``item_id`` (required), ``rating`` (optional: an
  implicit-feedback file gets rating 5 for every interaction) and
  ``timestamp`` (optional: file order is used instead). Ratings outside 1-5
  are rescaled linearly onto 1-5 (recorded in ``meta["rating_rescaled_from"]``).
- ``.item``: title from ``title``/``movie_title``/``item_title``/``name``/
  ``item_name``/``book_title``; genres from ``genre``/``genres``/``class``/
  ``categories``/``category``; year from ``year``/``release_year``/
  ``publication_year``/``year_of_publication`` (non-years become 0);
  description from ``description``/``desc``/``overview``/``plot``.
- ``.user``: ``age``, ``gender``, ``occupation``.

``token_seq`` values are split on ``seq_separator`` (RecBole's default, a
space), so a title stored as ``token_seq`` is re-joined with spaces.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from starec_env.data.errors import DataFormatError, DatasetNotFoundError
from starec_env.data.model import Dataset, build_dataset
from starec_env.data.tables import Table, drop_repeated_pairs, read_delimited, read_text, split_lines, year_from_text

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
TITLE_FIELDS = ("title", "movie_title", "item_title", "name", "item_name", "book_title")
GENRE_FIELDS = ("genre", "genres", "class", "categories", "category")
YEAR_FIELDS = ("year", "release_year", "publication_year", "year_of_publication")
DESCRIPTION_FIELDS = ("description", "desc", "overview", "plot")
UNKNOWN_GENRES = frozenset({"unknown", "(no genres listed)"})


@dataclass(frozen=True)
class AtomicFile:
    """One atomic file: its rows (as strings) and the declared type of every field."""

    table: Table
    types: dict[str, str]

    def require(self, field: str) -> None:
        if field not in self.types:
            raise DataFormatError(
                self.table.path, 1, field, f"a header field '{field}:token' (header has {list(self.types)})"
            )

    def first_of(self, names: tuple[str, ...]) -> str | None:
        return next((n for n in names if n in self.types), None)


def read_atomic(path: Path) -> AtomicFile:
    """Parse an atomic file's typed header and rows (values stay strings)."""
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
    numeric = [name for name, kind in types.items() if kind == "float"]
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
    dataset_name: str | None = None,
) -> Dataset:
    """Load ``<atomic_name>.inter`` (+ ``.item``, ``.user`` beside it) from ``data_dir``.

    The field options mirror RecBole's ``USER_ID_FIELD`` etc. settings for
    datasets that renamed them. ``dataset_name`` names the result (default:
    the atomic files' base name).
    """
    inter_path = locate_atomic(data_dir, atomic_name)
    stem = inter_path.stem
    inter_file = read_atomic(inter_path)
    inter_file.require(user_field)
    inter_file.require(item_field)
    table = inter_file.table
    meta: dict = {"source": "recbole", "files": [str(inter_path)]}
    inter = pd.DataFrame(
        {"user_id": table.strings(user_field, "a user id").to_numpy(), "item_id": table.strings(item_field, "an item id").to_numpy()}
    )
    if rating_field in inter_file.types:
        ratings = table.numbers(rating_field, "a number")
        lo, hi = (float(ratings.min()), float(ratings.max())) if len(ratings) else (1.0, 5.0)
        if lo < 1.0 or hi > 5.0:
            ratings = np.full_like(ratings, 5.0) if hi == lo else 1.0 + 4.0 * (ratings - lo) / (hi - lo)
            meta["rating_rescaled_from"] = (lo, hi)
        inter["rating"] = ratings
    else:
        inter["rating"] = 5.0
        meta["implicit"] = True
    if time_field in inter_file.types:
        inter["timestamp"] = np.floor(table.numbers(time_field, "a number (timestamp)")).astype(np.int64)
    else:
        inter["timestamp"] = np.arange(len(table), dtype=np.int64)
        meta["timestamp_from_file_order"] = True
    inter, meta["repeated_pairs_dropped"] = drop_repeated_pairs(inter)

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
    return build_dataset(dataset_name or stem, items, users, inter, meta)


def _items(atomic: AtomicFile, item_field: str, sep: str) -> pd.DataFrame:
    atomic.require(item_field)
    table = atomic.table
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
    table.unique(user_field)
    users = pd.DataFrame({"user_id": table.strings(user_field, "a user id").to_numpy()})
    if "age" in atomic.types:
        ages = pd.to_numeric(table.frame["age"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        users["age"] = np.where(np.isfinite(ages), ages, 0).astype(np.int64)
    for column in ("gender", "occupation"):
        if column in atomic.types:
            users[column] = table.frame[column].astype(str).to_numpy()
    return users
