"""Jobs over the asset graph: what the demo, the schedules and the UI launch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from anomaly_assets.defs.partitions import daily_partitions

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

# device_inventory (unpartitioned) is read again by every run, so new devices get their cohort attributes.
INGESTION_AND_FEATURES = dg.AssetSelection.assets("device_inventory", "raw_telemetry", "validated_telemetry", "device_features")

telemetry_job = dg.define_asset_job(
    "telemetry_job",
    selection=INGESTION_AND_FEATURES,
    partitions_def=daily_partitions,
    description="Read, validate and build features for a day (or a range, as one run).",
)
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("cohort_stats", "baselines", "anomaly_detector", "model_promotion"),
    partitions_def=daily_partitions,
    description="Fit cohort stats and baselines, train and register a detector on the window ending with the partition, then run the promotion gate.",
)


def scoring_job_for(executor: dg.ExecutorDefinition | None = None) -> UnresolvedAssetJobDefinition:
    """The daily scoring job; ``executor`` None leaves it to the code location's executor."""
    return dg.define_asset_job(
        "scoring_job",
        selection=INGESTION_AND_FEATURES | dg.AssetSelection.assets("scored_anomalies", "feature_drift"),
        partitions_def=daily_partitions,
        executor_def=executor,
        description="Everything from raw telemetry to scored anomalies and feature drift for a day, with the champion model.",
    )

