"""Bad input to every loader, on generated fixtures: each case names its error.

Every case writes a tiny dataset in one official format (tests.data_fixtures),
breaks it the way a careless or unlucky user would, and asserts the error
type and that the message names the file, the line and the field (or the
option) at fault. A few cases check that nothing is silently changed: exact
big ids and timestamps, explicit deduplication with a count.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from starec_env.data import DataFormatError, DataOptionError, PreprocessConfig, load_dataset
from tests.data_fixtures import (
    TinyWorld,
    replace_line,
    tiny_world,
    write_amazon_ratings,
    write_amazon_reviews,
    write_ml1m,
    write_ml100k,
    write_ml100k_atomic,
)

RAW = PreprocessConfig(kcore=0)
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
#: Every control character a line may hold (all but the line breaks).
CONTROL = "".join(chr(c) for c in (*range(1, 32), 127) if c not in (10, 13))


@pytest.fixture
def world() -> TinyWorld:
    return tiny_world()


def _append(path: Path, line: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(path.read_bytes() + (line + "\n").encode(encoding))
    return path


def _first(path: Path, encoding: str = "utf-8") -> str:
    return path.read_bytes().decode(encoding).split("\n")[0]


def _lines(path: Path) -> int:
    return len(path.read_bytes().rstrip(b"\n").split(b"\n"))


def _recbole(folder: Path, rows: list[str], header: str = INTER_HEADER) -> Path:
    (folder / "data.inter").write_text("\n".join([header, *rows]) + "\n")
    return folder


# ----------------------------------------------------------------- format errors
# (id, dataset, writer(folder, world) -> None, loader options, file, line, field, fragment)
FORMAT_CASES: list[tuple[str, str, Callable[[Path, TinyWorld], Any], dict, str, int | None, str | None, str]] = [
    # ML-100K (official files)
    ("ml100k-empty-ratings", "ml-100k", lambda f, w: (write_ml100k(f, w), (f / "u.data").write_bytes(b"")), {},
     "u.data", None, None, "at least one rating line"),
    ("ml100k-blank-ratings", "ml-100k", lambda f, w: (write_ml100k(f, w), (f / "u.data").write_text("\n\n")), {},
     "u.data", None, None, "at least one rating line"),
    ("ml100k-duplicate-pair", "ml-100k", lambda f, w: _append(write_ml100k(f, w) / "u.data", "1\t{}\t3\t881250949".format(w.ratings[0][1])), {},
     "u.data", 57, "item id", "already on line 1"),
    ("ml100k-timestamp-overflow", "ml-100k", lambda f, w: replace_line(write_ml100k(f, w) / "u.data", 3, "1\t2\t3\t1e20"), {},
     "u.data", 3, "timestamp", "Unix timestamp"),
    ("ml100k-timestamp-beyond-int64", "ml-100k", lambda f, w: replace_line(write_ml100k(f, w) / "u.data", 4, "1\t2\t3\t" + "9" * 21), {},
     "u.data", 4, "timestamp", "Unix timestamp"),
    ("ml100k-negative-timestamp", "ml-100k", lambda f, w: replace_line(write_ml100k(f, w) / "u.data", 5, "1\t2\t3\t-5"), {},
     "u.data", 5, "timestamp", "non-negative"),
    ("ml100k-float-notation-user", "ml-100k", lambda f, w: replace_line(write_ml100k(f, w) / "u.data", 2, "1e3\t2\t3\t881250949"), {},
     "u.data", 2, "user id", "positive integer"),
    ("ml100k-decimal-item", "ml-100k", lambda f, w: replace_line(write_ml100k(f, w) / "u.data", 6, "1\t2.0\t3\t881250949"), {},
     "u.data", 6, "item id", "positive integer"),
    ("ml100k-rating-zero", "ml-100k", lambda f, w: replace_line(write_ml100k(f, w) / "u.data", 8, "1\t2\t0\t881250949"), {},
     "u.data", 8, "rating", "integer rating 1-5"),
    ("ml100k-half-star", "ml-100k", lambda f, w: replace_line(write_ml100k(f, w) / "u.data", 9, "1\t2\t4.5\t881250949"), {},
     "u.data", 9, "rating", "integer rating 1-5"),
    ("ml100k-empty-items", "ml-100k", lambda f, w: (write_ml100k(f, w), (f / "u.item").write_bytes(b"")), {},
     "u.item", None, None, "at least one movie line"),
    ("ml100k-unlisted-movie", "ml-100k", lambda f, w: replace_line(write_ml100k(f, w) / "u.data", 4, "1\t99\t3\t881250949"), {},
     "u.data", 4, "item id", "an id listed in u.item"),
    ("ml100k-item-id-float-notation", "ml-100k",
     lambda f, w: replace_line(write_ml100k(f, w) / "u.item", 2, "2e0|GoldenEye (1995)|01-Jan-1995||url" + "|0" * 19, "latin-1"), {},
     "u.item", 2, "movie id", "positive integer"),
    ("ml100k-same-movie-spelt-twice", "ml-100k",
     lambda f, w: replace_line(write_ml100k(f, w) / "u.item", 12, "01|Other (1990)|01-Jan-1990||url" + "|0" * 19, "latin-1"), {},
     "u.item", 12, "movie id", "already on line 1"),
    ("ml100k-empty-users", "ml-100k", lambda f, w: (write_ml100k(f, w), (f / "u.user").write_bytes(b"")), {},
     "u.user", None, None, "at least one user line"),
    ("ml100k-unlisted-user", "ml-100k", lambda f, w: replace_line(write_ml100k(f, w) / "u.data", 7, "42\t2\t3\t881250949"), {},
     "u.data", 7, "user id", "an id listed in u.user"),
    # ML-1M
    ("ml1m-empty-ratings", "ml-1m", lambda f, w: (write_ml1m(f, w), (f / "ratings.dat").write_bytes(b"")), {},
     "ratings.dat", None, None, "at least one rating line"),
    ("ml1m-empty-movies", "ml-1m", lambda f, w: (write_ml1m(f, w), (f / "movies.dat").write_bytes(b"")), {},
     "movies.dat", None, None, "at least one movie line"),
    ("ml1m-every-control-character", "ml-1m",
     lambda f, w: replace_line(write_ml1m(f, w) / "movies.dat", 3, f"3::{CONTROL}::Drama", "latin-1"), {},
     "movies.dat", None, None, "without control characters"),
    ("ml1m-duplicate-pair", "ml-1m", lambda f, w: _append(write_ml1m(f, w) / "ratings.dat", "1::{}::2::978300760".format(w.ratings[0][1])), {},
     "ratings.dat", 57, "MovieID", "already on line 1"),
    ("ml1m-float-notation-movie", "ml-1m", lambda f, w: replace_line(write_ml1m(f, w) / "ratings.dat", 3, "1::1e1::3::978300760"), {},
     "ratings.dat", 3, "MovieID", "positive integer"),
    ("ml1m-timestamp-overflow", "ml-1m", lambda f, w: replace_line(write_ml1m(f, w) / "ratings.dat", 4, "1::2::3::1e20"), {},
     "ratings.dat", 4, "Timestamp", "Unix timestamp"),
    ("ml1m-blank-users", "ml-1m", lambda f, w: (write_ml1m(f, w), (f / "users.dat").write_text("\n")), {},
     "users.dat", None, None, "at least one user line"),
    ("ml1m-unlisted-user", "ml-1m", lambda f, w: replace_line(write_ml1m(f, w) / "ratings.dat", 5, "77::2::3::978300760"), {},
     "ratings.dat", 5, "UserID", "an id listed in users.dat"),
    # Amazon
    ("amazon-empty-ratings", "amazon-cds", lambda f, w: (f / "CDs_and_Vinyl.csv").write_bytes(b""), {},
     "CDs_and_Vinyl.csv", None, None, "at least one rating line"),
    ("amazon-header-only-2023", "amazon-cds", lambda f, w: (f / "CDs_and_Vinyl.csv").write_text("user_id,parent_asin,rating,timestamp\n"), {},
     "CDs_and_Vinyl.csv", None, None, "no data lines"),
    ("amazon-empty-reviews", "amazon-cds", lambda f, w: (f / "CDs_and_Vinyl_5.json").write_text("\n"), {},
     "CDs_and_Vinyl_5.json", None, None, "at least one rating line"),
    ("amazon-duplicate-pair", "amazon-cds", lambda f, w: _append(write_amazon_ratings(f, w), _first(f / "CDs_and_Vinyl.csv")), {},
     "CDs_and_Vinyl.csv", 57, "item", "duplicates='latest'"),
    ("amazon-duplicate-review", "amazon-cds", lambda f, w: _append(write_amazon_reviews(f, w), _first(f / "CDs_and_Vinyl_5.json")), {},
     "CDs_and_Vinyl_5.json", 57, "asin", "already on line 1"),
    ("amazon-timestamp-overflow", "amazon-cds",
     lambda f, w: replace_line(write_amazon_ratings(f, w), 2, "B000000001,A000000000001Z,5.0,100000000000000000000"), {},
     "CDs_and_Vinyl.csv", 2, "timestamp", "Unix timestamp"),
    ("amazon-float-review-time", "amazon-cds",
     lambda f, w: replace_line(write_amazon_reviews(f, w), 3, '{"reviewerID": "A1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1.5e9}'), {},
     "CDs_and_Vinyl_5.json", 3, "unixReviewTime", "Unix timestamp"),
    ("amazon-rating-zero", "amazon-cds", lambda f, w: replace_line(write_amazon_ratings(f, w), 6, "B000000001,A000000000001Z,0,1369699200"), {},
     "CDs_and_Vinyl.csv", 6, "rating", "rating 1-5"),
    # RecBole atomic files
    ("recbole-one-outlier-rating", "recbole", lambda f, w: _recbole(f, ["u1\ti1\t4\t1", "u1\ti2\t500\t2", "u2\ti1\t3\t3"]), {},
     "data.inter", 3, "rating", "rating_range"),
    ("recbole-rating-zero", "recbole", lambda f, w: _recbole(f, ["u1\ti1\t0\t1", "u2\ti1\t3\t3"]), {},
     "data.inter", 2, "rating", "a rating 1-5"),
    ("recbole-rating-six", "recbole", lambda f, w: _recbole(f, ["u1\ti1\t3\t1", "u2\ti1\t6\t3"]), {},
     "data.inter", 3, "rating", "a rating 1-5"),
    ("recbole-outside-declared-range", "recbole", lambda f, w: _recbole(f, ["u1\ti1\t3\t1", "u2\ti1\t11\t3"]), {"rating_range": [0, 10]},
     "data.inter", 3, "rating", "within rating_range [0, 10]"),
    ("recbole-range-without-ratings", "recbole",
     lambda f, w: _recbole(f, ["u1\ti1\t1", "u2\ti1\t3"], "user_id:token\titem_id:token\ttimestamp:float"), {"rating_range": [0, 10]},
     "data.inter", 1, "rating", "'rating:float'"),
    ("recbole-header-only", "recbole", lambda f, w: _recbole(f, []), {},
     "data.inter", None, None, "at least one interaction line"),
    ("recbole-zero-bytes", "recbole", lambda f, w: (f / "data.inter").write_bytes(b""), {},
     "data.inter", 1, None, "a header line"),
    ("recbole-timestamp-overflow", "recbole", lambda f, w: _recbole(f, ["u1\ti1\t3\t1", "u2\ti1\t3\t1e20"]), {},
     "data.inter", 3, "timestamp", "magnitude at most 2**53"),
    ("recbole-timestamp-text", "recbole", lambda f, w: _recbole(f, ["u1\ti1\t3\tyesterday"]), {},
     "data.inter", 2, "timestamp", "a timestamp"),
    ("recbole-duplicate-pair", "recbole", lambda f, w: _recbole(f, ["u1\ti1\t3\t1", "u2\ti1\t3\t2", "u1\ti1\t5\t3"]), {},
     "data.inter", 4, "item_id", "already on line 2"),
    ("recbole-header-only-items", "recbole",
     lambda f, w: (_recbole(f, ["u1\ti1\t3\t1"]), (f / "data.item").write_text("item_id:token\ttitle:token_seq\n")), {},
     "data.item", None, None, "at least one item line"),
    ("recbole-age-out-of-range", "recbole",
     lambda f, w: (_recbole(f, ["u1\ti1\t3\t1"]), (f / "data.user").write_text("user_id:token\tage:float\nu1\t500\n")), {},
     "data.user", 2, "age", "an age 0-150"),
    ("recbole-age-text", "recbole",
     lambda f, w: (_recbole(f, ["u1\ti1\t3\t1"]), (f / "data.user").write_text("user_id:token\tage:token\nu1\tadult\n")), {},
     "data.user", 2, "age", "an age 0-150"),
]


@pytest.mark.parametrize(("case", "dataset", "write", "options", "name", "line", "field", "fragment"), FORMAT_CASES,
                         ids=[c[0] for c in FORMAT_CASES])
def test_bad_file_names_file_line_and_field(tmp_path: Path, world: TinyWorld, case, dataset, write, options, name, line, field,
                                            fragment) -> None:
    write(tmp_path, world)
    with pytest.raises(DataFormatError) as err:
        load_dataset(dataset, tmp_path, RAW, **options)
    error, message = err.value, str(err.value)
    assert (error.path.name, error.line, error.field) == (name, line, field), message
    assert str(tmp_path / name) in message and fragment in message, message
    if line is not None:
        assert f"line {line}" in message
    if field is not None:
        assert repr(field) in message


# ------------------------------------------------------------------ option errors
# (id, dataset, writer or None, options, seed, words the message must hold)
OPTION_CASES = [
    ("ml100k-duplicates-value", "ml-100k", write_ml100k, {"duplicates": "maybe"}, 0, ["ml-100k", "duplicates", "'maybe'"]),
    ("ml100k-unknown-option", "ml-100k", write_ml100k, {"rating_range": [1, 5]}, 0, ["ml-100k", "rating_range"]),
    ("ml1m-duplicates-type", "ml-1m", write_ml1m, {"duplicates": True}, 0, ["ml-1m", "duplicates", "True"]),
    ("amazon-source", "amazon-cds", write_amazon_ratings, {"source": "web"}, 0, ["amazon-cds", "source", "'web'"]),
    ("amazon-columns", "amazon-cds", write_amazon_ratings, {"columns": "item user"}, 0, ["amazon-cds", "columns"]),
    ("amazon-category", "amazon-cds", write_amazon_ratings, {"category": ""}, 0, ["amazon-cds", "category"]),
    ("amazon-duplicates", "amazon-cds", write_amazon_ratings, {"duplicates": "first"}, 0, ["amazon-cds", "duplicates", "'first'"]),
    ("recbole-range-reversed", "recbole", write_ml100k_atomic, {"rating_range": [5, 1]}, 0, ["rating_range", "[5, 1]"]),
    ("recbole-range-text", "recbole", write_ml100k_atomic, {"rating_range": "1-5"}, 0, ["rating_range", "'1-5'"]),
    ("recbole-range-one-number", "recbole", write_ml100k_atomic, {"rating_range": [10]}, 0, ["rating_range", "[10]"]),
    ("recbole-range-bools", "recbole", write_ml100k_atomic, {"rating_range": [True, 5]}, 0, ["rating_range"]),
    ("recbole-separator", "recbole", write_ml100k_atomic, {"seq_separator": ", "}, 0, ["seq_separator", "', '"]),
    ("recbole-atomic-name", "recbole", write_ml100k_atomic, {"atomic_name": 5}, 0, ["atomic_name", "5"]),
    ("recbole-field-name", "recbole", write_ml100k_atomic, {"user_field": ""}, 0, ["_field"]),
    ("synthetic-negative-size", "synthetic", None, {"n_users": -5}, 0, ["synthetic", "n_users", "-5"]),
    ("synthetic-text-size", "synthetic", None, {"n_items": "400"}, 0, ["synthetic", "n_items", "'400'"]),
    ("synthetic-fractional-size", "synthetic", None, {"n_users": 2.5}, 0, ["n_users", "2.5"]),
    ("synthetic-bool-size", "synthetic", None, {"n_users": True}, 0, ["n_users", "True"]),
    ("synthetic-zero-temperature", "synthetic", None, {"temperature": 0.0}, 0, ["temperature", "0.0"]),
    ("synthetic-nan", "synthetic", None, {"rating_noise": float("nan")}, 0, ["rating_noise", "nan"]),
    ("synthetic-years-reversed", "synthetic", None, {"year_range": [2000, 1990]}, 0, ["year_range"]),
    ("synthetic-typo", "synthetic", None, {"n_user": 30}, 0, ["synthetic", "n_user"]),
    ("synthetic-negative-seed", "synthetic", None, {}, -1, ["seed", "-1"]),
    ("unknown-dataset", "ml-10m", None, {}, 0, ["ml-10m", "ml-100k"]),
]


@pytest.mark.parametrize(("case", "dataset", "write", "options", "seed", "words"), OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_bad_option_names_the_option(tmp_path: Path, world: TinyWorld, case, dataset, write, options, seed, words) -> None:
    if write is not None:
        write(tmp_path, world)
    with pytest.raises(DataOptionError) as err:
        load_dataset(dataset, tmp_path if write else None, RAW, seed=seed, **options)
    for word in words:
        assert word in str(err.value), str(err.value)


# (id, settings, the setting named)
PREPROCESS_CASES = [
    ("kcore-bool", {"kcore": True}, "kcore"),
    ("kcore-negative", {"kcore": -1}, "kcore"),
    ("history-zero", {"max_history": 0}, "max_history"),
    ("threshold-nan", {"positive_threshold": float("nan")}, "positive_threshold"),
    ("threshold-text", {"positive_threshold": "3"}, "positive_threshold"),
    ("max-users-zero", {"max_users": 0}, "max_users"),
    ("typo", {"k_core": 5}, "k_core"),
]


@pytest.mark.parametrize(("case", "settings", "name"), PREPROCESS_CASES, ids=[c[0] for c in PREPROCESS_CASES])
def test_bad_preprocess_setting_names_it(case, settings, name) -> None:
    with pytest.raises(ValueError, match=name):
        PreprocessConfig.from_dict(settings)


# ------------------------------------------------- nothing changed without a word
def test_big_ids_and_timestamps_stay_exact(tmp_path: Path) -> None:
    """2**53 and 2**53 + 1 were one user through float64; 1e20 became INT64_MIN."""
    big = 2**53
    (tmp_path / "u.data").write_text(f"{big}\t1\t4\t{big + 1}\n{big + 1}\t1\t5\t{big + 3}\n{big}\t07\t3\t5\n")
    (tmp_path / "u.item").write_text("1|A (1995)|||url" + "|0" * 19 + "\n7|B (1996)|||url" + "|0" * 19 + "\n", encoding="latin-1")
    ds = load_dataset("ml-100k", tmp_path, RAW)
    assert sorted(ds.users["user_id"]) == [str(big), str(big + 1)] and sorted(ds.items["item_id"]) == ["1", "7"]
    assert sorted(ds.interactions["timestamp"].tolist()) == [5, big + 1, big + 3]


def test_recbole_timestamps_exact_and_decimals_floored(tmp_path: Path) -> None:
    _recbole(tmp_path, ["u1\ti1\t3\t9007199254740993", "u1\ti2\t4\t12.9", "u2\ti1\t5\t-3"])
    ds = load_dataset("recbole", tmp_path, RAW)
    assert sorted(ds.interactions["timestamp"].tolist()) == [-3, 12, 9007199254740993]


def test_recbole_rescaling_is_explicit_and_counted(tmp_path: Path, caplog) -> None:
    _recbole(tmp_path, ["u1\ti1\t0\t1", "u1\ti2\t10\t2", "u2\ti1\t5\t3"])
    ds = load_dataset("recbole", tmp_path, RAW, rating_range=[0, 10])
    assert sorted(ds.rating_arr.tolist()) == [1.0, 3.0, 5.0]
    assert ds.summary()["loader"]["ratings_rescaled"] == {"from": [0.0, 10.0], "rows": 3}
    assert "rescaled 3 ratings from [0, 10]" in caplog.text and "data.inter" in caplog.text


@pytest.mark.parametrize("dataset", ["ml-100k", "ml-1m", "amazon-cds", "recbole"])
def test_deduplication_is_one_explicit_counted_option_in_every_loader(tmp_path: Path, world: TinyWorld, dataset: str, caplog) -> None:
    """The same repeated pair: refused by default, kept latest (and counted) on request, in every loader."""
    writer, name = {"ml-100k": (write_ml100k, "u.data"), "ml-1m": (write_ml1m, "ratings.dat"),
                    "amazon-cds": (write_amazon_ratings, "CDs_and_Vinyl.csv"),
                    "recbole": (write_ml100k_atomic, "ml-100k.inter")}[dataset]  # fmt: skip
    writer(tmp_path, world)
    path = tmp_path / name
    encoding = "latin-1" if dataset == "ml-1m" else "utf-8"
    rows = path.read_bytes().decode(encoding).rstrip("\n").split("\n")
    first = 1 if dataset == "recbole" else 0  # the atomic file's header
    _append(path, rows[first], encoding)
    with pytest.raises(DataFormatError, match=f"line {_lines(path)},.*already on line {first + 1}"):
        load_dataset(dataset, tmp_path, RAW)
    ds = load_dataset(dataset, tmp_path, RAW, duplicates="latest")
    assert len(ds.interactions) == len(world.ratings) and ds.summary()["loader"]["repeated_pairs_dropped"] == 1
    assert "dropped 1 repeated (user, item) rows" in caplog.text


def test_placeholders_for_missing_metadata_are_counted(tmp_path: Path, world: TinyWorld, caplog) -> None:
    write_ml100k_atomic(tmp_path, world, name="data")
    items = (tmp_path / "data.item").read_text().split("\n")
    (tmp_path / "data.item").write_text("\n".join(items[:4]) + "\n")  # 3 of 12 items keep their metadata
    ds = load_dataset("recbole", tmp_path, RAW)
    assert ds.summary()["loader"]["placeholder_items"] == len(set(ds.items["item_id"]) - {"1", "2", "3"}) > 0
    assert "rated items are missing from its item table" in caplog.text
    assert int(np.sum(ds.items["title"].str.startswith("Item "))) == ds.meta["placeholder_items"]
