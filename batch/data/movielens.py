"""Import a MovieLens download into the data contract (see `batch.data.contract`).

Recognised layouts (auto-detected from the files in SRC, or in its only sub-directory):

* ``csv``  -- ml-latest-small, ml-latest, ml-20m, ml-25m: ``ratings.csv``
  (userId,movieId,rating,timestamp) and ``movies.csv`` (movieId,title,genres; titles are
  quoted CSV and may contain commas and quotes).
* ``100k`` -- ml-100k: ``u.data`` (tab-separated user, item, rating, ts), ``u.item``
  ('|'-separated latin-1: id, title, release date, video date, IMDb URL, 19 genre flags)
  and, if present, ``u.user`` (id|age|gender|occupation|zip).
* ``dat``  -- ml-1m (and ml-10m): ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``),
  ``movies.dat`` (``MovieID::Title::Genres``) and, if present, ``users.dat``
  (``UserID::Gender::Age::Occupation::Zip-code``).

Output: every rating becomes an interaction with ``event_type="rating"`` and
``weight=rating``. Items get ``available_regions`` = null (available everywhere);
"(no genres listed)" becomes an empty genres string.

Users file: written only where MovieLens ships user demographics (ml-1m ``users.dat`` and
ml-100k ``u.user``); the region is ``zip-<first digit of the zip code>`` (the US zip
prefixes are broad geographic areas), or ``unknown`` for non-numeric (foreign) codes. The
csv layouts have no user data, so no users.parquet is written for them: the pipeline then
treats every user as region-less.

Ratings are streamed in blocks with pyarrow's CSV reader and written as Parquet row groups,
so ml-25m (25M rows) imports with bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from batch.data import contract
from shared.errors import DataContractError

if TYPE_CHECKING:
    import pyarrow as pa

# Genre columns of ml-100k u.item, in file order (from the dataset's README / u.genre).
ML100K_GENRES = (
    "Unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

# pyarrow CSV block size: ~16 MB of text (~600k ratings) per batch keeps memory flat on ml-25m
# (the threaded reader keeps a few blocks in flight) while amortising per-batch overhead.
_BLOCK_SIZE = 16 << 20


@dataclass(frozen=True)
class Layout:
    """One MovieLens file layout: its name and the files that identify it."""

    name: str
    ratings: str
    movies: str
    users: str | None


LAYOUTS = (
    Layout("csv", "ratings.csv", "movies.csv", None),
    Layout("100k", "u.data", "u.item", "u.user"),
    Layout("dat", "ratings.dat", "movies.dat", "users.dat"),
)


@dataclass(frozen=True)
class ImportResult:
    layout: str
    src: Path
    stats: contract.InteractionStats
    n_items_in_catalog: int
    wrote_users: bool

    def summary(self, out_dir: Path) -> str:
        users = "users.parquet" if self.wrote_users else "no users file"
        return (
            f"imported MovieLens ({self.layout}) from {self.src}: {self.stats.summary()}; "
            f"{self.n_items_in_catalog:,} catalog items; {users} -> {out_dir}"
        )


def detect_layout(src: Path) -> tuple[Layout, Path]:
    """Return the layout found in `src` (or in its only sub-directory) and that directory.

    Descending into a single sub-directory lets users point at the folder they unzipped
    into, which for the official zips contains e.g. ``ml-1m/``.
    """
    if not src.is_dir():
        raise DataContractError(f"{src} is not a directory")
    candidates = [src]
    subdirs = [p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1:
        candidates.append(subdirs[0])
    for directory in candidates:
        for layout in LAYOUTS:
            if (directory / layout.ratings).is_file() and (directory / layout.movies).is_file():
                return layout, directory
    looked_for = "; ".join(f"{lay.ratings} + {lay.movies}" for lay in LAYOUTS)
    raise DataContractError(
        f"no MovieLens files found in {src}: looked for {looked_for} "
        "(ml-latest[-small]/ml-20m/ml-25m, ml-100k, ml-1m/ml-10m)"
    )


def import_movielens(src: Path, out_dir: Path) -> ImportResult:
    """Convert the MovieLens download in `src` into contract files in `out_dir`."""
    layout, directory = detect_layout(src)
    # Parse the small files first: a malformed movies file then fails before anything in
    # out_dir has been replaced.
    items = _read_items(layout, directory)
    users = _read_users(layout, directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = _write_interactions(layout, directory, out_dir)
    contract.write_table(out_dir, contract.ITEMS, items)
    if users is not None:
        contract.write_table(out_dir, contract.USERS, users)
    written = {contract.INTERACTIONS, contract.ITEMS}
    if users is not None:
        written.add(contract.USERS)
    contract.remove_stale(out_dir, keep=written)
    return ImportResult(layout.name, directory, stats, items.num_rows, users is not None)


# --- ratings -------------------------------------------------------------------------------


def _write_interactions(
    layout: Layout, directory: Path, out_dir: Path
) -> contract.InteractionStats:
    import pyarrow as pa

    stats = contract.InteractionStats()
    schema = contract.interactions_schema()
    path = directory / layout.ratings
    try:
        with contract.parquet_writer(out_dir, contract.INTERACTIONS, schema) as writer:
            for batch in _rating_batches(layout, path):
                table = _to_interactions(batch, schema)
                stats.update(table["user_id"], table["item_id"], table["timestamp"].to_numpy())
                writer.write_table(table)
    except pa.ArrowInvalid as exc:  # e.g. a non-numeric rating: say which file, not a trace
        raise DataContractError(f"{path}: {exc}") from exc
    return stats


def _rating_batches(layout: Layout, path: Path) -> pa.RecordBatchReader:
    """Stream (user, item, rating, ts) batches, in that column order.

    Ids stay strings, the contract's id type, so no int parsing can fail or overflow.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if layout.name == "csv":
        names = _csv_rating_columns(path)
        read = pacsv.ReadOptions(block_size=_BLOCK_SIZE)
        parse = pacsv.ParseOptions()
    elif layout.name == "100k":
        names = ["user", "item", "rating", "ts"]
        read = pacsv.ReadOptions(block_size=_BLOCK_SIZE, column_names=names)
        parse = pacsv.ParseOptions(delimiter="\t", quote_char=False)
    else:
        # "::" separators: with ':' as the delimiter every other column is empty, so the
        # fast multi-threaded C reader still works (ratings.dat holds only numbers).
        names = ["user", "item", "rating", "ts"]
        cols = ["user", "_a", "item", "_b", "rating", "_c", "ts"]
        read = pacsv.ReadOptions(block_size=_BLOCK_SIZE, column_names=cols)
        parse = pacsv.ParseOptions(delimiter=":", quote_char=False)
    types = dict(zip(names, [pa.string(), pa.string(), pa.float64(), pa.int64()], strict=True))
    # include_columns also fixes the output column order.
    convert = pacsv.ConvertOptions(column_types=types, include_columns=names)
    return pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)


def _csv_rating_columns(path: Path) -> list[str]:
    expected = ["userId", "movieId", "rating", "timestamp"]
    with path.open(encoding="utf-8") as fh:
        header = [c.strip() for c in fh.readline().strip().split(",")]
    missing = [c for c in expected if c not in header]
    if missing:
        raise DataContractError(f"{path} lacks columns {missing} (header: {header})")
    return expected


def _to_interactions(batch: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    import pyarrow as pa

    n = batch.num_rows
    return pa.Table.from_arrays(
        [
            batch.column(0),  # user
            batch.column(1),  # item
            batch.column(3),  # ts
            _repeat("rating", n),
            batch.column(2),  # rating
        ],
        schema=schema,
    )


def _repeat(value: str, n: int) -> pa.Array:
    """A string column holding `value` n times, without building n Python objects."""
    import numpy as np
    import pyarrow as pa

    return pa.array([value], pa.string()).take(pa.array(np.zeros(n, dtype=np.int32)))


# --- movies --------------------------------------------------------------------------------


def _read_items(layout: Layout, directory: Path) -> pa.Table:
    path = directory / layout.movies
    if layout.name == "csv":
        ids, titles, genres = _movies_csv(path)
    elif layout.name == "100k":
        ids, titles, genres = _movies_100k(path)
    else:
        ids, titles, genres = _movies_dat(path)
    genres = ["" if g == "(no genres listed)" else g for g in genres]
    return _items_table(ids, titles, genres)


def _items_table(ids: list[str], titles: list[str], genres: list[str]) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array(titles, pa.string()),
            pa.array(genres, pa.string()),
            pa.nulls(len(ids), pa.string()),  # MovieLens has no regional availability
        ],
        schema=contract.items_schema(),
    )


def _movies_csv(path: Path) -> tuple[list[str], list[str], list[str]]:
    import pandas as pd

    # A real CSV parser: titles like `"American President, The (1995)"` are quoted.
    df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    missing = {"movieId", "title", "genres"} - set(df.columns)
    if missing:
        raise DataContractError(f"{path} lacks columns {sorted(missing)}")
    return df["movieId"].tolist(), df["title"].tolist(), df["genres"].tolist()


def _movies_100k(path: Path) -> tuple[list[str], list[str], list[str]]:
    ids, titles, genres = [], [], []
    n_flags = len(ML100K_GENRES)
    for lineno, line in enumerate(_text_lines(path), start=1):
        fields = line.split("|")
        if len(fields) < 5 + n_flags:
            raise DataContractError(f"{path}:{lineno}: expected {5 + n_flags} '|' fields")
        # Flags are the last 19 fields; joining the middle keeps a title that contains '|'.
        flags = fields[-n_flags:]
        ids.append(fields[0])
        titles.append("|".join(fields[1 : len(fields) - n_flags - 3]))
        genres.append("|".join(g for g, f in zip(ML100K_GENRES, flags, strict=True) if f == "1"))
    return ids, titles, genres


def _movies_dat(path: Path) -> tuple[list[str], list[str], list[str]]:
    ids, titles, genres = [], [], []
    for lineno, line in enumerate(_text_lines(path), start=1):
        # Titles may contain ':' ("Star Wars: Episode IV") but never "::".
        fields = line.split("::")
        if len(fields) != 3:
            raise DataContractError(f"{path}:{lineno}: expected MovieID::Title::Genres")
        ids.append(fields[0])
        titles.append(fields[1])
        genres.append(fields[2])
    return ids, titles, genres


# --- users ---------------------------------------------------------------------------------


def _read_users(layout: Layout, directory: Path) -> pa.Table | None:
    if layout.users is None or not (directory / layout.users).is_file():
        return None
    path = directory / layout.users
    sep, zip_field = ("|", 4) if layout.name == "100k" else ("::", 4)
    ids, regions = [], []
    for lineno, line in enumerate(_text_lines(path), start=1):
        fields = line.split(sep)
        if len(fields) <= zip_field:
            raise DataContractError(f"{path}:{lineno}: expected {zip_field + 1} fields")
        ids.append(fields[0])
        regions.append(zip_region(fields[zip_field]))
    import pyarrow as pa

    return pa.Table.from_arrays(
        [pa.array(ids, pa.string()), pa.array(regions, pa.string())],
        schema=contract.users_schema(),
    )


def zip_region(zip_code: str) -> str:
    """`zip-<first digit>` for US zip codes, `unknown` otherwise (e.g. Canadian codes)."""
    zip_code = zip_code.strip()
    return f"zip-{zip_code[0]}" if zip_code[:1].isdigit() else "unknown"


def _text_lines(path: Path) -> list[str]:
    """Non-empty lines; UTF-8 when valid, else latin-1 (ml-100k/ml-1m are latin-1)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return [line for line in text.splitlines() if line.strip()]
