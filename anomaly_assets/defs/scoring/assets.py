"""scored_anomalies: the champion model scores a partition's features; flagged rows and a
per-device daily summary go to the results database, replacing the partition's previous rows."""


import dagster as dg
import pandas as pd

from anomaly_assets import reports

from anomaly_assets.version import code_version
from anomaly_assets.core.feature_words import with_words
from anomaly_assets.core.scoring import daily_device_summary, top_devices
from anomaly_assets.defs.registry.champion import CHAMPION_MODEL
from anomaly_assets.defs.partitions import (
    daily_partitions,
    days_in,
    markdown_preview,
    partition_metadata,
    partition_window,
)
from anomaly_assets.resources import MlflowModelRegistry, ResultsStore
from anomaly_assets.explorer import links
from anomaly_assets.resources.parquet_io import DeviceChunks, PartitionSpool
from anomaly_assets.resources.results_store import anomaly_events, device_daily_summary

TOP_DEVICES = 10


@dg.asset(
    partitions_def=daily_partitions,
    group_name="scoring",
    kinds={"pandas", "parquet", "mlflow"},
    owners=["team:fleet-analytics"],
    code_version=code_version(),
    deps=[CHAMPION_MODEL],  # the model it scores with: a promotion or rollback marks its partitions stale
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
    events = PartitionSpool(None)  # the flagged rows, also spooled: ~1% of a fleet's rows can be millions
    summaries, hourly = [], []
    flagged = dict.fromkeys(days, 0)
    flagged_devices = dict.fromkeys(days, 0)
    worst: dict[str, list[pd.DataFrame]] = {day: [] for day in days}
    # A chunk of whole devices at a time: every row and every flagged row go to spools; only the
    # per-device summary, hourly counts and each chunk's worst devices stay in memory.
    for chunk in device_features:
        if chunk.empty:
            continue
        scored = model.score(chunk).assign(
            model_name=model_registry.model_name,
            model_version=version,
            partition_date=lambda f: f["timestamp"].dt.strftime("%Y-%m-%d"),
        )
        spool.append(scored)
        chunk_events = scored.loc[scored["is_anomaly"]]
        events.append(chunk_events)
        for day, day_events in chunk_events.groupby("partition_date"):
            # A device lies in one chunk, so per-chunk counts add up and the fleet's worst devices
            # are among the chunks' own worst.
            flagged[day] += len(day_events)
            flagged_devices[day] += day_events["device_id"].nunique()
            worst[day].append(top_devices(day_events, TOP_DEVICES))
        summaries.append(daily_device_summary(scored))
        hourly.append(reports.flagged_per_hour(scored).assign(partition_date=lambda f: f["bucket"].dt.strftime("%Y-%m-%d")))
        del scored, chunk_events
    summary = _concat(summaries)
    hourly = _concat(hourly)
    try:
        results_store.replace_partitions(anomaly_events, days, events.batches())
    finally:
        events.discard()
    results_store.replace_partitions(device_daily_summary, days, summary)
    training_end = pd.Timestamp(model.training_summary.get("validation_end", "1970-01-01"))

    def describe(day: str) -> dict:
        rows = spool.rows_by_key[day]
        counts = hourly.loc[hourly["partition_date"] == day] if len(hourly) else hourly
        figures = {"anomalies_over_time": reports.anomalies_over_time(counts)} if len(counts) else {}
        try:
            mlflow_run = model_registry.log_scoring_run(
                day,
                version,
                metrics={"rows": rows, "anomalies": flagged[day], "anomaly_rate": flagged[day] / max(rows, 1)},
                figures=figures,
                tags={"dagster_run_id": context.run.run_id},
            )
        finally:
            reports.close(figures)
        top = _concat(worst[day])
        if len(top):
            top = readable_top_devices(top.sort_values("max_severity", ascending=False, kind="stable").head(TOP_DEVICES), day)
        explorer = links.explorer_url()
        return {
            "dagster/row_count": rows,
            "mlflow_run": dg.MetadataValue.url(mlflow_run),
            "anomalies": flagged[day],
            "anomaly_rate": round(flagged[day] / rows, 6) if rows else 0.0,
            "devices_with_anomalies": flagged_devices[day],
            "model_name": model_registry.model_name,
            "model_version": version,
            "scores_training_days": bool(training_end >= start),
            "top_devices": markdown_preview(top, rows=TOP_DEVICES),
            **({"explorer": dg.MetadataValue.url(links.day_page(explorer, day))} if explorer else {}),
        }

    return dg.Output(spool, metadata=partition_metadata(context, {day: describe(day) for day in days}))


def readable_top_devices(top: pd.DataFrame, day: str) -> pd.DataFrame:
    """Feature codes with their words; with ANOMALY_ASSETS_EXPLORER_URL set, each device links to
    its page in the anomaly explorer."""
    out = top.assign(
        top_features=top["top_features"].map(lambda text: "; ".join(with_words(c.strip()) for c in str(text).split(",") if c.strip()))
    )
    explorer = links.explorer_url()
    if explorer:
        out["device_id"] = [f"[{d}]({links.device_page(explorer, d, day=day)})" for d in out["device_id"]]
    return out


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)] or frames[:1]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
