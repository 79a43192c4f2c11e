"""An asset's output spooled to parquet a chunk at a time (:class:`PartitionSpool`), one file per
partition, that the IO manager moves into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from anomaly_assets.resources.device_chunks import PREVIEW_ROWS, ROW_GROUP_ROWS, day_keys

class PartitionSpool:
    """An asset's output for the run's partitions, appended a chunk at a time to one temporary
    parquet file per partition (row groups of a chunk, at most ``ROW_GROUP_ROWS`` rows each), so
    it is never in memory at once.
    Return it from the asset; the IO manager moves the files into place, or, if the run fails
    first, nothing of it is ever visible."""

    def __init__(self, partition_keys: Sequence[str] | None):
        self.keys = list(partition_keys or [None])
        self.rows = 0
        self.rows_by_key: dict[str | None, int] = dict.fromkeys(self.keys, 0)
        self.heads: dict[str | None, pd.DataFrame] = {}  # each partition's first rows, for previews
        self._directory = tempfile.mkdtemp(prefix="anomaly_assets_spool_")
        self._writers: dict[str | None, pq.ParquetWriter] = {}
        self._schema: pa.Schema | None = None

    def append(self, frame: pd.DataFrame) -> None:
        for key, part in self.split(frame):
            self.append_to(key, part)

    def split(self, frame: pd.DataFrame) -> Iterator[tuple[str | None, pd.DataFrame]]:
        """``frame``'s rows per partition (by ``day_keys``), partitions without rows left out."""
        return split_by_partition(frame, self.keys)

    def append_to(self, key: str | None, frame: pd.DataFrame | pa.Table) -> None:
        """Append rows that all belong to partition ``key`` (a frame, or a worker's table of one)."""
        if key not in self.heads:
            head = frame.slice(0, PREVIEW_ROWS).to_pandas() if isinstance(frame, pa.Table) else frame.head(PREVIEW_ROWS)
            self.heads[key] = head.reset_index(drop=True).copy()
        table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
        if self._schema is None:
            self._schema = table.schema
        elif not table.schema.equals(self._schema, check_metadata=False):
            try:
                widened = _widened(self._schema, table.schema)
                if not widened.equals(self._schema, check_metadata=False):
                    self._widen(widened)  # e.g. a column all null so far now has values
                table = table.cast(self._schema)  # e.g. a column that is all null in this chunk
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError) as error:
                raise TypeError(
                    f"rows {self.rows}+ of the output have columns typed differently from the first chunk's "
                    f"({', '.join(f'{f.name}: {f.type}' for f in self._schema)}): {error}"
                ) from error
        if key not in self._writers:
            self._writers[key] = _writer(self._file(key), self._schema)
        self._writers[key].write_table(table, row_group_size=min(max(len(table), 1), ROW_GROUP_ROWS))
        self.rows += len(table)
        self.rows_by_key[key] += len(table)

    def _widen(self, schema: pa.Schema) -> None:
        """Rewrite what is written so far with ``schema`` (rare: a column all null until now)."""
        for key, writer in list(self._writers.items()):
            writer.close()
            narrow = self._file(key) + ".narrow"
            os.replace(self._file(key), narrow)
            self._writers[key] = _writer(self._file(key), schema)
            written = pq.ParquetFile(narrow)
            for group in range(written.num_row_groups):
                self._writers[key].write_table(written.read_row_group(group).cast(schema))
            os.remove(narrow)
        self._schema = schema

    def _file(self, key: str | None) -> str:
        return os.path.join(self._directory, f"{key or 'all'}.parquet")

    def files(self) -> dict[str | None, str]:
        """Close the writers; every partition's file (an empty one for a partition without rows)."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        for key in self.keys:
            if not os.path.exists(self._file(key)):
                if self._schema is None:
                    pd.DataFrame().to_parquet(self._file(key), index=False)
                else:
                    pq.write_table(self._schema.empty_table(), self._file(key))
        return {key: self._file(key) for key in self.keys}

    def persisted_rows_by_key(self) -> dict[str | None, int]:
        """Each partition's rows in its written file, from the footer."""
        return {key: pq.ParquetFile(file).metadata.num_rows for key, file in self.files().items()}

    def batches(self, rows: int = 100_000) -> Iterator[pd.DataFrame]:
        """Every partition's rows again, ``rows`` at a time (to load them elsewhere)."""
        for file in self.files().values():
            parquet = pq.ParquetFile(file)
            for batch in parquet.iter_batches(batch_size=rows):
                yield batch.to_pandas()

    def read(self, key: str | None = None) -> pd.DataFrame:
        """A partition's rows (for tests and small outputs)."""
        return pd.read_parquet(self.files()[key if key is not None else self.keys[0]])

    def discard(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        shutil.rmtree(self._directory, ignore_errors=True)

    def __del__(self) -> None:  # a run that failed before the IO manager took the files
        if getattr(self, "_directory", None) and os.path.isdir(self._directory):
            self.discard()


def split_by_partition(frame: pd.DataFrame, keys: Sequence[str | None]) -> Iterator[tuple[str | None, pd.DataFrame]]:
    """``frame``'s rows per partition of ``keys`` (by ``day_keys``), partitions without rows left out."""
    if len(keys) == 1:
        yield keys[0], frame
        return
    days = day_keys(frame, keys)
    for key in keys:
        part = frame.loc[days == key]
        if len(part):
            yield key, part


def _writer(path: str, schema: pa.Schema) -> pq.ParquetWriter:
    """Dictionary encoding only for text columns (ids, cohorts, feature names repeat); a float
    column's dictionary would be built, found too large and dropped, for every row group."""
    text = [field.name for field in schema if _is_text(field.type)]
    return pq.ParquetWriter(path, schema, use_dictionary=text or False)


def _widened(written: pa.Schema, incoming: pa.Schema) -> pa.Schema:
    """The schema both fit: a null column takes the other's type, and a column that is text on
    either side becomes text (numbers are written as text, never the other way round)."""
    if written.names != incoming.names:
        raise ValueError(f"columns {incoming.names} differ from {written.names}")
    fields = []
    for old, new in zip(written, incoming, strict=True):
        if pa.types.is_null(old.type) or (_is_text(new.type) and not _is_text(old.type) and not pa.types.is_null(new.type)):
            fields.append(old.with_type(new.type))
        else:
            fields.append(old)
    return pa.schema(fields, metadata=written.metadata)


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)
