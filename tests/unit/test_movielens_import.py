"""`recsys data import-movielens`: layout detection, parsing quirks, the contract it writes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from batch.data import contract, movielens
from batch.data.cli import data_app
from batch.data.movielens import ML100K_GENRES, detect_layout, import_movielens, zip_region
from shared.errors import DataContractError

REAL_SMALL = Path(__file__).resolve().parents[2].parent / "shared/datasets/ml-latest-small"


def _write_csv_layout(src: Path) -> None:
    src.mkdir(parents=True, exist_ok=True)
    (src / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "1,11,4.0,964982703\n"
        "1,12,3.5,964981247\n"
        "2,11,5.0,1445714835\n"
        "3,13,0.5,1000000000\n",
        encoding="utf-8",
    )
    (src / "movies.csv").write_text(
        "movieId,title,genres\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n'
        '12,"Quote ""Unquote"", The (2001)",Drama\n'
        "13,Unlabelled (2020),(no genres listed)\n",
        encoding="utf-8",
    )


def _ml100k_item_line(item_id: int, title: str, genres: set[str]) -> str:
    flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
    return f"{item_id}|{title}|01-Jan-1995||http://us.imdb.com/x|{flags}\n"


def _write_100k_layout(src: Path) -> None:
    src.mkdir(parents=True, exist_ok=True)
    (src / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    items = _ml100k_item_line(242, "Toy Story (1995)", {"Animation", "Children's", "Comedy"})
    items += _ml100k_item_line(302, "Café Society (1995)", {"Film-Noir", "Sci-Fi", "Western"})
    (src / "u.item").write_bytes(items.encode("latin-1"))
    (src / "u.user").write_text("196|49|M|writer|55105\n186|39|F|executive|T8H1N\n")


def _write_1m_layout(src: Path, *, with_users: bool = True) -> None:
    src.mkdir(parents=True, exist_ok=True)
    (src / "ratings.dat").write_text(
        "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
    )
    (src / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Sci-Fi\n"
        "3::Crépuscule (1990)::Drama\n".encode("latin-1")
    )
    if with_users:
        (src / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::02460\n")


def _read(out: Path, name: str) -> pa.Table:
    return pq.read_table(out / f"{name}.parquet")


def test_csv_layout_writes_the_contract(tmp_path: Path) -> None:
    _write_csv_layout(tmp_path / "src")
    result = import_movielens(tmp_path / "src", tmp_path / "out")

    interactions = _read(tmp_path / "out", "interactions")
    assert interactions.schema == contract.interactions_schema()
    assert interactions.to_pydict() == {
        "user_id": ["1", "1", "2", "3"],
        "item_id": ["11", "12", "11", "13"],
        "timestamp": [964982703, 964981247, 1445714835, 1000000000],
        "event_type": ["rating"] * 4,
        "weight": [4.0, 3.5, 5.0, 0.5],
    }
    items = _read(tmp_path / "out", "items")
    assert items.schema == contract.items_schema()
    titles = dict(zip(items["item_id"].to_pylist(), items["title"].to_pylist(), strict=True))
    assert titles["11"] == "American President, The (1995)"  # comma inside quotes survives
    assert titles["12"] == 'Quote "Unquote", The (2001)'
    assert items["genres"].to_pylist() == ["Comedy|Drama|Romance", "Drama", ""]
    assert items["available_regions"].null_count == 3
    assert not (tmp_path / "out" / "users.parquet").exists()
    assert (result.layout, result.stats.rows, result.stats.n_users) == ("csv", 4, 3)
    assert (result.stats.n_items, result.n_items_in_catalog) == (3, 3)
    assert (result.stats.min_ts, result.stats.max_ts) == (964981247, 1445714835)


def test_ml100k_genre_flags_latin1_and_zip_regions(tmp_path: Path) -> None:
    _write_100k_layout(tmp_path / "src")
    result = import_movielens(tmp_path / "src", tmp_path / "out")

    assert result.layout == "100k"
    interactions = _read(tmp_path / "out", "interactions").to_pydict()
    assert interactions["user_id"] == ["196", "186"]
    assert interactions["weight"] == [3.0, 3.0]
    items = _read(tmp_path / "out", "items").to_pydict()
    assert items["title"] == ["Toy Story (1995)", "Café Society (1995)"]
    # Flags map to names in file order, including the first and last columns.
    assert items["genres"] == ["Animation|Children's|Comedy", "Film-Noir|Sci-Fi|Western"]
    users = _read(tmp_path / "out", "users").to_pydict()
    assert users == {"user_id": ["196", "186"], "region": ["zip-5", "unknown"]}


def test_ml100k_unknown_genre_is_the_first_flag(tmp_path: Path) -> None:
    line = _ml100k_item_line(1, "Mystery Box (1996)", {"Unknown"})
    (tmp_path / "u.item").write_text(line, encoding="latin-1")
    _, _, genres = movielens._movies_100k(tmp_path / "u.item")
    assert genres == ["Unknown"]


def test_ml1m_double_colon_layout(tmp_path: Path) -> None:
    _write_1m_layout(tmp_path / "src")
    result = import_movielens(tmp_path / "src", tmp_path / "out")

    assert (result.layout, result.stats.rows, result.wrote_users) == ("dat", 3, True)
    interactions = _read(tmp_path / "out", "interactions").to_pydict()
    assert interactions["item_id"] == ["1193", "661", "1193"]
    assert interactions["timestamp"] == [978300760, 978302109, 978298413]
    assert interactions["weight"] == [5.0, 3.0, 4.0]
    items = _read(tmp_path / "out", "items").to_pydict()
    assert items["title"][1] == "Star Wars: Episode IV - A New Hope (1977)"  # ':' in title
    assert items["title"][2] == "Crépuscule (1990)"  # latin-1 decoded
    assert items["genres"][1] == "Action|Adventure|Sci-Fi"
    users = _read(tmp_path / "out", "users").to_pydict()
    assert users == {"user_id": ["1", "2"], "region": ["zip-4", "zip-0"]}


def test_ml10m_style_dat_without_users_file(tmp_path: Path) -> None:
    _write_1m_layout(tmp_path / "src", with_users=False)
    result = import_movielens(tmp_path / "src", tmp_path / "out")
    assert not result.wrote_users
    assert not (tmp_path / "out" / "users.parquet").exists()


def test_descends_into_the_only_subdirectory(tmp_path: Path) -> None:
    _write_1m_layout(tmp_path / "download" / "ml-1m")
    layout, directory = detect_layout(tmp_path / "download")
    assert (layout.name, directory.name) == ("dat", "ml-1m")


def test_stale_users_file_from_an_earlier_import_is_removed(tmp_path: Path) -> None:
    _write_1m_layout(tmp_path / "ml1m")
    _write_csv_layout(tmp_path / "csv")
    import_movielens(tmp_path / "ml1m", tmp_path / "out")
    assert (tmp_path / "out" / "users.parquet").exists()
    import_movielens(tmp_path / "csv", tmp_path / "out")
    assert not (tmp_path / "out" / "users.parquet").exists()


def test_ratings_are_streamed_in_row_groups(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "src"
    _write_csv_layout(src)
    lines = "".join(f"{u},11,{1 + u % 5}.0,{1_000_000_000 + u}\n" for u in range(2_000))
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + lines)
    monkeypatch.setattr(movielens, "_BLOCK_SIZE", 4_096)  # force many small blocks

    result = import_movielens(src, tmp_path / "out")
    meta = pq.ParquetFile(tmp_path / "out" / "interactions.parquet").metadata
    assert meta.num_rows == result.stats.rows == 2_000
    assert meta.num_row_groups > 5
    assert result.stats.n_users == 2_000


def test_unknown_layout_is_a_clear_cli_error(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ratings.txt").write_text("nope\n")
    res = CliRunner().invoke(data_app, ["import-movielens", str(tmp_path / "src"), "--out",
                                        str(tmp_path / "out")])  # fmt: skip
    assert res.exit_code == DataContractError.exit_code == 4  # shared/errors.py's table
    assert res.stderr.startswith("error: no MovieLens files found")
    for name in ("ratings.csv", "movies.csv", "u.data", "u.item", "ratings.dat", "movies.dat"):
        assert name in res.output
    assert not (tmp_path / "out").exists()


def test_missing_ratings_header_column_is_reported(tmp_path: Path) -> None:
    _write_csv_layout(tmp_path / "src")
    (tmp_path / "src" / "ratings.csv").write_text("user,movie,stars,ts\n1,11,4.0,1\n")
    with pytest.raises(DataContractError, match="userId"):
        import_movielens(tmp_path / "src", tmp_path / "out")


def test_cli_prints_a_one_line_summary(tmp_path: Path) -> None:
    _write_csv_layout(tmp_path / "src")
    res = CliRunner().invoke(data_app, ["import-movielens", str(tmp_path / "src"), "--out",
                                        str(tmp_path / "out")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "4 rows, 3 users, 3 items, time range 2000-07-30..2015-10-24" in res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("zip_code", "region"),
    [("55105", "zip-5"), ("02460", "zip-0"), ("T8H1N", "unknown"), ("", "unknown")],
)
def test_zip_region(zip_code: str, region: str) -> None:
    assert zip_region(zip_code) == region


@pytest.mark.dataset
@pytest.mark.skipif(not REAL_SMALL.is_dir(), reason="needs ../shared/datasets/ml-latest-small")
def test_real_ml_latest_small(tmp_path: Path) -> None:
    import pandas as pd

    result = import_movielens(REAL_SMALL, tmp_path)
    ratings = pd.read_csv(REAL_SMALL / "ratings.csv")
    movies = pd.read_csv(REAL_SMALL / "movies.csv")

    interactions = _read(tmp_path, "interactions")
    assert interactions.num_rows == len(ratings) == result.stats.rows
    assert result.stats.n_users == ratings["userId"].nunique()
    assert result.stats.n_items == ratings["movieId"].nunique()
    assert interactions["weight"].to_numpy().sum() == pytest.approx(ratings["rating"].sum())
    items = _read(tmp_path, "items")
    assert items.num_rows == len(movies)
    assert "American President, The (1995)" in set(items["title"].to_pylist())
    assert not (tmp_path / "users.parquet").exists()


def test_malformed_rating_names_the_file_and_keeps_old_output(tmp_path: Path) -> None:
    _write_csv_layout(tmp_path / "src")
    import_movielens(tmp_path / "src", tmp_path / "out")
    (tmp_path / "src" / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,11,good,5\n")
    with pytest.raises(DataContractError, match="ratings.csv"):
        import_movielens(tmp_path / "src", tmp_path / "out")
    assert pq.read_metadata(tmp_path / "out" / "interactions.parquet").num_rows == 4
    assert not list((tmp_path / "out").glob(".*.tmp"))
