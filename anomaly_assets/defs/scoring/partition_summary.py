"""What a scored_anomalies partition says of itself (its metadata and MLflow scoring run), from
figures added up over chunks of devices: shared by the asset and the device-range job."""

import dagster as dg
import pandas as pd

from anomaly_assets import reports
from anomaly_assets.core.feature_words import with_words
from anomaly_assets.defs.partitions import markdown_preview
from anomaly_assets.explorer import links
from anomaly_assets.resources import MlflowModelRegistry

TOP_DEVICES = 10


def scored_partition_metadata(
    model_registry: MlflowModelRegistry,
    day: str,
    version: str,
    *,
    rows: int,
    anomalies: int,
    devices_with_anomalies: int,
    hourly: pd.DataFrame,
    worst: list[pd.DataFrame],
    scores_training_days: bool,
    run_id: str,
) -> dict:
    """The metadata of a scored_anomalies partition from its figures added up over chunks (or
    ranges); logs the partition's MLflow scoring run. ``hourly``: ``reports.flagged_per_hour``
    counts; ``worst``: each chunk's ``top_devices``."""
    figures = {"anomalies_over_time": reports.anomalies_over_time(hourly)} if len(hourly) else {}
    try:
        mlflow_run = model_registry.log_scoring_run(
            day,
            version,
            metrics={"rows": rows, "anomalies": anomalies, "anomaly_rate": anomalies / max(rows, 1)},
            figures=figures,
            tags={"dagster_run_id": run_id},
        )
    finally:
        reports.close(figures)
    top = concat_frames(worst)
    if len(top):
        top = readable_top_devices(top.sort_values("max_severity", ascending=False, kind="stable").head(TOP_DEVICES), day)
    explorer = links.explorer_url()
    return {
        "dagster/row_count": rows,
        "mlflow_run": dg.MetadataValue.url(mlflow_run),
        "anomalies": anomalies,
        "anomaly_rate": round(anomalies / rows, 6) if rows else 0.0,
        "devices_with_anomalies": devices_with_anomalies,
        "model_name": model_registry.model_name,
        "model_version": version,
        "scores_training_days": scores_training_days,
        "top_devices": markdown_preview(top, rows=TOP_DEVICES),
        **({"explorer": dg.MetadataValue.url(links.day_page(explorer, day))} if explorer else {}),
    }


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


def concat_frames(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames with rows, as one (an empty one when none has rows)."""
    frames = [f for f in frames if len(f)] or frames[:1]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
