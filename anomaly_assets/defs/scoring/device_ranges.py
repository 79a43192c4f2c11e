"""device_range_scoring_job: one day of scored_anomalies from ranges of devices scored by parallel
steps, for a fleet too large for one machine's cores (run it on the Celery executor).

plan_device_ranges cuts the day's device_features into ranges of whole chunks; score_device_range
(one step per range, on whichever worker takes it) scores its range a chunk at a time and stages
the rows as parquet under ``<ANOMALY_ASSETS_HOME>/staging/device_ranges/<run id>/``;
assemble_scored_partition writes the partition and its results-database rows as the
scored_anomalies asset does, records the asset's materialization, and removes the staging.
Each step's memory depends on the chunk size, not on the fleet's size; the staging folder must be
one every worker reaches (a shared ANOMALY_ASSETS_HOME).
"""

import dataclasses
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq

from anomaly_assets.core.chunk_scoring import score_chunk
from anomaly_assets.defs.partitions import SETTINGS, daily_partitions, partition_window
from anomaly_assets.defs.scoring.partition_summary import TOP_DEVICES, concat_frames, scored_partition_metadata
from anomaly_assets.resources import MlflowModelRegistry, ResultsStore
from anomaly_assets.resources.parquet_io import DeviceChunks, PartitionedParquetIOManager, PartitionSpool
from anomaly_assets.resources.results_store import anomaly_events, device_daily_summary
from anomaly_assets.settings import Settings

STAGING = "device_range_staging"  # IO manager of the ops' outputs, in the folder the ranges stage in
DEVICE_FEATURES = dg.AssetKey("device_features")
SCORED_ANOMALIES = dg.AssetKey("scored_anomalies")


def staging_io_manager(settings: Settings) -> dg.FilesystemIOManager:
    return dg.FilesystemIOManager(base_dir=str(settings.home / "staging" / "device_ranges"))


@dataclasses.dataclass
class DeviceRange:
    index: int
    chunks: DeviceChunks  # the range's devices, read a chunk at a time


@dataclasses.dataclass
class ScoredRange:
    """A scored range: its rows and flagged rows staged as parquet, and the small per-device and
    per-hour figures the partition's summary and metadata are added up from."""

    index: int
    scored_file: str
    events_file: str
    rows: int
    anomalies: int
    devices_with_anomalies: int
    summary: pd.DataFrame
    hourly: pd.DataFrame
    worst: pd.DataFrame  # each chunk's worst devices: the day's worst are among them
    model_version: str
    validation_end: str


class RangePlan(dg.Config):
    # ANOMALY_ASSETS_DEVICES_PER_RANGE; rounded up to whole chunks (ANOMALY_ASSETS_DEVICES_PER_CHUNK).
    devices_per_range: int = SETTINGS.devices_per_range


@dg.op(out=dg.DynamicOut(DeviceRange, io_manager_key=STAGING))
def plan_device_ranges(
    context: dg.OpExecutionContext, config: RangePlan, io_manager: dg.ResourceParam[PartitionedParquetIOManager]
) -> Iterator[dg.DynamicOutput]:
    """The partition's devices in ranges of whole chunks, cut where scored_anomalies cuts its chunks."""
    if config.devices_per_range < 1:
        raise ValueError(f"devices_per_range must be at least 1, got {config.devices_per_range}")
    parquet = io_manager
    path = parquet.partition_path(DEVICE_FEATURES, context.partition_key)
    if not path.exists():
        raise FileNotFoundError(
            f"partition {context.partition_key} of device_features has not been materialized (no file at {path}); "
            "materialize it first"
        )
    features = DeviceChunks([path], parquet.devices_per_chunk)
    chunks_per_range = -(-config.devices_per_range // parquet.devices_per_chunk)
    ranges = features.ranges(chunks_per_range)
    context.log.info(
        f"{len(ranges)} ranges of up to {chunks_per_range} chunks of {parquet.devices_per_chunk:,} devices"
    )
    for index, chunks in enumerate(ranges):
        yield dg.DynamicOutput(DeviceRange(index, chunks), mapping_key=f"range_{index}")


@dg.op(out=dg.Out(ScoredRange, io_manager_key=STAGING))
def score_device_range(
    context: dg.OpExecutionContext,
    device_range: DeviceRange,
    model_registry: MlflowModelRegistry,
    device_range_staging: dg.ResourceParam[Any],  # the staging IO manager: its folder
) -> dg.Output[ScoredRange]:
    """The range's rows scored by the champion a chunk at a time, staged as parquet."""
    day = context.partition_key
    version, model = model_registry.load_champion()
    rows, flagged = PartitionSpool([day]), PartitionSpool([day])
    summaries, hourly, worst = [], [], []
    devices_with_anomalies = 0
    try:
        for features in device_range.chunks:  # each chunk scored as the scoring asset scores it
            chunk = score_chunk(
                model, features, [day], model_name=model_registry.model_name, model_version=version, drift=False, top=TOP_DEVICES
            )
            if day not in chunk.scored:
                continue
            rows.append_to(day, chunk.scored[day])
            flagged.append_to(day, chunk.events)
            devices_with_anomalies += chunk.flagged_devices[day]  # a device lies in one chunk
            if day in chunk.worst:
                worst.append(chunk.worst[day])
            summaries.append(chunk.summary)
            hourly.append(chunk.hourly)
            del chunk
        folder = range_staging(context, device_range_staging.base_dir)
        folder.mkdir(parents=True, exist_ok=True)
        scored_file, events_file = (folder / f"{kind}-{device_range.index:05d}.parquet" for kind in ("scored", "events"))
        shutil.move(rows.files()[day], scored_file)
        shutil.move(flagged.files()[day], events_file)
        result = ScoredRange(
            index=device_range.index,
            scored_file=str(scored_file),
            events_file=str(events_file),
            rows=rows.rows,
            anomalies=flagged.rows,
            devices_with_anomalies=devices_with_anomalies,
            summary=concat_frames(summaries),
            hourly=concat_frames(hourly),
            worst=concat_frames(worst),
            model_version=version,
            validation_end=str(model.training_summary.get("validation_end", "1970-01-01")),
        )
    finally:
        rows.discard()
        flagged.discard()
    return dg.Output(result, metadata={"rows": result.rows, "anomalies": result.anomalies, **where_this_runs()})


@dg.op(out={})
def assemble_scored_partition(
    context: dg.OpExecutionContext,
    ranges: list[ScoredRange],
    io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    device_range_staging: dg.ResourceParam[Any],
    model_registry: MlflowModelRegistry,
    results_store: ResultsStore,
) -> Iterator[dg.AssetMaterialization]:
    """The ranges' rows as the scored_anomalies partition and its results-database rows, then the
    staging removed; what the asset would record, recorded as its materialization."""
    day = context.partition_key
    ranges = sorted(ranges, key=lambda r: r.index)
    versions = sorted({r.model_version for r in ranges})
    if len(versions) != 1:
        raise RuntimeError(f"the champion changed while the ranges were scored (versions {versions}): run the day again")
    version = versions[0]
    partition = PartitionSpool([day])
    try:
        for batch in _batches(r.scored_file for r in ranges):
            partition.append_to(day, batch)
        io_manager.put_partition(SCORED_ANOMALIES, day, partition.files()[day])
    finally:
        partition.discard()
    results_store.replace_partitions(anomaly_events, [day], _batches(r.events_file for r in ranges))
    results_store.replace_partitions(device_daily_summary, [day], concat_frames([r.summary for r in ranges]))
    start, _end = partition_window(context)
    metadata = scored_partition_metadata(
        model_registry,
        day,
        version,
        rows=sum(r.rows for r in ranges),
        anomalies=sum(r.anomalies for r in ranges),
        devices_with_anomalies=sum(r.devices_with_anomalies for r in ranges),
        hourly=concat_frames([r.hourly for r in ranges]),
        worst=[r.worst for r in ranges],
        scores_training_days=bool(pd.Timestamp(ranges[0].validation_end) >= start),
        run_id=context.run.run_id,
    )
    yield dg.AssetMaterialization(SCORED_ANOMALIES, partition=day, metadata=metadata)
    shutil.rmtree(range_staging(context, device_range_staging.base_dir).parent, ignore_errors=True)


def range_staging(context: dg.OpExecutionContext, base_dir: str) -> Path:
    """Where the run's ranges stage their rows: beside the run's op outputs, removed with them."""
    return Path(base_dir) / context.run.run_id / "ranges"


def where_this_runs() -> dict:
    """The step's host and process, and its Celery worker's name when a Celery worker runs it."""
    celery = sys.modules.get("celery")  # imported only in a worker: this never imports it
    request = getattr(getattr(celery, "current_task", None), "request", None)
    worker = getattr(request, "hostname", None)
    return {"host": socket.gethostname(), "pid": os.getpid(), **({"celery_worker": worker} if worker else {})}


def _batches(files, rows: int = 100_000) -> Iterator[pd.DataFrame]:
    """The staged files' rows, ``rows`` at a time, in order."""
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=rows):
            yield batch.to_pandas()


@dg.job(
    partitions_def=daily_partitions,
    description=(
        "scored_anomalies of a day from ranges of devices scored in parallel steps (Celery workers with a shared "
        "ANOMALY_ASSETS_HOME): a range per ANOMALY_ASSETS_DEVICES_PER_RANGE devices, each read a chunk at a time."
    ),
)
def device_range_scoring_job():
    assemble_scored_partition(plan_device_ranges().map(score_device_range).collect())
