"""Writing a bundle directory: one method per bundle file (or family of files), then the
manifest. numpy and pyarrow only.

Publish (batch/publish/bundle_writer.py) collects the stage outputs and hands them to a
`BundleWriter`; the service tests' factory (tests/online/bundle_factory.py) builds small
bundles through the same writer, so both write the same files in the same formats. File
names come from shared/bundle_layout.py; a caller never spells one.

    writer = BundleWriter(run_dir)
    writer.items(items); writer.users(users); writer.factors(item_f, user_f); ...
    manifest = writer.finish(run_id=..., ...)   # checksums every file, writes manifest.json
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shared import bundle_layout as layout
from shared.bundle import BundleManifest, checksum_tree
from shared.candidate_arrays import CandidateArrayWriter, rows_per_user
from shared.feature_arrays import save_feature_arrays
from shared.features import FeatureArrays
from shared.recommendation_arrays import write_recommendation_arrays

COMPRESSION = "zstd"  # every Parquet table of a bundle


@dataclass(frozen=True)
class CandidateChunks:
    """The candidate table, a chunk at a time, read twice: its user_idx column (to size the
    per-user arrays), then whole. Within a chunk each user's rows are sorted by item_idx."""

    schema: pa.Schema
    user_columns: Callable[[], Iterator[np.ndarray]]
    chunks: Callable[[], Iterator[pa.Table]]

    @classmethod
    def from_parquet(cls, source: Path) -> CandidateChunks:
        """A Spark output directory (its part files in name order, a row group at a time:
        the table never needs to fit in memory) or one Parquet file."""
        files = sorted(source.glob("part-*.parquet")) if source.is_dir() else [source]

        def row_groups(columns: list[str] | None) -> Iterator[pa.Table]:
            for path in files:
                reader = pq.ParquetFile(path)
                for group in range(reader.num_row_groups):
                    yield reader.read_row_group(group, columns=columns)

        def users() -> Iterator[np.ndarray]:
            for table in row_groups(["user_idx"]):
                yield table["user_idx"].to_numpy()

        schema = pq.read_schema(files[0]) if files else pq.read_table(source).schema
        return cls(schema, users, lambda: row_groups(None))

    @classmethod
    def from_table(cls, table: pa.Table) -> CandidateChunks:
        """One in-memory table (small bundles, tests), sorted here by (user, item)."""
        table = table.sort_by([("user_idx", "ascending"), ("item_idx", "ascending")])
        return cls(
            table.schema, lambda: iter([table["user_idx"].to_numpy()]), lambda: iter([table])
        )


class BundleWriter:
    """Writes the files of one bundle directory (see shared/bundle_layout.py for each)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        path = self.directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _table(self, name: str, table: pa.Table) -> None:
        pq.write_table(table, self._path(name), compression=COMPRESSION)

    def _file(self, name: str, source: Path | bytes | str) -> None:
        """A file copied as is (Path), or written from bytes or text."""
        if isinstance(source, Path):
            shutil.copyfile(source, self._path(name))
        elif isinstance(source, bytes):
            self._path(name).write_bytes(source)
        else:
            self._path(name).write_text(source)

    # --- tables and arrays of the root ---------------------------------------------

    def items(self, table: pa.Table) -> None:
        self._table(layout.ITEMS, table)

    def users(self, table: pa.Table) -> None:
        self._table(layout.USERS, table)

    def factors(self, item_factors: np.ndarray, user_factors: np.ndarray) -> None:
        np.save(self._path(layout.ITEM_FACTORS), item_factors)
        np.save(self._path(layout.USER_FACTORS), user_factors)

    def index(self, source: Path | bytes) -> None:
        """The FAISS index file (faiss.write_index's output, or faiss.serialize_index's)."""
        self._file(layout.INDEX, source)

    def seen(self, users: np.ndarray, items: np.ndarray, n_users: int) -> None:
        """The (user, item) pairs each user interacted with, sorted by user then item, as CSR."""
        counts = np.bincount(users, minlength=n_users)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        np.save(self._path(layout.SEEN_INDPTR), indptr)
        np.save(self._path(layout.SEEN_INDICES), np.asarray(items).astype(np.int32))

    def recommendations(self, table: pa.Table, n_users: int) -> None:
        """recommendations.parquet and the rec_* arrays; `table` sorted by (user_idx, rank)."""
        self._table(layout.RECOMMENDATIONS, table)
        write_recommendation_arrays(table, self.directory, n_users)

    def candidates(self, source: CandidateChunks, n_users: int) -> int:
        """candidates.parquet for analysts and the candidate_* arrays the service memory-maps,
        a chunk at a time (the table is the bundle's largest: 126M rows at 20M events).
        Returns the row count."""
        arrays = CandidateArrayWriter(self.directory, rows_per_user(source.user_columns(), n_users))
        rows = 0
        writer: pq.ParquetWriter | None = None
        try:
            for table in source.chunks():
                if writer is None:
                    writer = pq.ParquetWriter(
                        self._path(layout.CANDIDATES), table.schema, compression=COMPRESSION
                    )
                writer.write_table(table.cast(writer.schema))
                arrays.add(table)
                rows += table.num_rows
            if writer is None:  # no rows at all: an empty file with the table's schema
                self._table(layout.CANDIDATES, source.schema.empty_table())
        finally:
            if writer is not None:
                writer.close()
        arrays.close()
        return rows

    def popular(self, table: pa.Table) -> None:
        self._table(layout.POPULAR, table)

    def quarantine(self, table: pa.Table) -> None:
        self._table(layout.QUARANTINE, table)

    def metrics(self, source: Path | Mapping[str, Any]) -> None:
        self._file(layout.METRICS, source if isinstance(source, Path) else json.dumps(source))

    def metrics_chart(self, source: Path) -> None:
        self._file(layout.METRICS_CHART, source)

    # --- the re-ranker (optional) ---------------------------------------------------

    def feature_arrays(self, source: FeatureArrays | Path) -> None:
        """features/: the arrays of a FeatureArrays, or copied from a features directory
        (the features stage's); never the factors, which the root has."""
        if isinstance(source, FeatureArrays):
            save_feature_arrays(source, self.directory / layout.FEATURES_DIR, with_factors=False)
            return
        for file in layout.FEATURE_ARRAY_FILES.values():
            self._file(layout.feature_file(file), source / file)

    def ranker(self, spec: Path | Mapping[str, Any], models: Mapping[str, Path | bytes]) -> None:
        """ranker/spec.json and the model files, keyed by their names in spec.json."""
        unknown = set(models) - set(layout.RANKER_MODELS)
        if unknown:
            raise ValueError(f"model files {sorted(unknown)}, expected {layout.RANKER_MODELS}")
        self._file(layout.RANKER_SPEC, spec if isinstance(spec, Path) else json.dumps(spec))
        for name, source in models.items():
            self._file(layout.ranker_file(name), source)

    def feature_stats(self, source: Path | Mapping[str, Any]) -> None:
        """monitoring/feature_stats.json (shared/feature_stats.py), checksummed like the rest."""
        self._file(layout.FEATURE_STATS, source if isinstance(source, Path) else json.dumps(source))

    # --- last -----------------------------------------------------------------------

    def finish(self, **fields: Any) -> BundleManifest:
        """Write manifest.json: `fields` are BundleManifest's but `files`, the checksums of
        every file written so far."""
        manifest = BundleManifest(**fields, files=checksum_tree(self.directory))
        self._file(layout.MANIFEST, manifest.model_dump_json(indent=2))
        return manifest
