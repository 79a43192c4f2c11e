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
    device_features: pd.DataFrame,
    model_registry: MlflowModelRegistry,
    results_store: ResultsStore,
) -> dg.Output[pd.DataFrame]:
    start, end = partition_window(context)
    version, model = model_registry.load_champion()
    scored = model.score(device_features).assign(
        model_name=model_registry.model_name,
        model_version=version,
        partition_date=lambda f: f["timestamp"].dt.strftime("%Y-%m-%d"),
    )
    days = days_in(start, end)
    events = scored.loc[scored["is_anomaly"]]
    summary = daily_device_summary(scored)
    results_store.replace_partitions(anomaly_events, days, events)
    results_store.replace_partitions(device_daily_summary, days, summary)
    training_end = pd.Timestamp(model.training_summary.get("validation_end", "1970-01-01"))

    def describe(rows: pd.DataFrame) -> dict:
        day = rows["partition_date"].iloc[0] if len(rows) else start.strftime("%Y-%m-%d")
        flagged = int(rows["is_anomaly"].sum())
        figures = {"anomalies_over_time": reports.anomalies_over_time(rows)} if len(rows) else {}
        try:
            mlflow_run = model_registry.log_scoring_run(
                day,
                version,
                metrics={"rows": len(rows), "anomalies": flagged, "anomaly_rate": flagged / max(len(rows), 1)},
                figures=figures,
                tags={"dagster_run_id": context.run.run_id},
            )
        finally:
            reports.close(figures)
        return {
            "dagster/row_count": len(rows),
            "mlflow_run": dg.MetadataValue.url(mlflow_run),
            "anomalies": flagged,
            "anomaly_rate": round(flagged / len(rows), 6) if len(rows) else 0.0,
            "devices_with_anomalies": int(rows.loc[rows["is_anomaly"], "device_id"].nunique()),
            "model_name": model_registry.model_name,
            "model_version": version,
            "scores_training_days": bool(training_end >= start),
            "top_devices": markdown_preview(top_devices(rows), rows=10),
        }

    return dg.Output(scored, metadata=partition_metadata(context, scored, describe))
