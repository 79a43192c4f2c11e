"""scored_anomalies and feature_drift, computed together from one reading of device_features.

scored_anomalies: the champion model scores a partition's features; flagged rows and a
per-device daily summary go to the results database, replacing the partition's previous rows.
feature_drift: per-feature drift of the partition against the champion's training reference
(its config, metadata and check are in anomaly_assets/defs/monitoring/assets.py).

One subsettable multi-asset (op ``score_and_measure_drift``): materialized together, each chunk
of devices is read once and its model inputs serve both; each asset still materializes alone.
The chunks are spread over the run's worker processes (anomaly_assets/resources/chunk_workers.py).
"""

import dagster as dg
import pandas as pd

from anomaly_assets.version import code_version
from anomaly_assets.core.chunk_scoring import ScoredChunk
from anomaly_assets.core.drift import CurrentDistribution, keep_below
from anomaly_assets.defs.monitoring.assets import FEATURE_DRIFT_CHECK, DriftConfig, feature_drift_results_events
from anomaly_assets.defs.registry.champion import CHAMPION_MODEL
from anomaly_assets.defs.partitions import (
    daily_partitions,
    days_in,
    partition_metadata,
    partition_window,
)
from anomaly_assets.resources import MlflowModelRegistry, ResultsStore
from anomaly_assets.resources.chunk_workers import ChunkWorkers
from anomaly_assets.resources.chunk_tasks import score_chunk_task
from anomaly_assets.resources.parquet_io import DeviceChunks, PartitionSpool
from anomaly_assets.resources.results_store import anomaly_events, device_daily_summary
from anomaly_assets.defs.scoring.partition_summary import TOP_DEVICES, concat_frames, scored_partition_metadata

OWNERS = ["team:fleet-analytics"]
SCORED_ANOMALIES = dg.AssetKey("scored_anomalies")
FEATURE_DRIFT = dg.AssetKey("feature_drift")


@dg.multi_asset(
    name="score_and_measure_drift",
    specs=[
        dg.AssetSpec(
            SCORED_ANOMALIES,
            group_name="scoring",
            kinds={"pandas", "parquet", "mlflow"},
            owners=OWNERS,
            code_version=code_version(),
            # the model it scores with: a promotion or rollback marks its partitions stale
            deps=["device_features", CHAMPION_MODEL],
            description="Every row scored by the model behind the 'champion' alias, with severity and top features.",
        ).with_io_manager_key("io_manager"),
        dg.AssetSpec(
            FEATURE_DRIFT,
            group_name="monitoring",
            kinds={"pandas", "sql"},
            owners=OWNERS,
            code_version=code_version(),
            deps=["device_features", CHAMPION_MODEL],  # measured against the champion's training reference
            description="Per-feature PSI and KS statistic of the partition against the champion's training reference.",
        ),
    ],
    check_specs=[FEATURE_DRIFT_CHECK],
    can_subset=True,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),  # each day of the run still gets its own rows and metadata
)
def score_and_measure_drift(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    device_features: DeviceChunks,
    model_registry: MlflowModelRegistry,
    results_store: ResultsStore,
    chunk_workers: ChunkWorkers,
):
    selected = context.selected_asset_keys
    scoring, drift = SCORED_ANOMALIES in selected, FEATURE_DRIFT in selected
    start, end = partition_window(context)
    version, model = model_registry.load_champion()
    if drift and model.drift_reference is None:
        raise dg.Failure(description=f"champion version {version} was trained without a drift reference; retrain it")
    days = days_in(start, end)
    rows = device_features.rows_per_file()  # one file per day, from the footers
    bounds = {day: keep_below(count) for day, count in zip(days, rows, strict=True)} if len(rows) == len(days) else {}
    options = {"days": days, "model_name": model_registry.model_name, "model_version": version, "score": scoring, "drift": drift}
    options.update(keep_below=bounds, top=TOP_DEVICES)
    chunks = chunk_workers.map(score_chunk_task, (model, device_features, options), range(device_features.chunk_count()))
    drift_by_day: dict[str, CurrentDistribution] = {}
    if scoring:
        yield from _scored_anomalies(context, chunks, days, model, version, model_registry, results_store, drift_by_day)
    else:
        for chunk in chunks:
            _merge_drift(drift_by_day, chunk)
    if drift:
        current = {day: CurrentDistribution(model.drift_reference) for day in context.partition_keys}
        for day, distribution in drift_by_day.items():
            current[day] = distribution
        yield from feature_drift_results_events(context, current, config.psi_threshold, version, results_store)


def _merge_drift(by_day: dict[str, CurrentDistribution], chunk: ScoredChunk) -> None:
    """Chunks arrive in device order: merged so, the drift sample is the serial one's."""
    for day, distribution in chunk.drift.items():
        if day in by_day:
            by_day[day].merge(distribution)
        else:
            by_day[day] = distribution


def _scored_anomalies(context, chunks, days, model, version, model_registry, results_store, drift_by_day):
    spool = PartitionSpool(context.partition_keys)
    events = PartitionSpool(None)  # the flagged rows, also spooled: ~1% of a fleet's rows can be millions
    summaries, hourly = [], []
    flagged = dict.fromkeys(days, 0)
    flagged_devices = dict.fromkeys(days, 0)
    worst: dict[str, list[pd.DataFrame]] = {day: [] for day in days}
    # A chunk of whole devices at a time: every row and every flagged row go to spools; only the
    # per-device summary, hourly counts and each chunk's worst devices stay in memory.
    for chunk in chunks:
        _merge_drift(drift_by_day, chunk)
        for day, scored in chunk.scored.items():
            spool.append_to(day, scored)
        if len(chunk.events):
            events.append(chunk.events)
        for day in days:
            flagged[day] += chunk.flagged.get(day, 0)
            flagged_devices[day] += chunk.flagged_devices.get(day, 0)
            if day in chunk.worst:
                worst[day].append(chunk.worst[day])
        if len(chunk.summary):
            summaries.append(chunk.summary)
            hourly.append(chunk.hourly)
        del chunk
    summary = concat_frames(summaries)
    hourly = concat_frames(hourly)
    try:
        results_store.replace_partitions(anomaly_events, days, events.batches())
    finally:
        events.discard()
    results_store.replace_partitions(device_daily_summary, days, summary)
    training_end = pd.Timestamp(model.training_summary.get("validation_end", "1970-01-01"))
    start = pd.Timestamp(days[0], tz="UTC")

    def describe(day: str) -> dict:
        return scored_partition_metadata(
            model_registry,
            day,
            version,
            rows=spool.rows_by_key[day],
            anomalies=flagged[day],
            devices_with_anomalies=flagged_devices[day],
            hourly=hourly.loc[hourly["partition_date"] == day] if len(hourly) else hourly,
            worst=worst[day],
            scores_training_days=bool(training_end >= start),
            run_id=context.run.run_id,
        )

    metadata = partition_metadata(context, {day: describe(day) for day in days}, asset_key=SCORED_ANOMALIES)
    yield dg.Output(spool, output_name="scored_anomalies", metadata=metadata)
