"""What a chunk pool's workers run for the heavy steps: a chunk read from the step's input files
and put through core functions. Nothing here imports Dagster, so a worker starts in about the
time its numeric libraries take to import."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from anomaly_assets.core.chunk_scoring import ScoredChunk, score_chunk
from anomaly_assets.core.features import build_daily_features
from anomaly_assets.resources.partition_spool import split_by_partition


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
