"""cohort_stats, baselines and anomaly_detector, from the training window ending with the
partition's day (the last ``training_days`` days), never the days being scored. Within the
window, cohort stats, baselines and detectors are fitted on the fitting slice only; the detector's
threshold is chosen on the validation day and its quality measured on the held-out day after it
(``core.detector.training_slices``)."""


import dataclasses
import os

import dagster as dg
import numpy as np
import pandas as pd

from anomaly_assets import audit
from anomaly_assets.core.audit import run_actor
from anomaly_assets.version import code_version
from anomaly_assets.core.baselines import fit_baselines
from anomaly_assets.core.cohorts import CohortStatsAccumulator
from anomaly_assets import reports
from anomaly_assets.core.detector import DetectorConfig, fit_chunks, fitting_sample, train_window
from anomaly_assets.core.training_window import TrainingWindow
from anomaly_assets.defs.features.assets import feature_spec
from anomaly_assets.defs.partitions import daily_partitions, markdown_preview, training_window
from anomaly_assets.resources import InventorySource, MlflowModelRegistry, ResultsStore, TelemetrySource
from anomaly_assets.resources.parquet_io import DeviceChunks
from anomaly_assets.resources.registry_client import CHAMPION

TRAINING = dict(
    partitions_def=daily_partitions,
    group_name="training",
    owners=["team:fleet-analytics"],
    # Each training partition is its own model: backfilling training runs one partition per run.
    backfill_policy=dg.BackfillPolicy.multi_run(1),
)
TRAINING_WINDOW_IN = {"device_features": dg.AssetIn(partition_mapping=training_window)}


def window_chunks(device_features: DeviceChunks) -> TrainingWindow:
    """The window's partitions read a chunk of whole devices at a time, every day of a device in
    its chunk: chunks of fewer devices than one day's, so a chunk holds about as many rows."""
    per_chunk = max(1, device_features.devices_per_chunk // max(len(device_features.paths), 1))
    chunks = device_features.with_options(devices_per_chunk=per_chunk)
    chunks.boundaries()  # read once, shared by every pass
    days_per_file = chunks.days_per_file()

    def read(columns, days):
        # A pass that needs only some days reads only the partitions holding them.
        wanted = set(days) if days is not None else None
        paths = [p for p, held in zip(chunks.paths, days_per_file) if wanted is None or held & wanted]
        return DeviceChunks(paths, per_chunk, columns).with_boundaries(chunks.boundaries())

    return TrainingWindow(read, np.array(sorted(set().union(*days_per_file))))


def _window_metadata(window: TrainingWindow, device_features: DeviceChunks) -> dict:
    days = [pd.Timestamp(day).strftime("%Y-%m-%d") for day in window.days]
    return {"training_days": dg.MetadataValue.json(days), "training_rows": sum(device_features.rows_per_file())}


class TrainingSliceConfig(dg.Config):
    """How the training window is cut and sampled: the same values as anomaly_detector's run config."""

    validation_days: int = DetectorConfig.validation_days
    holdout_days: int = DetectorConfig.holdout_days
    validation_share: float = DetectorConfig.validation_share
    holdout_share: float = DetectorConfig.holdout_share
    # Above this many fitting rows, baselines and detectors see a sample stratified by cohort and day.
    sample_rows: int = DetectorConfig.sample_rows
    random_state: int = DetectorConfig.random_state

    def detector_config(self) -> DetectorConfig:
        return DetectorConfig(**self.model_dump())


@dg.asset(**TRAINING, kinds={"pandas", "parquet"}, code_version=code_version(), ins=TRAINING_WINDOW_IN)
def cohort_stats(
    config: TrainingSliceConfig,
    device_features: DeviceChunks,
    telemetry_source: TelemetrySource,
    inventory_source: InventorySource,
) -> dg.Output[pd.DataFrame]:
    """Mean and spread per (cohort, hour of day, metric) over every row of the training window's
    fitting slice, added up a chunk of devices at a time (exact)."""
    spec = feature_spec(telemetry_source, inventory_source)
    window = window_chunks(device_features)
    accumulator = CohortStatsAccumulator(spec.metrics, spec.cohort_columns)
    fit_rows = 0
    for rows in fit_chunks(window, config.detector_config(), ["device_id", "timestamp", *spec.cohort_columns, *spec.metrics]):
        accumulator.add(rows)
        fit_rows += len(rows)
    stats = accumulator.result()
    return dg.Output(
        stats,
        metadata={
            **_window_metadata(window, device_features),
            "fit_rows": fit_rows,
            "dagster/row_count": len(stats),
            "cohorts": int(stats["cohort"].nunique()),
            "preview": markdown_preview(stats),
        },
    )


@dg.asset(**TRAINING, kinds={"pandas", "parquet"}, code_version=code_version(), ins=TRAINING_WINDOW_IN)
def baselines(
    config: TrainingSliceConfig,
    device_features: DeviceChunks,
    telemetry_source: TelemetrySource,
    inventory_source: InventorySource,
) -> dg.Output[pd.DataFrame]:
    """Per-cohort p01/p50/p99 of every metric over the training window's fitting slice: exact up
    to ``sample_rows`` fitting rows, above it from the detectors' sample stratified by cohort and
    day (README "Training at fleet scale" gives the error)."""
    spec = feature_spec(telemetry_source, inventory_source)
    window = window_chunks(device_features)
    columns = ["device_id", "timestamp", *spec.cohort_columns, *spec.metrics]
    rows = fitting_sample(window, spec.cohort_columns, config.detector_config(), columns)
    table = fit_baselines(rows, spec.metrics, spec.cohort_columns)
    return dg.Output(
        table,
        metadata={
            **_window_metadata(window, device_features),
            "sample_rows": len(rows),
            "dagster/row_count": len(table),
            "preview": markdown_preview(table),
        },
    )


DAGSTER_UI_URL = os.environ.get("DAGSTER_UI_URL", "http://127.0.0.1:3000").rstrip("/")


def _training_figures(model, validation, label_columns):
    """Pictures of the held-out slice (the validation slice without one; at most
    ``train_window``'s report rows of it): score distribution, ROC/PR curves, feature
    contributions."""
    scored = model.score(validation)
    label = next((c for c in label_columns if c.startswith("is_")), None)
    labels = validation[label].to_numpy(dtype=bool) if label in validation else None
    contributions = reports.feature_contributions(scored)
    figures = {
        "score_distribution": reports.score_distribution(scored["score"].to_numpy(), model.threshold, labels),
        "feature_contributions": reports.feature_contribution_chart(contributions),
    }
    if labels is not None and 0 < labels.sum() < len(labels):
        figures["roc_pr_curves"] = reports.roc_and_pr_curves(scored["score"].to_numpy(), labels)
    return figures, contributions


class DetectorTrainingConfig(TrainingSliceConfig):
    n_estimators: int = DetectorConfig.n_estimators
    max_samples: int = DetectorConfig.max_samples
    members: list[str] = list(DetectorConfig.members)
    # Alert events (flagged rows merged when close) per device per day on the validation slice.
    alert_budget: float = DetectorConfig.alert_budget
    event_merge_samples: int = DetectorConfig.event_merge_samples
    # Devices whose validation and held-out rows choose the threshold (a uniform sample above it).
    evaluation_devices: int = DetectorConfig.evaluation_devices

    def detector_config(self) -> DetectorConfig:
        return DetectorConfig(**{**self.model_dump(), "members": tuple(self.members)})


@dg.asset(
    **TRAINING,
    kinds={"scikitlearn", "mlflow"},
    code_version=code_version(),
    ins=TRAINING_WINDOW_IN,
    description="Ensemble (IsolationForest, PCA reconstruction, per-device robust z) fitted on the window's fitting "
    "slice, threshold on the validation day, quality on the held-out day; registered in MLflow with everything "
    "scoring needs.",
)
def anomaly_detector(
    context: dg.AssetExecutionContext,
    config: DetectorTrainingConfig,
    device_features: DeviceChunks,
    cohort_stats: pd.DataFrame,
    baselines: pd.DataFrame,
    telemetry_source: TelemetrySource,
    inventory_source: InventorySource,
    model_registry: MlflowModelRegistry,
    results_store: ResultsStore,
) -> dg.MaterializeResult:
    spec = feature_spec(telemetry_source, inventory_source)
    detector_config = config.detector_config()
    training = window_chunks(device_features)
    trained = train_window(training, cohort_stats, baselines, spec, detector_config)
    model, metrics = trained.model, trained.metrics
    window = _window_metadata(training, device_features)
    days = window["training_days"].value
    tags = {
        "training_window": f"{days[0]}..{days[-1]}",
        "source_partitions": ",".join(days),
        "feature_spec_hash": spec.hash,
        "code_version": context.assets_def.code_versions_by_key[context.asset_key] or "",
        "dagster_run_id": context.run.run_id,
        "dagster_partition": context.partition_key,
    }
    figures, contributions = _training_figures(model, trained.report_rows, spec.label_columns)
    try:
        registered = model_registry.register(
            model,
            params={**dataclasses.asdict(detector_config), "feature_spec": spec.to_dict(), "features": len(model.feature_columns)},
            metrics=metrics,
            tags={**tags, "dagster_run_url": f"{DAGSTER_UI_URL}/runs/{context.run.run_id}"},
            tables={"cohort_stats": cohort_stats, "baselines": baselines, "feature_contributions": contributions},
            run_name=f"anomaly_detector {context.partition_key}",
            example_rows=trained.report_rows,  # the package's input example: one device's latest window
            figures=figures,
        )
    finally:
        reports.close(figures)
    context.log.info(f"registered {registered.name} version {registered.version} with aliases {registered.aliases}")
    if CHAMPION in registered.aliases:
        first = {"version": registered.version, "previous": "", "reason": "first trained version"}
        audit.record_champion_change(results_store, run_actor(context.run.run_id, context.run.tags), first, "champion.first")
    return dg.MaterializeResult(
        metadata={
            **window,
            "fit_rows": int(metrics["fit_rows"]),
            "sample_rows": int(metrics["sample_rows"]),
            "evaluated_devices": int(metrics["evaluated_devices"]),
            "model_name": registered.name,
            "model_version": registered.version,
            "mlflow_run_id": registered.run_id,
            "mlflow_run": dg.MetadataValue.url(model_registry.run_url(registered.experiment_id, registered.run_id)),
            "figures": dg.MetadataValue.md(
                "Logged to the MLflow run under `figures/`: "
                + ", ".join(f"`{name}.png`" for name in figures)
            ),
            "feature_contributions": markdown_preview(contributions.round(4), rows=10),
            "aliases": dg.MetadataValue.json(list(registered.aliases)),
            "threshold": float(model.threshold),
            # Named for the demo summary, which reads it: holdout metrics and threshold_slice_* ones.
            "validation_metrics": dg.MetadataValue.json({k: round(float(v), 4) for k, v in metrics.items()}),
            **{f"holdout_{k}": float(v) for k, v in metrics.items() if k in ("auc_roc", "auc_pr", "f1", "event_f1")},
        }
    )
