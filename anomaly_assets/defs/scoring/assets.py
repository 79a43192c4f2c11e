"""scored_anomalies: the champion model scores a partition's features; flagged rows and a
per-device daily summary go to the results database, replacing the partition's previous rows."""


import dagster as dg
import pandas as pd

from anomaly_assets import reports

from anomaly_assets.core.scoring import daily_device_summary, top_devices
from anomaly_assets.defs.partitions import (
    daily_partitions,
    days_in,
    markdown_preview,
    partition_metadata,
    partition_window,
)
from anomaly_assets.resources import MlflowModelRegistry, ResultsStore
from anomaly_assets.resources.parquet_io import DeviceChunks, PartitionSpool
from anomaly_assets.resources.results_store import anomaly_events, device_daily_summary


@dg.asset(
    partitions_def=daily_partitions,
    group_name="scoring",
    kinds={"pandas", "parquet", "mlflow"},
    owners=["team:fleet-analytics"],
    code_version="1",
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="Every row scored by the model behind the 'champion' alias, with severity and top features.",
)
def scored_anomalies(
    context: dg.AssetExecutionContext,
    device_features: DeviceChunks,
    model_registry: MlflowModelRegistry,
    results_store: ResultsStore,
) -> dg.Output[PartitionSpool]:
    start, end = partition_window(context)
    version, model = model_registry.load_champion()
    days = days_in(start, end)
    spool = PartitionSpool(context.partition_keys)
    events, summaries, hourly = [], [], []
    # A chunk of whole devices at a time: every row is kept in the spool; only the flagged rows,
    # the per-device summary and hourly counts stay in memory.
    for chunk in device_features:
        if chunk.empty:
            continue
        scored = model.score(chunk).assign(
            model_name=model_registry.model_name,
            model_version=version,
            partition_date=lambda f: f["timestamp"].dt.strftime("%Y-%m-%d"),
        )
        spool.append(scored)
        events.append(scored.loc[scored["is_anomaly"]])
        summaries.append(daily_device_summary(scored))
        hourly.append(reports.flagged_per_hour(scored).assign(partition_date=lambda f: f["bucket"].dt.strftime("%Y-%m-%d")))
        del scored
    events = _concat(events)
    summary = _concat(summaries)
    hourly = _concat(hourly)
    results_store.replace_partitions(anomaly_events, days, events)
    results_store.replace_partitions(device_daily_summary, days, summary)
    training_end = pd.Timestamp(model.training_summary.get("validation_end", "1970-01-01"))

    def describe(day: str) -> dict:
        rows = spool.rows_by_key[day]
        flagged_rows = events.loc[events["partition_date"] == day] if len(events) else events
        flagged = len(flagged_rows)
        counts = hourly.loc[hourly["partition_date"] == day] if len(hourly) else hourly
        figures = {"anomalies_over_time": reports.anomalies_over_time(counts)} if len(counts) else {}
        try:
            mlflow_run = model_registry.log_scoring_run(
                day,
                version,
                metrics={"rows": rows, "anomalies": flagged, "anomaly_rate": flagged / max(rows, 1)},
                figures=figures,
                tags={"dagster_run_id": context.run.run_id},
            )
        finally:
            reports.close(figures)
        return {
            "dagster/row_count": rows,
            "mlflow_run": dg.MetadataValue.url(mlflow_run),
            "anomalies": flagged,
            "anomaly_rate": round(flagged / rows, 6) if rows else 0.0,
            "devices_with_anomalies": int(flagged_rows["device_id"].nunique()) if flagged else 0,
            "model_name": model_registry.model_name,
            "model_version": version,
            "scores_training_days": bool(training_end >= start),
            "top_devices": markdown_preview(top_devices(flagged_rows) if flagged else pd.DataFrame(), rows=10),
        }

    return dg.Output(spool, metadata=partition_metadata(context, {day: describe(day) for day in days}))


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)] or frames[:1]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
