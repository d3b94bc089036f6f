"""Writers of tiny data files in every supported official format.

MovieLens data may not be redistributed, so tests write their own: one small
seeded world (:func:`tiny_world`) rendered into each format, which also lets
tests check that different formats of the same data load identically.
:func:`replace_line` then corrupts one line to test error messages.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_TITLES = (
    ("Toy Story", 1995, ("Animation", "Children's", "Comedy")),
    ("GoldenEye", 1995, ("Action", "Adventure", "Thriller")),
    ("Misérables, Les", 1995, ("Drama", "Musical")),
    ('Dr. Strangelove or: How I Learned to Stop Worrying and Love the "Bomb"', 1963, ("Sci-Fi", "War")),
    ("Usual Suspects, The", 1995, ("Crime", "Thriller")),
    ("Fargo", 1996, ("Crime", "Drama", "Thriller")),
    ("Alien", 1979, ("Action", "Horror", "Sci-Fi", "Thriller")),
    ("Casablanca", 1942, ("Drama", "Romance", "War")),
    ("Cérémonie, La", 1995, ("Drama",)),
    ("Wallace & Gromit: The Best of Aardman Animation", 1996, ("Animation",)),
    ("Heat", 1995, ("Action", "Crime", "Thriller")),
    ("unknown", 0, ()),
)
_OCCUPATIONS = ("technician", "other", "writer", "executive", "student", "programmer")
ML1M_AGES = (1, 18, 25, 35, 45, 50, 56)


@dataclass(frozen=True)
class TinyWorld:
    """``items``: (id, title, year, genres); ``users``: (id, age, gender, occupation,
    ML-1M occupation code); ``ratings``: (user, item, rating, timestamp) rows."""

    items: list[tuple[int, str, int, tuple[str, ...]]]
    users: list[tuple[int, int, str, str, int]]
    ratings: list[tuple[int, int, int, int]]


def tiny_world(n_users: int = 8, per_user: int = 7, seed: int = 0) -> TinyWorld:
    rng = np.random.default_rng(seed)
    items = [(i + 1, title, year, genres) for i, (title, year, genres) in enumerate(_TITLES)]
    users = [
        (u + 1, ML1M_AGES[u % len(ML1M_AGES)], "MF"[u % 2], _OCCUPATIONS[u % len(_OCCUPATIONS)], (3 * u) % 21)
        for u in range(n_users)
    ]
    ratings = []
    for user, *_ in users:
        chosen = rng.choice(len(items), size=per_user, replace=False)
        times = 880000000 + np.sort(rng.choice(10**6, size=per_user, replace=False))
        for item, t in zip(chosen, times):
            ratings.append((user, int(item) + 1, int(rng.integers(1, 6)), int(t)))
    return TinyWorld(items, users, ratings)


def _write(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode(encoding)
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_ml100k(folder: Path, world: TinyWorld) -> Path:
    """Official ML-100K: u.data (tab), u.item and u.user (|, latin-1)."""
    _write(folder / "u.data", [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in world.ratings])
    rows = []
    for item, title, year, genres in world.items:
        date = f"01-Jan-{year}" if year else ""
        shown = f"{title} ({year})" if year else title
        flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
        rows.append(f"{item}|{shown}|{date}||http://us.imdb.com/M/title-exact?{item}|{flags}")
    _write(folder / "u.item", rows, "latin-1")
    _write(folder / "u.user", [f"{u}|{age}|{g}|{occ}|5540{u}" for u, age, g, occ, _ in world.users], "latin-1")
    return folder


def write_ml100k_atomic(folder: Path, world: TinyWorld, name: str = "ml-100k") -> Path:
    """The same data as RecBole's atomic files (the layout shipped in the recbole wheel)."""
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in world.ratings]
    _write(folder / f"{name}.inter", inter)
    item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    item += [f"{i}\t{title}\t{year or 'unknown'}\t{' '.join(genres) or 'unknown'}" for i, title, year, genres in world.items]
    _write(folder / f"{name}.item", item)
    user = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    user += [f"{u}\t{age}\t{g}\t{occ}\t5540{u}" for u, age, g, occ, _ in world.users]
    _write(folder / f"{name}.user", user)
    return folder


def write_ml1m(folder: Path, world: TinyWorld) -> Path:
    """Official ML-1M: ratings.dat, movies.dat, users.dat (``::``, latin-1)."""
    _write(folder / "ratings.dat", [f"{u}::{i}::{r}::{t}" for u, i, r, t in world.ratings], "latin-1")
    movies = [f"{i}::{t} ({y})::{'|'.join(g) or '(no genres listed)'}" if y else f"{i}::{t}::{'|'.join(g) or '(no genres listed)'}" for i, t, y, g in world.items]
    _write(folder / "movies.dat", movies, "latin-1")
    _write(folder / "users.dat", [f"{u}::{g}::{age}::{code}::5540{u}" for u, age, g, _, code in world.users], "latin-1")
    return folder


def amazon_user(user: int) -> str:
    return f"A{user:012d}Z"


def amazon_item(item: int) -> str:
    return f"B{item:09d}"


def write_amazon_ratings(folder: Path, world: TinyWorld, layout: str = "2018", gz: bool = False) -> Path:
    """Headerless ratings CSV: 2018 ``CDs_and_Vinyl.csv`` (item first), 2014 ``ratings_...`` (user first)."""
    rows = []
    for u, i, r, t in world.ratings:
        first, second = (amazon_item(i), amazon_user(u)) if layout == "2018" else (amazon_user(u), amazon_item(i))
        rows.append(f"{first},{second},{float(r)},{t}")
    name = "CDs_and_Vinyl.csv" if layout == "2018" else "ratings_CDs_and_Vinyl.csv"
    return _write(folder / (name + (".gz" if gz else "")), rows)


def write_amazon_reviews(folder: Path, world: TinyWorld) -> Path:
    """5-core reviews JSON lines (2018 keys, plus review text the loader ignores)."""
    rows = [
        json.dumps(
            {"overall": float(r), "verified": True, "reviewerID": amazon_user(u), "asin": amazon_item(i),
             "reviewText": "Great record, \"loud\".", "unixReviewTime": t}  # fmt: skip
        )
        for u, i, r, t in world.ratings
    ]
    return _write(folder / "CDs_and_Vinyl_5.json", rows)


def write_amazon_meta(folder: Path, world: TinyWorld, style: str = "2018") -> Path:
    """Metadata JSON lines: 2018 (``category`` path, ``date``) or 2014 (Python literals, nested ``categories``)."""
    rows = []
    for i, title, year, genres in world.items:
        if style == "2018":
            record = {"asin": amazon_item(i), "title": title.replace("&", "&amp;"), "category": ["CDs & Vinyl", *genres[:1]],
                      "date": f"June 5, {year}" if year else "", "description": [f"A {' '.join(genres).lower()} album.", "Remastered."]}  # fmt: skip
            rows.append(json.dumps(record))
        else:
            record = {"asin": amazon_item(i), "title": title, "categories": [["CDs & Vinyl", g] for g in genres]}
            rows.append(repr(record))
    return _write(folder / "meta_CDs_and_Vinyl.json", rows)


def replace_line(path: Path, line: int, text: str, encoding: str = "utf-8") -> Path:
    """Overwrite 1-based ``line`` of a (plain) file with ``text``: how malformed rows are made."""
    lines = path.read_bytes().decode(encoding).split("\n")
    lines[line - 1] = text
    path.write_bytes("\n".join(lines).encode(encoding))
    return path
