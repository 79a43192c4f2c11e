"""device_features: rolling statistics, deltas and time-of-day features per device."""


import dagster as dg
import pandas as pd

from anomaly_assets.core.features import FeatureSpec, build_daily_features
from anomaly_assets.defs.partitions import (
    daily_partitions,
    markdown_preview,
    partition_metadata,
    partition_window,
    previous_day_lookback,
)
from anomaly_assets.resources import TelemetrySource
from anomaly_assets.resources.parquet_io import ALLOW_MISSING_PARTITIONS


def feature_spec(telemetry_source: TelemetrySource) -> FeatureSpec:
    """The spec follows the source's contract; the model stores the spec it was trained with."""
    contract = telemetry_source.contract()
    return FeatureSpec(
        metrics=contract.metrics, cohort_columns=contract.cohort_columns, label_columns=telemetry_source.label_columns()
    )


@dg.asset(
    partitions_def=daily_partitions,
    group_name="features",
    kinds={"pandas", "parquet"},
    owners=["team:fleet-analytics"],
    code_version="1",
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={
        "validated_telemetry": dg.AssetIn(
            partition_mapping=previous_day_lookback, metadata={ALLOW_MISSING_PARTITIONS: True}
        )
    },
    description="Per-device rolling features; windows continue across midnight by reading the previous day.",
)
def device_features(
    context: dg.AssetExecutionContext, validated_telemetry: pd.DataFrame, telemetry_source: TelemetrySource
) -> dg.Output[pd.DataFrame]:
    start, end = partition_window(context)
    if validated_telemetry.empty or not (validated_telemetry["timestamp"] >= start).any():
        raise dg.Failure(description=f"validated_telemetry has no rows in [{start}, {end}) to build features from")
    lookback_rows = int((validated_telemetry["timestamp"] < start).sum())
    spec = feature_spec(telemetry_source)
    features = build_daily_features(validated_telemetry, spec, list(pd.date_range(start, end, freq="D", inclusive="left")))
    describe = lambda rows: {  # noqa: E731
        "dagster/row_count": len(rows),
        "feature_spec_hash": spec.hash,
        "feature_columns": len(spec.device_feature_columns()),
        "preview": markdown_preview(rows[["device_id", "timestamp", *spec.device_feature_columns()[:4]]]),
    }
    context.log.info(f"built features for {len(features)} rows with {lookback_rows} lookback rows")
    return dg.Output(features, metadata=partition_metadata(context, features, describe))
