"""device_features: rolling statistics, deltas and time-of-day features per device."""


import dagster as dg
import pandas as pd

from anomaly_assets.version import code_version
from anomaly_assets.core.features import FeatureSpec
from anomaly_assets.core.inventory import inventory_cohort_columns
from anomaly_assets.defs.partitions import (
    daily_partitions,
    markdown_preview,
    partition_metadata,
    partition_window,
    previous_day_lookback,
)
from anomaly_assets.resources import InventorySource, TelemetrySource
from anomaly_assets.resources.chunk_workers import ChunkWorkers
from anomaly_assets.resources.chunk_tasks import chunk_features
from anomaly_assets.resources.parquet_io import ALLOW_MISSING_PARTITIONS, DeviceChunks, PartitionSpool


def feature_spec(telemetry_source: TelemetrySource, inventory_source: InventorySource) -> FeatureSpec:
    """The spec follows the source's contract and the inventory's cohort attributes (joined by
    validated_telemetry); the model stores the spec it was trained with."""
    contract = telemetry_source.contract()
    return FeatureSpec(
        metrics=contract.metrics,
        cohort_columns=inventory_cohort_columns(contract, inventory_source.cohort_attributes()),
        label_columns=telemetry_source.label_columns(),
    )


@dg.asset(
    partitions_def=daily_partitions,
    group_name="features",
    kinds={"pandas", "parquet"},
    owners=["team:fleet-analytics"],
    code_version=code_version(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={
        "validated_telemetry": dg.AssetIn(
            partition_mapping=previous_day_lookback, metadata={ALLOW_MISSING_PARTITIONS: True}
        )
    },
    description="Per-device rolling features; windows continue across midnight by reading the previous day.",
)
def device_features(
    context: dg.AssetExecutionContext,
    validated_telemetry: DeviceChunks,
    telemetry_source: TelemetrySource,
    inventory_source: InventorySource,
    chunk_workers: ChunkWorkers,
) -> dg.Output[PartitionSpool]:
    start, end = partition_window(context)
    spec = feature_spec(telemetry_source, inventory_source)
    days = list(pd.date_range(start, end, freq="D", inclusive="left"))
    spool = PartitionSpool(context.partition_keys)
    lookback_rows = 0
    # A chunk of whole devices at a time, spread over the run's workers: each device's lookback
    # rows come with its own; this process writes the chunks' features as they arrive, in order.
    shared = (validated_telemetry, spec, days, spool.keys, start)
    for tables, lookback in chunk_workers.map(chunk_features, shared, range(validated_telemetry.chunk_count())):
        lookback_rows += lookback
        for key, table in tables.items():
            spool.append_to(key, table)
    if not spool.rows:
        spool.discard()
        raise dg.Failure(description=f"validated_telemetry has no rows in [{start}, {end}) to build features from")
    preview_columns = ["device_id", "timestamp", *spec.device_feature_columns()[:4]]
    metadata = {
        key: {
            "dagster/row_count": spool.rows_by_key[key],
            "feature_spec_hash": spec.hash,
            "feature_columns": len(spec.device_feature_columns()),
            "preview": markdown_preview(spool.heads.get(key, pd.DataFrame(columns=preview_columns))[preview_columns]),
        }
        for key in spool.keys
    }
    context.log.info(f"built features for {spool.rows} rows with {lookback_rows} lookback rows")
    return dg.Output(spool, metadata=partition_metadata(context, metadata))
