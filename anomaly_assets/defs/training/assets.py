"""cohort_stats, baselines and anomaly_detector, fitted on the training window ending with the
partition's day (the last ``training_days`` days), never on the days being scored."""


import dataclasses
import os

import dagster as dg
import pandas as pd

from anomaly_assets.version import code_version
from anomaly_assets.core.baselines import fit_baselines
from anomaly_assets.core.cohorts import fit_cohort_stats
from anomaly_assets import reports
from anomaly_assets.core.detector import DetectorConfig, split_by_time, train_detector
from anomaly_assets.defs.features.assets import feature_spec
from anomaly_assets.defs.partitions import daily_partitions, markdown_preview, training_window
from anomaly_assets.resources import MlflowModelRegistry, TelemetrySource

TRAINING = dict(
    partitions_def=daily_partitions,
    group_name="training",
    owners=["team:fleet-analytics"],
    # Each training partition is its own model: backfilling training runs one partition per run.
    backfill_policy=dg.BackfillPolicy.multi_run(1),
)
TRAINING_WINDOW_IN = {"device_features": dg.AssetIn(partition_mapping=training_window)}


def _window_metadata(features: pd.DataFrame) -> dict:
    days = features["timestamp"].dt.strftime("%Y-%m-%d").unique()
    return {"training_days": dg.MetadataValue.json(sorted(days)), "training_rows": len(features)}


@dg.asset(**TRAINING, kinds={"pandas", "parquet"}, code_version=code_version(), ins=TRAINING_WINDOW_IN)
def cohort_stats(device_features: pd.DataFrame, telemetry_source: TelemetrySource) -> dg.Output[pd.DataFrame]:
    """Mean and spread per (cohort, hour of day, metric) over the training window."""
    spec = feature_spec(telemetry_source)
    stats = fit_cohort_stats(device_features, spec.metrics, spec.cohort_columns)
    return dg.Output(
        stats,
        metadata={
            **_window_metadata(device_features),
            "dagster/row_count": len(stats),
            "cohorts": int(stats["cohort"].nunique()),
            "preview": markdown_preview(stats),
        },
    )


@dg.asset(**TRAINING, kinds={"pandas", "parquet"}, code_version=code_version(), ins=TRAINING_WINDOW_IN)
def baselines(device_features: pd.DataFrame, telemetry_source: TelemetrySource) -> dg.Output[pd.DataFrame]:
    """Per-cohort p01/p50/p99 of every metric over the training window."""
    spec = feature_spec(telemetry_source)
    table = fit_baselines(device_features, spec.metrics, spec.cohort_columns)
    return dg.Output(
        table,
        metadata={**_window_metadata(device_features), "dagster/row_count": len(table), "preview": markdown_preview(table)},
    )


DAGSTER_UI_URL = os.environ.get("DAGSTER_UI_URL", "http://127.0.0.1:3000").rstrip("/")


def _training_figures(model, device_features, detector_config, label_columns):
    """Pictures of the validation slice: score distribution, ROC/PR curves, feature contributions."""
    _, validation = split_by_time(device_features, detector_config.validation_days)
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


class DetectorTrainingConfig(dg.Config):
    n_estimators: int = DetectorConfig.n_estimators
    max_samples: int = DetectorConfig.max_samples
    validation_days: int = DetectorConfig.validation_days
    target_alert_rate: float = DetectorConfig.target_alert_rate
    random_state: int = DetectorConfig.random_state


@dg.asset(
    **TRAINING,
    kinds={"scikitlearn", "mlflow"},
    code_version=code_version(),
    ins=TRAINING_WINDOW_IN,
    description="IsolationForest on features plus cohort z-scores, registered in MLflow with everything scoring needs.",
)
def anomaly_detector(
    context: dg.AssetExecutionContext,
    config: DetectorTrainingConfig,
    device_features: pd.DataFrame,
    cohort_stats: pd.DataFrame,
    baselines: pd.DataFrame,
    telemetry_source: TelemetrySource,
    model_registry: MlflowModelRegistry,
) -> dg.MaterializeResult:
    spec = feature_spec(telemetry_source)
    detector_config = DetectorConfig(**config.model_dump())
    model, metrics = train_detector(device_features, cohort_stats, baselines, spec, detector_config)
    window = _window_metadata(device_features)
    days = window["training_days"].value
    tags = {
        "training_window": f"{days[0]}..{days[-1]}",
        "source_partitions": ",".join(days),
        "feature_spec_hash": spec.hash,
        "code_version": context.assets_def.code_versions_by_key[context.asset_key] or "",
        "dagster_run_id": context.run.run_id,
        "dagster_partition": context.partition_key,
    }
    figures, contributions = _training_figures(model, device_features, detector_config, spec.label_columns)
    try:
        registered = model_registry.register(
            model,
            params={**dataclasses.asdict(detector_config), "feature_spec": spec.to_dict(), "features": len(model.feature_columns)},
            metrics=metrics,
            tags={**tags, "dagster_run_url": f"{DAGSTER_UI_URL}/runs/{context.run.run_id}"},
            tables={"cohort_stats": cohort_stats, "baselines": baselines, "feature_contributions": contributions},
            run_name=f"anomaly_detector {context.partition_key}",
            example_rows=device_features,  # the package's input example: one device's latest window
            figures=figures,
        )
    finally:
        reports.close(figures)
    context.log.info(f"registered {registered.name} version {registered.version} with aliases {registered.aliases}")
    return dg.MaterializeResult(
        metadata={
            **window,
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
            "validation_metrics": dg.MetadataValue.json({k: round(float(v), 4) for k, v in metrics.items()}),
            **{f"validation_{k}": float(v) for k, v in metrics.items() if k in ("auc_roc", "auc_pr", "f1")},
        }
    )
