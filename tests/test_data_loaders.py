"""Loaders on generated fixtures of every format (good and malformed) and on real ML-100K."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from starec_env.data import (
    DataFormatError,
    DataOptionError,
    DatasetNotFoundError,
    PreprocessConfig,
    load_dataset,
)
from starec_env.data.movielens import ML1M_OCCUPATIONS, recbole_ml100k_dir
from tests.data_fixtures import (
    TinyWorld,
    amazon_item,
    amazon_user,
    replace_line,
    tiny_world,
    write_amazon_meta,
    write_amazon_ratings,
    write_amazon_reviews,
    write_ml1m,
    write_ml100k,
    write_ml100k_atomic,
)

RAW = PreprocessConfig(kcore=0)


@pytest.fixture
def world() -> TinyWorld:
    return tiny_world()


def _ratings_by_id(ds) -> set[tuple[str, str, float, int]]:
    inter = ds.interactions
    users = ds.users["user_id"].to_numpy()[inter["user"].to_numpy()]
    items = ds.items["item_id"].to_numpy()[inter["item"].to_numpy()]
    return set(zip(users, items, inter["rating"].astype(float), inter["timestamp"].astype(int)))


def _expected_ratings(world: TinyWorld, user_id=str, item_id=str) -> set[tuple[str, str, float, int]]:
    return {(user_id(u), item_id(i), float(r), t) for u, i, r, t in world.ratings}


def _item(ds, item_id: str) -> pd.Series:
    return ds.items.set_index("item_id").loc[item_id]


def test_ml100k_official_files(tmp_path: Path, world: TinyWorld) -> None:
    ds = load_dataset("ml-100k", write_ml100k(tmp_path, world), RAW)
    assert ds.name == "ml-100k" and ds.meta["source"] == "official"
    assert _ratings_by_id(ds) == _expected_ratings(world)
    assert (ds.n_users, ds.n_items) == (8, 12)
    toy = _item(ds, "1")
    assert (toy["title"], toy["year"], toy["genres"]) == ("Toy Story", 1995, ("Animation", "Children's", "Comedy"))
    assert _item(ds, "3")["title"] == "Misérables, Les"  # latin-1 decoded
    assert '"Bomb"' in _item(ds, "4")["title"]  # quotes are data, not CSV quoting
    unknown = _item(ds, "12")
    assert (unknown["title"], unknown["year"], unknown["genres"]) == ("unknown", 0, ())
    user = ds.users.set_index("user_id").loc["3"]
    assert (user["age"], user["gender"], user["occupation"]) == (25, "M", "writer")
    # interactions sorted by user then time, as the Dataset model promises
    inter = ds.interactions
    assert (np.diff(inter["user"].to_numpy()) >= 0).all()
    for _, hist in inter.groupby("user"):
        assert hist["timestamp"].is_monotonic_increasing


def test_ml100k_official_and_recbole_copy_load_identically(tmp_path: Path, world: TinyWorld) -> None:
    official = load_dataset("ml-100k", write_ml100k(tmp_path / "official", world), RAW)
    atomic = load_dataset("ml-100k", write_ml100k_atomic(tmp_path / "atomic", world), RAW)
    assert atomic.meta["source"] == "recbole"
    for a, b in ((official.items, atomic.items), (official.users, atomic.users), (official.interactions, atomic.interactions)):
        pd.testing.assert_frame_equal(a, b)


def test_ml100k_found_in_installed_recbole_package(tmp_path: Path, world: TinyWorld, monkeypatch) -> None:
    fake = tmp_path / "site" / "recbole"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    write_ml100k_atomic(fake / "dataset_example" / "ml-100k", world)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert recbole_ml100k_dir() == fake / "dataset_example" / "ml-100k"
    ds = load_dataset("ml-100k", preprocess=RAW)
    assert _ratings_by_id(ds) == _expected_ratings(world)


def test_ml100k_missing_everywhere_says_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("starec_env.data.movielens.recbole_ml100k_dir", lambda: None)
    with pytest.raises(DatasetNotFoundError, match=r"pip install --no-deps recbole==1\.2\.1"):
        load_dataset("ml-100k")
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("ml-100k", tmp_path)
    assert str(tmp_path / "u.data") in str(err.value) and str(tmp_path / "ml-100k.inter") in str(err.value)


def test_ml100k_needs_item_file(tmp_path: Path, world: TinyWorld) -> None:
    write_ml100k(tmp_path, world)
    (tmp_path / "u.item").unlink()
    with pytest.raises(DatasetNotFoundError, match="u.item"):
        load_dataset("ml-100k", tmp_path)


def test_ml1m_official_files(tmp_path: Path, world: TinyWorld) -> None:
    (tmp_path / "ml-1m").mkdir()
    write_ml1m(tmp_path / "ml-1m", world)
    ds = load_dataset("ml-1m", tmp_path, RAW)  # the unzipped folder's parent works too
    assert _ratings_by_id(ds) == _expected_ratings(world)
    casablanca = _item(ds, "8")
    assert (casablanca["title"], casablanca["year"], casablanca["genres"]) == ("Casablanca", 1942, ("Drama", "Romance", "War"))
    assert _item(ds, "9")["title"] == "Cérémonie, La"
    assert _item(ds, "12")["genres"] == ()
    users = ds.users.set_index("user_id")
    for u, age, gender, _, code in world.users:
        row = users.loc[str(u)]
        assert (row["age"], row["gender"], row["occupation"]) == (age, gender, ML1M_OCCUPATIONS[code])


def test_ml1m_without_users_file(tmp_path: Path, world: TinyWorld) -> None:
    write_ml1m(tmp_path, world)
    (tmp_path / "users.dat").unlink()
    ds = load_dataset("ml-1m", tmp_path, RAW)
    assert (ds.users["age"] == 0).all() and (ds.users["gender"] == "").all()


@pytest.mark.parametrize("layout", ["2018", "2014"])
def test_amazon_ratings_csv_column_order_detected(tmp_path: Path, world: TinyWorld, layout: str) -> None:
    write_amazon_ratings(tmp_path, world, layout, gz=layout == "2014")
    ds = load_dataset("amazon-cds", tmp_path, RAW)
    assert ds.meta["columns"] == ("item,user" if layout == "2018" else "user,item")
    assert _ratings_by_id(ds) == _expected_ratings(world, amazon_user, amazon_item)
    assert _item(ds, amazon_item(1))["title"] == f"Item {amazon_item(1)}"  # no metadata: placeholder


def test_amazon_column_override(tmp_path: Path, world: TinyWorld) -> None:
    write_amazon_ratings(tmp_path, world, "2018")
    ds = load_dataset("amazon-cds", tmp_path, RAW, columns="user,item")  # deliberately wrong: ASINs become users
    assert set(ds.users["user_id"]) == {amazon_item(i) for _, i, _, _ in world.ratings}


@pytest.mark.parametrize("style", ["2018", "2014"])
def test_amazon_reviews_with_metadata(tmp_path: Path, world: TinyWorld, style: str) -> None:
    write_amazon_reviews(tmp_path, world)
    write_amazon_meta(tmp_path, world, style)
    ds = load_dataset("amazon-cds", tmp_path, RAW)
    assert ds.meta["source"] == "reviews"
    assert _ratings_by_id(ds) == _expected_ratings(world, amazon_user, amazon_item)
    alien = _item(ds, amazon_item(7))
    assert alien["title"] == "Alien"
    if style == "2018":
        assert alien["genres"] == ("Action",) and alien["year"] == 1979
        assert alien["description"].startswith("A action horror")
        assert _item(ds, amazon_item(10))["title"].startswith("Wallace & Gromit")  # HTML entity decoded
    else:
        assert alien["genres"] == ("Action", "Horror", "Sci-Fi", "Thriller") and alien["year"] == 0


def test_amazon_prefers_ratings_csv_unless_asked(tmp_path: Path, world: TinyWorld) -> None:
    write_amazon_reviews(tmp_path, world)
    small = TinyWorld(world.items, world.users, world.ratings[:10])
    write_amazon_ratings(tmp_path, small, "2018")
    assert len(load_dataset("amazon-cds", tmp_path, RAW).interactions) == 10
    assert len(load_dataset("amazon-cds", tmp_path, RAW, source="reviews").interactions) == len(world.ratings)


def test_amazon_repeated_pairs_keep_latest_and_ms_timestamps(tmp_path: Path) -> None:
    rows = ["B000000001,A000000000001Z,2.0,1000000000000", "B000000001,A000000000001Z,5.0,1000000500000",
            "B000000002,A000000000001Z,4.0,999999999"]  # fmt: skip
    (tmp_path / "CDs_and_Vinyl.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataFormatError, match=r"CDs_and_Vinyl.csv line 2, field 'item'.*already on line 1.*duplicates='latest'"):
        load_dataset("amazon-cds", tmp_path, RAW)
    ds = load_dataset("amazon-cds", tmp_path, RAW, duplicates="latest")
    assert ds.meta["repeated_pairs_dropped"] == 1 and ds.summary()["loader"]["repeated_pairs_dropped"] == 1
    assert _ratings_by_id(ds) == {("A000000000001Z", "B000000001", 5.0, 1000000500), ("A000000000001Z", "B000000002", 4.0, 999999999)}


def test_amazon_2023_csv_with_header(tmp_path: Path) -> None:
    lines = ["user_id,parent_asin,rating,timestamp,history", "U1,B000000001,4.0,1588615855070,", "U1,B000000002,5.0,1588615856070,B000000001"]
    (tmp_path / "CDs_and_Vinyl.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset("amazon-cds", tmp_path, RAW)
    assert ds.meta["columns"] == "header"
    assert _ratings_by_id(ds) == {("U1", "B000000001", 4.0, 1588615855), ("U1", "B000000002", 5.0, 1588615856)}


def test_recbole_generic_atomic_files(tmp_path: Path) -> None:
    (tmp_path / "books.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\textra:float_seq\n"
        "u1\tb1\t0\t10\t1 2\nu1\tb2\t10\t11\t\nu2\tb1\t5\t9\t3\n"
    )
    (tmp_path / "books.item").write_text(
        "item_id:token\tbook_title:token_seq\tyear_of_publication:float\tcategories:token_seq\n"
        "b1\tThe,Hobbit\t1937\tFantasy,Adventure\nb2\tDune\t\tSci-Fi\n"
    )
    (tmp_path / "books.user").write_text("user_id:token\tage:float\tlocation:token\nu1\t31\tparis\nu2\t\tnyc\n")
    with pytest.raises(DataFormatError, match=r"books.inter line 2, field 'rating': expected a rating 1-5.*rating_range"):
        load_dataset("recbole", tmp_path, RAW, seq_separator=",")
    ds = load_dataset("recbole", tmp_path, RAW, seq_separator=",", rating_range=[0, 10])
    assert ds.name == "books" and ds.meta["ratings_rescaled"] == {"from": [0.0, 10.0], "rows": 3}
    assert _ratings_by_id(ds) == {("u1", "b1", 1.0, 10), ("u1", "b2", 5.0, 11), ("u2", "b1", 3.0, 9)}
    hobbit = _item(ds, "b1")
    assert (hobbit["title"], hobbit["year"], hobbit["genres"]) == ("The Hobbit", 1937, ("Fantasy", "Adventure"))
    assert _item(ds, "b2")["year"] == 0
    assert ds.users.set_index("user_id")["age"].to_dict() == {"u1": 31, "u2": 0}


def test_recbole_implicit_feedback_and_file_choice(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.inter").write_text("user_id:token\titem_id:token\nu1\ti1\nu1\ti2\n")
    with pytest.raises(DatasetNotFoundError, match="pass atomic_name="):
        load_dataset("recbole", tmp_path, RAW)
    ds = load_dataset("recbole", tmp_path, RAW, atomic_name="b")
    assert ds.meta["implicit"] and (ds.rating_arr == 5.0).all()
    assert ds.interactions["timestamp"].tolist() == [0, 1]  # file order
    with pytest.raises(DatasetNotFoundError, match="data_dir"):
        load_dataset("recbole")


def test_load_dataset_rejects_unknown_names_and_options(tmp_path: Path, world: TinyWorld) -> None:
    with pytest.raises(DataOptionError, match="ml-100k"):
        load_dataset("ml-10m")
    with pytest.raises(DataOptionError, match="columns"):
        load_dataset("ml-1m", write_ml1m(tmp_path, world), columns="user,item")


def test_missing_files_list_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("ml-1m", tmp_path)
    assert str(tmp_path / "ratings.dat") in str(err.value)
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("amazon-cds", tmp_path)
    for name in ("CDs_and_Vinyl.csv", "ratings_CDs_and_Vinyl.csv", "CDs_and_Vinyl_5.json"):
        assert str(tmp_path / name) in str(err.value)


Writer = Callable[[Path, TinyWorld], object]

# (writer, file, line, replacement, expected line, field, fragment of the message)
MALFORMED = [
    (write_ml100k, "u.data", 7, "1\t2\tx\t881250949", 7, "rating", "expected an integer rating 1-5, got 'x'"),
    (write_ml100k, "u.data", 3, "1\t2\t6\t881250949", 3, "rating", "got '6'"),
    (write_ml100k, "u.data", 4, "1\t2\t3\t881250949\t9", 4, None, "expected 4 fields"),
    (write_ml100k, "u.data", 2, "1\t2\t3", 2, None, "got '3 fields: "),
    (write_ml100k, "u.data", 5, "-1\t2\t3\t881250949", 5, "user id", "positive integer"),
    (write_ml100k, "u.data", 6, "1\t2\t3\tyesterday", 6, "timestamp", "Unix timestamp"),
    (write_ml100k, "u.item", 2, "2|GoldenEye (1995)|1995-01-01||url" + "|0" * 19, 2, "release date", "01-Jan-1995"),
    (write_ml100k, "u.item", 3, "3|X (1995)|01-Jan-1995||url|2" + "|0" * 18, 3, "genre unknown", "genre flag 0 or 1"),
    (write_ml100k, "u.item", 4, "1|Toy Story (1995)|01-Jan-1995||url" + "|0" * 19, 4, "movie id", "already on line 1"),
    (write_ml100k, "u.user", 2, "2|53|X|other|94043", 2, "gender", "gender M or F"),
    (write_ml100k, "u.user", 3, "3|old|M|other|94043", 3, "age", "age in years"),
    (write_ml1m, "ratings.dat", 5, "1::2::five::978300760", 5, "Rating", "got 'five'"),
    (write_ml1m, "ratings.dat", 6, "1::2::3", 6, None, "4 fields separated by '::'"),
    (write_ml1m, "movies.dat", 2, "2::GoldenEye (1995)", 2, None, "3 fields"),
    (write_ml1m, "users.dat", 4, "4::F::17::3::55455", 4, "Age", "age code"),
    (write_ml1m, "users.dat", 5, "5::M::25::21::55455", 5, "Occupation", "occupation code 0-20"),
    (write_amazon_ratings, "CDs_and_Vinyl.csv", 3, "B000000001,A000000000001Z,abc,1369699200", 3, "rating", "rating 1-5"),
    (write_amazon_ratings, "CDs_and_Vinyl.csv", 4, "B000000001,A000000000001Z,5.0", 4, None, "4 fields"),
    (write_amazon_ratings, "CDs_and_Vinyl.csv", 5, "B000000001,,5.0,1369699200", 5, "user", "a user id"),
    (write_amazon_reviews, "CDs_and_Vinyl_5.json", 2, '{"reviewerID": "A1", "asin": "B1", "unixReviewTime": 1}', 2, "overall", "keys reviewerID"),
    (write_amazon_reviews, "CDs_and_Vinyl_5.json", 3, '{"reviewerID": "A1", "asin": ', 3, None, "one JSON object per line"),
    (write_amazon_reviews, "CDs_and_Vinyl_5.json", 4, '{"reviewerID": "A1", "asin": "B1", "overall": 7, "unixReviewTime": 1}', 4, "overall", "rating 1-5"),
    (write_ml100k_atomic, "ml-100k.inter", 1, "user_id:token\titem_id:tokn\trating:float\ttimestamp:float", 1, "item_id:tokn", "token_seq"),
    (write_ml100k_atomic, "ml-100k.inter", 1, "user:token\titem_id:token\trating:float\ttimestamp:float", 1, "user_id", "header field 'user_id:token'"),
    (write_ml100k_atomic, "ml-100k.inter", 9, "1\t2\tgood\t881250949", 9, "rating", "a rating 1-5"),
    (write_ml100k_atomic, "ml-100k.item", 3, "1\tToy Story\t1995\tComedy", 3, "item_id", "already on line 2"),
]


@pytest.mark.parametrize(("writer", "name", "line", "text", "want_line", "field", "fragment"), MALFORMED)
def test_malformed_rows_name_file_line_and_field(
    tmp_path: Path, world: TinyWorld, writer: Writer, name: str, line: int, text: str, want_line: int, field, fragment: str
) -> None:
    writer(tmp_path, world)
    path = tmp_path / name
    replace_line(path, line, text, "latin-1" if writer in (write_ml100k, write_ml1m) and name != "u.data" else "utf-8")
    dataset = {write_ml100k: "ml-100k", write_ml100k_atomic: "ml-100k", write_ml1m: "ml-1m"}.get(writer, "amazon-cds")
    with pytest.raises(DataFormatError) as err:
        load_dataset(dataset, tmp_path, RAW)
    error = err.value
    assert (error.path, error.line, error.field) == (path, want_line, field)
    message = str(error)
    assert f"{name} line {want_line}" in message and fragment in message


def test_malformed_metadata_and_encoding(tmp_path: Path, world: TinyWorld) -> None:
    write_amazon_ratings(tmp_path, world)
    meta = write_amazon_meta(tmp_path, world)
    replace_line(meta, 2, '{"asin": "B000000002", "category": "Rock"}')
    with pytest.raises(DataFormatError, match=r"meta_CDs_and_Vinyl.json line 2, field 'category': expected a list"):
        load_dataset("amazon-cds", tmp_path, RAW)
    replace_line(meta, 2, '{"title": "no asin"}')
    with pytest.raises(DataFormatError, match=r"line 2, field 'asin'"):
        load_dataset("amazon-cds", tmp_path, RAW)

    inter = write_ml100k_atomic(tmp_path / "atomic", world) / "ml-100k.inter"
    data = inter.read_bytes().split(b"\n")
    data[4] = b"1\t2\t3\t\xff\xfe"
    inter.write_bytes(b"\n".join(data))
    with pytest.raises(DataFormatError, match=r"ml-100k.inter line 5: expected text in encoding utf-8"):
        load_dataset("ml-100k", tmp_path / "atomic", RAW)


def test_corrupt_gzip_is_a_format_error(tmp_path: Path) -> None:
    (tmp_path / "CDs_and_Vinyl.csv.gz").write_bytes(gzip.compress(b"x,y,5,1\n")[:12])
    with pytest.raises(DataFormatError, match="gzip"):
        load_dataset("amazon-cds", tmp_path, RAW)


def test_blank_lines_and_windows_endings_are_tolerated(tmp_path: Path, world: TinyWorld) -> None:
    write_ml100k(tmp_path, world)
    data = tmp_path / "u.data"
    lines = data.read_text().split("\n")
    data.write_text("\r\n".join(lines[:3] + [""] + lines[3:]))
    ds = load_dataset("ml-100k", tmp_path, RAW)
    assert _ratings_by_id(ds) == _expected_ratings(world)
    replace_line(data, 6, "1\t2\tx\t881250949")  # line numbers still count the blank line
    with pytest.raises(DataFormatError, match=r"u.data line 6, field 'rating'"):
        load_dataset("ml-100k", tmp_path, RAW)


def test_default_preprocess_is_the_papers_for_real_data(tmp_path: Path) -> None:
    dense = tiny_world(n_users=10, per_user=12)  # every user and item has >= 10 ratings
    ds = load_dataset("ml-100k", write_ml100k(tmp_path, dense))
    assert (ds.n_users, ds.n_items) == (10, 12)
    assert ds.meta["preprocess"] == {"kcore": 10, "max_history": 40, "positive_threshold": 3.0, "max_users": None}


def test_synthetic_delegates_to_generator() -> None:
    synthetic = pytest.importorskip("starec_env.data.synthetic", reason="synthetic world not written yet")
    a = load_dataset("synthetic", n_users=30, n_items=40, seed=3)
    b = synthetic.generate_world(synthetic.SyntheticConfig(n_users=30, n_items=40), 3)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    assert a.meta["preprocess"]["kcore"] == 0  # the world is kept at the size asked for
    with pytest.raises(DataOptionError, match="n_userz"):
        load_dataset("synthetic", n_userz=3)


@pytest.mark.skipif(recbole_ml100k_dir() is None, reason="recbole not installed: pip install --no-deps recbole==1.2.1")
def test_real_ml100k_from_recbole_copy() -> None:
    raw = load_dataset("ml-100k", preprocess=RAW)
    assert (raw.n_users, raw.n_items, len(raw.interactions)) == (943, 1682, 100_000)
    assert _item(raw, "1")["title"] == "Toy Story" and _item(raw, "1")["year"] == 1995
    assert len(raw.genre_names) == 18
    core = load_dataset("ml-100k")
    assert (core.n_users, core.n_items, len(core.interactions)) == (943, 1152, 97_953)
    assert np.bincount(core.item_arr).min() >= 10 and np.bincount(core.user_arr).min() >= 10
