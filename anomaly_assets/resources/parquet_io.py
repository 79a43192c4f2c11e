"""Parquet IO manager for daily-partitioned frames: one file per asset partition.

``base_path`` is a local path or any fsspec URL (``s3://bucket/prefix``, ``gs://...``,
``memory://`` in tests), so every worker of a distributed run can reach the same files.

A run may cover several partitions (a single-run backfill): outputs are split by the day of
their ``timestamp`` column, and inputs spanning several partitions are concatenated. On a local
path each file is written to a temporary name and renamed; on an object store a PUT is atomic by
itself. Either way a failed write never leaves a half-written partition.

Fleet-sized partitions never need to be in memory at once:

- an asset returns a :class:`PartitionSpool` it filled a chunk of devices at a time; the IO
  manager moves its files into place, one row group per chunk, grouped by device;
- an input annotated :class:`DeviceChunks` is read a chunk of whole devices at a time, and
  parquet's row-group statistics let each chunk read only its own row groups.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from upath import UPath

from anomaly_assets.core.timestamps import parse_utc

ALLOW_MISSING_PARTITIONS = "allow_missing_partitions"  # AssetIn metadata: optional lookback input
DEVICE_COLUMN = "device_id"
PREVIEW_ROWS = 10
# A chunk's rows are written in row groups of at most this many rows (~110 devices of 5-minute
# rows a day): a reader after one device (the explorer's device page) decodes one small group,
# not the whole chunk's.
ROW_GROUP_ROWS = 32_768
DEFAULT_DEVICES_PER_CHUNK = 1_000  # 288,000 rows of 5-minute telemetry a day: ~1-2 GB per step at peak


def day_keys(frame: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """The partition key of each row: the UTC day of its ``timestamp``. A row dated outside the
    run's days (or undated) is kept with the first day, where validation quarantines it: nothing
    a source delivered is dropped."""
    days = parse_utc(frame["timestamp"]).dt.strftime("%Y-%m-%d")
    return days.where(days.isin(keys), keys[0])


def group_by_device(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows grouped by device id, ascending (rows without one first), each device's rows in
    their delivered order: the layout :class:`DeviceChunks` reads a chunk at a time."""
    if DEVICE_COLUMN not in frame or frame[DEVICE_COLUMN].is_monotonic_increasing:
        return frame
    try:
        codes, _ = pd.factorize(frame[DEVICE_COLUMN], sort=True)
    except TypeError:  # ids of mixed, unorderable types: validation names the problem
        return frame
    return frame.take(np.argsort(codes, kind="stable")).reset_index(drop=True)


class DeviceChunks:
    """The rows of one or more stored partitions, read a chunk of whole devices at a time.

    Chunks are half-open ranges of ``device_id`` over every file, so each device's rows of all
    the partitions (a day and its lookback day, say) are in exactly one chunk; rows without a
    device id go with the first chunk. Files a chunked asset wrote are grouped by device, and
    parquet's row-group statistics then let a chunk read only its own row groups; any other file
    is still read correctly, only with more IO.
    """

    def __init__(
        self,
        paths: Sequence[UPath],
        devices_per_chunk: int = DEFAULT_DEVICES_PER_CHUNK,
        columns: Sequence[str] | None = None,
    ):
        if devices_per_chunk < 1:
            raise ValueError(f"devices_per_chunk must be at least 1, got {devices_per_chunk}")
        self.paths = list(paths)
        self.devices_per_chunk = devices_per_chunk
        self.columns = list(columns) if columns is not None else None  # None: every column
        self._boundaries: list | None = None
        self._start = self._end = None  # a device range's ends (see ``ranges``); None: the files' own

    def with_boundaries(self, boundaries: list) -> DeviceChunks:
        """Chunks cut at ``boundaries`` (another reading's of the same or more files), not read again."""
        self._boundaries = list(boundaries)
        return self

    def with_options(self, devices_per_chunk: int | None = None, columns: Sequence[str] | None = None) -> DeviceChunks:
        """The same files read in other chunks or with only some columns (training reads a
        several-day window in smaller chunks, and some of its passes only a few columns)."""
        other = DeviceChunks(self.paths, devices_per_chunk or self.devices_per_chunk, columns)
        if other.devices_per_chunk == self.devices_per_chunk:
            other._boundaries = self._boundaries
        return other

    def rows_per_file(self) -> list[int]:
        """Each file's rows, in the order of ``paths`` (one file per loaded partition), from their
        footers (nothing is read)."""
        counts = []
        for path in self.paths:
            with path.open("rb") as handle:
                counts.append(pq.ParquetFile(handle).metadata.num_rows)
        return counts

    def days_per_file(self) -> list[set[pd.Timestamp]]:
        """The UTC days each file has rows on (in the order of ``paths``): from its row groups'
        timestamp statistics, reading the column only of a group whose rows span several days."""
        found = []
        for path in self.paths:
            days: set[pd.Timestamp] = set()
            with path.open("rb") as handle:
                file = pq.ParquetFile(handle)
                if "timestamp" in file.schema_arrow.names:
                    column = file.schema_arrow.get_field_index("timestamp")
                    for group in range(file.num_row_groups):
                        stats = file.metadata.row_group(group).column(column).statistics
                        low, high = (parse_utc(pd.Series([stats.min, stats.max])).dt.floor("D") if stats is not None and stats.has_min_max else (None, None))
                        if low is not None and low == high:
                            days.add(low)
                        elif file.metadata.row_group(group).num_rows:
                            stamps = parse_utc(file.read_row_group(group, columns=["timestamp"]).column(0).to_pandas())
                            days.update(stamps.dt.floor("D").dropna().unique())
            found.append(days)
        return found

    def frame(self) -> pd.DataFrame:
        """Every row at once (of a range: every row of its devices)."""
        frames = [_read(path, _device_span(self._start, self._end), self.columns) for path in self.paths]
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def boundaries(self) -> list:
        """The first device id of each chunk, ascending; empty when there is nothing to chunk by
        (no rows, or no device id column: one chunk then holds every row). Read once."""
        if self._boundaries is None:
            self._boundaries = self._read_boundaries()
        return self._boundaries

    def _read_boundaries(self) -> list:
        devices = None
        for path in self.paths:
            with path.open("rb") as handle:
                file = pq.ParquetFile(handle)
                if DEVICE_COLUMN not in file.schema_arrow.names:
                    return []
                for group in range(file.num_row_groups):  # one row group at a time: memory per group, not file
                    column = file.read_row_group(group, columns=[DEVICE_COLUMN]).column(0)
                    if pa.types.is_null(column.type):
                        continue
                    unique = pc.unique(column.combine_chunks().drop_null())
                    if devices is not None:
                        unique = pc.unique(pa.concat_arrays([devices, unique.cast(devices.type)]))
                    devices = unique
        if devices is None or not len(devices):
            return []
        ordered = pc.array_sort_indices(devices)
        return devices.take(ordered)[:: self.devices_per_chunk].to_pylist()

    def ranges(self, chunks_per_range: int) -> list[DeviceChunks]:
        """The chunks in consecutive groups of ``chunks_per_range``: ranges of devices that hold
        every row once between them, each read in the same chunks as the whole (so a step per
        range scores exactly what one step over the whole would)."""
        bounds = self.boundaries()
        if len(bounds) <= chunks_per_range:
            return [self]
        ranges = []
        for first in range(0, len(bounds), chunks_per_range):
            part = DeviceChunks(self.paths, self.devices_per_chunk, self.columns)
            part._boundaries = bounds[first : first + chunks_per_range]
            part._start = bounds[first] if first else None  # the first range keeps the rows without a device id
            part._end = bounds[first + chunks_per_range] if first + chunks_per_range < len(bounds) else None
            ranges.append(part)
        return ranges

    def __iter__(self) -> Iterator[pd.DataFrame]:
        if not self.paths:
            return
        bounds = self.boundaries()
        if len(bounds) <= 1 and self._start is None and self._end is None:
            yield self.frame()
            return
        # Each chunk ends where the next starts; the first starts at the range's start, the last
        # ends at its end (None: open, and the first chunk has the rows without a device id).
        for low, high in zip([self._start, *bounds[1:]], [*bounds[1:], self._end], strict=True):
            frames = [_read(path, _device_span(low, high), self.columns) for path in self.paths]
            yield pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


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
        if len(self.keys) == 1:
            yield self.keys[0], frame
            return
        days = day_keys(frame, self.keys)
        for key in self.keys:
            part = frame.loc[days == key]
            if len(part):
                yield key, part

    def append_to(self, key: str | None, frame: pd.DataFrame) -> None:
        """Append rows that all belong to partition ``key``."""
        if key not in self.heads:
            self.heads[key] = frame.head(PREVIEW_ROWS).reset_index(drop=True).copy()
        table = pa.Table.from_pandas(frame, preserve_index=False)
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
            self._writers[key] = pq.ParquetWriter(self._file(key), self._schema)
        self._writers[key].write_table(table, row_group_size=min(max(len(table), 1), ROW_GROUP_ROWS))
        self.rows += len(table)
        self.rows_by_key[key] += len(table)

    def _widen(self, schema: pa.Schema) -> None:
        """Rewrite what is written so far with ``schema`` (rare: a column all null until now)."""
        for key, writer in list(self._writers.items()):
            writer.close()
            narrow = self._file(key) + ".narrow"
            os.replace(self._file(key), narrow)
            self._writers[key] = pq.ParquetWriter(self._file(key), schema)
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


class PartitionedParquetIOManager(dg.ConfigurableIOManager):
    base_path: str
    devices_per_chunk: int = DEFAULT_DEVICES_PER_CHUNK  # inputs read as DeviceChunks

    def _path(self, asset_key: dg.AssetKey, partition_key: str | None) -> UPath:
        root = UPath(self.base_path).joinpath(*asset_key.path)
        return root / f"{partition_key}.parquet" if partition_key else root.with_suffix(".parquet")

    def partition_path(self, asset_key: dg.AssetKey, partition_key: str | None) -> UPath:
        """Where a partition is stored: for a job of ops that reads an asset's partition directly."""
        return self._path(asset_key, partition_key)

    def put_partition(self, asset_key: dg.AssetKey, partition_key: str | None, file: str) -> None:
        """A finished local parquet file into the partition's place, as ``handle_output`` puts a spool's."""
        self._put(self._path(asset_key, partition_key), file)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | PartitionSpool) -> None:
        if obj is None:
            return
        if isinstance(obj, PartitionSpool):
            try:
                for key, file in obj.files().items():
                    self._put(self._path(context.asset_key, key), file)
            finally:
                obj.discard()
            return
        if not context.has_asset_partitions:
            self._write(self._path(context.asset_key, None), obj)
            return
        keys = context.asset_partition_keys
        if len(keys) == 1:
            self._write(self._path(context.asset_key, keys[0]), obj)
            return
        days = day_keys(obj, keys)
        for key in keys:
            self._write(self._path(context.asset_key, key), obj.loc[days == key].reset_index(drop=True))

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | DeviceChunks:
        chunked = _wants_chunks(context)
        asset_key = context.asset_key
        if not context.has_asset_partitions:
            paths = [self._path(asset_key, None)]
            if not paths[0].exists():
                raise FileNotFoundError(
                    f"{asset_key.to_user_string()} has not been materialized (no file at {paths[0]}); materialize it first"
                )
        else:
            paths = self._partition_paths(context)
        chunks = DeviceChunks(paths, self.devices_per_chunk)
        return chunks if chunked else chunks.frame()

    def _partition_paths(self, context: dg.InputContext) -> list[UPath]:
        asset_key = context.asset_key
        allow_missing = bool((context.definition_metadata or {}).get(ALLOW_MISSING_PARTITIONS))
        paths = []
        for key in context.asset_partition_keys:
            path = self._path(asset_key, key)
            if path.exists():
                paths.append(path)
            elif not allow_missing:
                raise FileNotFoundError(
                    f"partition {key} of {asset_key.to_user_string()} has not been materialized "
                    f"(no file at {path}); materialize it first"
                )
            else:
                context.log.warning(f"optional partition {key} of {asset_key.to_user_string()} is missing; continuing")
        if not paths and not allow_missing:
            raise FileNotFoundError(f"no partitions of {asset_key.to_user_string()} to load")
        return paths

    @staticmethod
    def _write(path: UPath, frame: pd.DataFrame) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.protocol not in ("", "file", "local"):
            with path.open("wb") as handle:
                frame.to_parquet(handle, index=False)
            return
        _replace(path, lambda temporary: frame.to_parquet(temporary, index=False))

    @staticmethod
    def _put(path: UPath, file: str) -> None:
        """A finished local file into place: renamed on a local path, one upload on a store."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.protocol not in ("", "file", "local"):
            with open(file, "rb") as source, path.open("wb") as target:
                shutil.copyfileobj(source, target, length=16 << 20)
            return
        _replace(path, lambda temporary: shutil.move(file, temporary))  # a rename on the same file system


def _replace(path: UPath, fill: Callable[[str], object]) -> None:
    """Fill a temporary file beside a local ``path``, then rename it over ``path``: readers see
    the old file or the whole new one, never a half-written one."""
    temporary = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        fill(temporary.path)
        os.replace(temporary.path, path.path)
    finally:
        if temporary.exists():
            temporary.unlink()


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


def _wants_chunks(context: dg.InputContext) -> bool:
    try:
        return context.dagster_type.typing_type is DeviceChunks
    except dg.DagsterInvariantViolationError:  # a context built by hand, without the input's type
        return False


def _device_span(low, high) -> ds.Expression | None:
    """The rows of devices ``low <= device_id < high``; no ``low``: with the rows without an id."""
    device = ds.field(DEVICE_COLUMN)
    if low is None:
        return None if high is None else (device < high) | device.is_null()
    return device >= low if high is None else (device >= low) & (device < high)


def _read(path: UPath, condition: ds.Expression | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
    with path.open("rb") as handle:
        if columns is not None:  # only those the file has (an empty partition has none)
            present = set(pq.ParquetFile(handle).schema_arrow.names)
            handle.seek(0)
            columns = [c for c in columns if c in present]
        return pd.read_parquet(handle, filters=condition, columns=columns)
