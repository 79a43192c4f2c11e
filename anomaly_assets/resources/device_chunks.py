"""Stored partitions read a chunk of whole devices at a time (:class:`DeviceChunks`), and the
device-grouped layout it reads best. No Dagster here: a worker process of a step's chunk pool
reads its chunks with it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from upath import UPath

from anomaly_assets.core.timestamps import parse_utc

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
        self._devices: int | None = None  # distinct device ids, counted with the boundaries
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
            self._read_devices()
        return self._boundaries

    def device_count(self) -> int:
        """How many distinct device ids the files hold (all of them, not a range's); read with the
        boundaries, in the same pass."""
        if self._devices is None:
            self._read_devices()
        return self._devices

    def _read_devices(self) -> None:
        """The sorted distinct device ids, one row group at a time: their count, and the boundaries
        when none were given."""
        sorted_ids = self._sorted_devices()
        self._devices = len(sorted_ids)
        if self._boundaries is None:
            self._boundaries = sorted_ids[:: self.devices_per_chunk].to_pylist() if len(sorted_ids) else []

    def _sorted_devices(self) -> pa.Array:
        devices = None
        for path in self.paths:
            with path.open("rb") as handle:
                file = pq.ParquetFile(handle)
                if DEVICE_COLUMN not in file.schema_arrow.names:
                    return pa.array([])
                for group in range(file.num_row_groups):  # one row group at a time: memory per group, not file
                    column = file.read_row_group(group, columns=[DEVICE_COLUMN]).column(0)
                    if pa.types.is_null(column.type):
                        continue
                    unique = pc.unique(column.combine_chunks().drop_null())
                    if devices is not None:
                        unique = pc.unique(pa.concat_arrays([devices, unique.cast(devices.type)]))
                    devices = unique
        if devices is None:
            return pa.array([])
        return devices.take(pc.array_sort_indices(devices))

    def chunk_count(self) -> int:
        """How many chunks ``read_chunk`` serves (1 when there is nothing to chunk by)."""
        return max(len(self.boundaries()), 1) if self.paths else 0

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

    def read_chunk(self, index: int) -> pd.DataFrame:
        """Chunk ``index`` (0-based, in device order): what iterating yields as its ``index``-th."""
        bounds = self.boundaries()
        if len(bounds) <= 1 and self._start is None and self._end is None:
            return self.frame()
        # Each chunk ends where the next starts; the first starts at the range's start, the last
        # ends at its end (None: open, and the first chunk has the rows without a device id).
        low = self._start if index == 0 else bounds[index]
        high = bounds[index + 1] if index + 1 < len(bounds) else self._end
        frames = [_read(path, _device_span(low, high), self.columns) for path in self.paths]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def __iter__(self) -> Iterator[pd.DataFrame]:
        for index in range(self.chunk_count()):
            yield self.read_chunk(index)


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
