"""What a chunk pool's workers run for the heavy steps: a chunk read from the step's input files
and put through core functions. Nothing here imports Dagster, so a worker starts in about the
time its numeric libraries take to import."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from anomaly_assets.core.chunk_scoring import ScoredChunk, score_chunk
from anomaly_assets.core.features import build_daily_features
from anomaly_assets.core.inventory import join_inventory
from anomaly_assets.core.timestamps import parse_utc
from anomaly_assets.resources.partition_spool import split_by_partition

if TYPE_CHECKING:
    from anomaly_assets.core.validation import SchemaError, ValidationResult


@dataclasses.dataclass
class ValidatedDay:
    """One day of a chunk validated: its valid rows (inventory joined), the result without them,
    or the schema error that stopped it."""

    day: str
    valid: pa.Table | None = None
    result: ValidationResult | None = None
    devices_not_in_inventory: int = 0
    error: SchemaError | None = None


def warm_up() -> None:
    """A worker's start: Great Expectations' context (seconds) before its first chunk arrives."""
    from anomaly_assets.core.validation.engine import prepare_context

    prepare_context()


def validate_chunk(shared: tuple, index: int) -> list[ValidatedDay]:
    """validated_telemetry's task: chunk ``index`` of raw_telemetry validated per day of the run.
    Rows whose timestamp lies outside the run's window (or is unreadable) are validated with the
    first day, where they are quarantined, never lost."""
    from anomaly_assets.core.validation import SchemaError, validate_telemetry  # Great Expectations: only this task's workers

    raw_telemetry, contract, days, day_starts, start, end, attributes, device_inventory = shared
    chunk = raw_telemetry.read_chunk(index)
    out = []
    for day, day_start, frame in zip(days, day_starts, split_by_day(chunk, day_starts, start, end), strict=True):
        if frame.empty:
            continue
        try:
            result = validate_telemetry(frame, contract, day_start, day_start + pd.Timedelta(days=1))
        except SchemaError as error:
            out.append(ValidatedDay(day, error=error))
            continue
        valid, missing = result.valid, 0
        if attributes:
            valid, joined = join_inventory(valid, device_inventory, attributes)
            missing = int(joined["devices_missing_from_inventory"])
        out.append(ValidatedDay(day, pa.Table.from_pandas(valid, preserve_index=False), result.without_valid(), missing))
    return out


def split_by_day(raw: pd.DataFrame, day_starts: pd.DatetimeIndex, start: pd.Timestamp, end: pd.Timestamp) -> list[pd.DataFrame]:
    """A chunk's rows per day of the run (unreadable or out-of-window timestamps: the first day)."""
    if len(day_starts) == 1:
        return [raw]
    if "timestamp" not in raw:
        return [raw] + [raw.iloc[0:0]] * (len(day_starts) - 1)  # the schema rules will name the problem
    timestamps = parse_utc(raw["timestamp"])  # as validation reads them; unreadable: the first day
    in_window = ((timestamps >= start) & (timestamps < end)).fillna(False)
    row_day = timestamps.dt.floor("D").where(in_window, day_starts[0])
    return [raw.loc[row_day == day] for day in day_starts]


def chunk_features(shared: tuple, index: int) -> tuple[dict, int]:
    """device_features' task: chunk ``index`` of validated_telemetry (a DeviceChunks), its features
    per partition as Arrow tables (sent back as buffers), and how many of its rows were lookback."""
    validated_telemetry, spec, days, keys, start = shared
    chunk = validated_telemetry.read_chunk(index)
    in_run = (chunk["timestamp"] >= start) if "timestamp" in chunk else pd.Series(False, index=chunk.index)
    lookback = int((~in_run).sum())
    if not in_run.any():
        return {}, lookback
    features = build_daily_features(chunk, spec, days)
    del chunk
    return {key: pa.Table.from_pandas(part, preserve_index=False) for key, part in split_by_partition(features, keys)}, lookback


def score_chunk_task(shared: tuple, index: int) -> ScoredChunk:
    """The scoring step's task: chunk ``index`` of device_features scored and measured for drift."""
    model, device_features, options = shared
    return score_chunk(model, device_features.read_chunk(index), drift_seed=index, **options)
