"""Amazon review data (McAuley lab, 2014 / 2018 / 2023 releases), e.g. CDs & Vinyl.

Files looked for in ``data_dir``, for ``category="CDs_and_Vinyl"`` (each also
as ``.gz``; JSON lines also as ``.jsonl``):

- ratings CSV, no header: ``CDs_and_Vinyl.csv`` (2018: ``item,user,rating,
  timestamp``) or ``ratings_CDs_and_Vinyl.csv`` (2014: ``user,item,rating,
  timestamp``). The column order is detected from the ids (ASINs are 10
  characters of digits/capitals, reviewer ids are longer); when that is
  ambiguous ``user,item`` is assumed; ``columns=`` overrides. A 2023 CSV with
  a ``user_id,parent_asin,rating,timestamp`` header is read by its header.
- 5-core reviews JSON lines: ``CDs_and_Vinyl_5.json`` or
  ``reviews_CDs_and_Vinyl_5.json`` with keys ``reviewerID``, ``asin``,
  ``overall``, ``unixReviewTime``.
- metadata JSON lines (optional): ``meta_CDs_and_Vinyl.json`` with ``asin``,
  ``title``, ``category`` (2018: a path list) or ``categories`` (2014: a list
  of path lists; Python-literal lines are accepted), ``date``, ``description``.

With both interaction sources present the ratings CSV is used (the paper's
CDs statistics match the full 2018 ratings file); ``source="reviews"``
chooses the 5-core file. Genres are the categories one level below the store
root ("CDs & Vinyl" > "Rock" gives "Rock"). Millisecond timestamps (2023)
become seconds. A (user, item) pair rated twice is an error unless the
option ``duplicates="latest"`` keeps its latest rating (the full ratings
files do repeat a few pairs; the dropped rows are logged and counted in
``meta["repeated_pairs_dropped"]``). Items without metadata get a
placeholder title, counted in ``meta["placeholder_items"]``.
"""
from __future__ import annotations

import ast
import dataclasses
import gzip
import html
import json
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from starec_env.data.errors import DataFormatError, DataOptionError, DatasetNotFoundError, check_choice
from starec_env.data.model import Dataset, build_dataset
from starec_env.data.tables import (
    DUPLICATE_POLICIES,
    Table,
    find_file,
    read_delimited,
    read_text,
    repeated_pairs,
    split_lines,
    year_from_text,
)

_ASIN = re.compile(r"^[0-9A-Z]{10}$")
_DESCRIPTION_CHARS = 500
_MS_TIMESTAMP = 10**11  # seconds beyond the year 5000: the value must be in milliseconds
_HEADER_ITEM_FIELDS = ("parent_asin", "asin", "item_id")
REVIEW_KEYS = ("reviewerID", "asin", "overall", "unixReviewTime")


def _names(stem: str, extensions: tuple[str, ...]) -> list[str]:
    return [stem + ext + gz for ext in extensions for gz in ("", ".gz")]


def load_amazon(
    data_dir: Path | None,
    *,
    category: str = "CDs_and_Vinyl",
    source: str = "auto",
    columns: str = "auto",
    duplicates: str = "error",
    dataset_name: str = "amazon-cds",
) -> Dataset:
    """Load one Amazon category from ``data_dir`` (see the module docstring for files)."""
    if not isinstance(category, str) or not category or "/" in category:
        raise DataOptionError(f"dataset {dataset_name!r} option category: expected a file-name stem such as 'CDs_and_Vinyl', got {category!r}")
    check_choice(dataset_name, "source", source, ("auto", "ratings", "reviews"))
    check_choice(dataset_name, "columns", columns, ("auto", "user,item", "item,user"))
    check_choice(dataset_name, "duplicates", duplicates, DUPLICATE_POLICIES)
    rating_names = _names(category, (".csv",)) + _names(f"ratings_{category}", (".csv",))
    review_names = _names(f"{category}_5", (".json", ".jsonl")) + _names(f"reviews_{category}_5", (".json", ".jsonl"))
    meta_names = _names(f"meta_{category}", (".json", ".jsonl"))
    if data_dir is None:
        raise DatasetNotFoundError(
            dataset_name, [f"<data_dir>/{n}" for n in rating_names + review_names],
            "download the category's ratings CSV or 5-core reviews from the McAuley lab's Amazon review data pages and pass their folder as data_dir (--data-dir)",
        )  # fmt: skip
    folders = [Path(data_dir)]
    ratings = find_file(folders, rating_names) if source != "reviews" else None
    reviews = find_file(folders, review_names) if source != "ratings" and ratings is None else None
    meta: dict[str, Any] = {"files": [str(ratings or reviews)]}
    if ratings is not None:
        (inter, meta["repeated_pairs_dropped"]), meta["columns"] = _read_ratings(ratings, columns, duplicates)
        meta["source"] = "ratings"
    elif reviews is not None:
        inter, meta["repeated_pairs_dropped"] = _read_reviews(reviews, duplicates)
        meta["source"] = "reviews"
    else:
        wanted = (rating_names if source != "reviews" else []) + (review_names if source != "ratings" else [])
        raise DatasetNotFoundError(dataset_name, [Path(data_dir) / n for n in wanted])

    items = pd.DataFrame({"item_id": pd.Series([], dtype=str)})
    meta_path = find_file(folders, meta_names)
    if meta_path is not None:
        items = _read_metadata(meta_path, set(inter["item_id"]))
        meta["files"].append(str(meta_path))
    return build_dataset(dataset_name, items, pd.DataFrame({"user_id": pd.Series([], dtype=str)}), inter, meta)


def _read_ratings(path: Path, columns: str, duplicates: str) -> tuple[tuple[pd.DataFrame, int], str]:
    text = read_text(path)
    first = next((line for line in split_lines(text) if line.strip()), "")
    if first.startswith("user_id,"):
        header = first.split(",")
        item = next((f for f in _HEADER_ITEM_FIELDS if f in header), None)
        if item is None or "rating" not in header or "timestamp" not in header:
            raise DataFormatError(path, 1, None, "a header with user_id, parent_asin (or asin), rating and timestamp", first)
        table = read_delimited(path, ",", header, skip_lines=1, text=text, numeric=["rating"])
        user, order = "user_id", "header"
    else:
        table = read_delimited(path, ",", ["col1", "col2", "rating", "timestamp"], text=text, numeric=["rating"])
        order = _column_order(table) if columns == "auto" else columns
        user, item = ("col1", "col2") if order == "user,item" else ("col2", "col1")
        table = dataclasses.replace(table, frame=table.frame.rename(columns={user: "user", item: "item"}))
        user, item = "user", "item"
    return _interactions(table, user, item, "rating", "timestamp", duplicates), order


def _column_order(table: Table) -> str:
    """2014 files put the user first, 2018 files the item: tell by which column holds ASINs."""
    head = table.frame.head(1000)
    asin_share = [head[c].astype(str).str.fullmatch(_ASIN.pattern).mean() if len(head) else 0.0 for c in ("col1", "col2")]
    return "item,user" if asin_share[0] > asin_share[1] else "user,item"


def _interactions(table: Table, user: str, item: str, rating: str, timestamp: str, duplicates: str) -> tuple[pd.DataFrame, int]:
    """Validated interactions (timestamps in seconds) and how many repeated pairs were dropped."""
    table.require_rows("rating")
    times = table.integers(timestamp, "a Unix timestamp (non-negative integer)", lo=0)
    inter = pd.DataFrame(
        {
            "user_id": table.strings(user, "a user id").to_numpy(),
            "item_id": table.strings(item, "an item id (ASIN)").to_numpy(),
            "rating": table.numbers(rating, "a rating 1-5", lo=1, hi=5),
            "timestamp": np.where(times >= _MS_TIMESTAMP, times // 1000, times),
        }
    )
    return repeated_pairs(inter, table, user, item, duplicates)


def _read_reviews(path: Path, duplicates: str) -> tuple[pd.DataFrame, int]:
    rows: dict[str, list] = {key: [] for key in REVIEW_KEYS}
    lines: list[int] = []
    for line, record in iter_json_lines(path):
        for key in REVIEW_KEYS:
            if key not in record:
                raise DataFormatError(path, line, key, f"a JSON object with keys {', '.join(REVIEW_KEYS)}")
            if key in ("reviewerID", "asin") and not isinstance(record[key], str):
                raise DataFormatError(path, line, key, "a string id", record[key])
            rows[key].append(record[key])
        lines.append(line)
    frame = pd.DataFrame({k: pd.Series(v, dtype=object).astype(str) for k, v in rows.items()})
    table = Table(path, frame, np.asarray(lines, dtype=np.int64))
    return _interactions(table, "reviewerID", "asin", "overall", "unixReviewTime", duplicates)


def _read_metadata(path: Path, wanted: set[str]) -> pd.DataFrame:
    """Titles, second-level categories, year and a clipped description of the wanted ASINs."""
    rows = []
    for line, record in iter_json_lines(path):
        asin = record.get("asin")
        if not isinstance(asin, str) or not asin:
            raise DataFormatError(path, line, "asin", "a non-empty string ASIN", asin)
        if asin not in wanted:
            continue
        rows.append(
            {
                "item_id": asin,
                "title": _clean(record.get("title", "")),
                "genres": _genres(record, path, line),
                "year": year_from_text(record.get("date", "")),
                "description": _clean(record.get("description", ""))[:_DESCRIPTION_CHARS],
            }
        )
    return pd.DataFrame(rows, columns=["item_id", "title", "genres", "year", "description"])


def _genres(record: dict, path: Path, line: int) -> tuple[str, ...]:
    if "category" in record:  # 2018: one path, root first
        paths, field = [record["category"]], "category"
    else:  # 2014: several paths
        paths, field = record.get("categories", []), "categories"
    if not isinstance(paths, list) or not all(isinstance(p, list) and all(isinstance(c, str) for c in p) for p in paths):
        expected = "a list of category names" if field == "category" else "a list of lists of category names"
        raise DataFormatError(path, line, field, expected, str(record.get(field)))
    out: list[str] = []
    for trail in paths:
        if len(trail) > 1:
            name = _clean(trail[1])
            if name and name not in out:
                out.append(name)
    return tuple(out)


def _clean(value: Any) -> str:
    """Plain text from a metadata value: lists joined, HTML entities decoded, spaces collapsed."""
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    return " ".join(html.unescape(str(value)).split())


def iter_json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line; 2014 metadata's Python-literal lines accepted."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise DataFormatError(path, number, None, "UTF-8 text", raw[:40]) from None
                if text.strip():
                    yield number, _parse_object(text, path, number)
    except (OSError, EOFError) as exc:
        raise DataFormatError(path, None, None, "a readable (gzip) JSON-lines file", str(exc)) from None


def _parse_object(text: str, path: Path, line: int) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataFormatError(path, line, None, "one JSON object per line", text.strip()) from None
    if not isinstance(value, dict):
        raise DataFormatError(path, line, None, "one JSON object per line", text.strip())
    return value
