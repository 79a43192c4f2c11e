"""Daily partitions and the time-window helpers every partitioned asset uses."""

from __future__ import annotations

import warnings

import dagster as dg
import pandas as pd
# Not exported by dagster; the pinned version records a check's target materialization with it.
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData

from anomaly_assets.settings import Settings

# Single-run backfill policies and optional upstream partitions are deliberate choices here.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
# So are partitioned check specs (a check's result names its partition); dagster is pinned exactly.
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)

SETTINGS = Settings.from_env()
daily_partitions = dg.DailyPartitionsDefinition(start_date=SETTINGS.start_date.isoformat(), timezone="UTC")

# device_features of day D read day D-1 too, so rolling windows continue across midnight.
previous_day_lookback = dg.TimeWindowPartitionMapping(
    start_offset=-1, end_offset=0, allow_nonexistent_upstream_partitions=True
)
# Training partition D is fitted on the training_days days ending with D.
training_window = dg.TimeWindowPartitionMapping(
    start_offset=-(SETTINGS.training_days - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
)


def partition_window(context: dg.AssetExecutionContext) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of the run's partitions, which span several days in a single-run backfill."""
    window = context.partition_time_window
    return pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")


def days_in(start: pd.Timestamp, end: pd.Timestamp) -> list[str]:
    return [d.strftime("%Y-%m-%d") for d in pd.date_range(start, end, freq="D", inclusive="left")]


def markdown_preview(frame: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    if frame.empty:
        return dg.MetadataValue.md("_no rows_")
    head = frame.head(rows)
    # A '|' inside a value (cohort keys like Zebra|TC52|13) would split the markdown cell.
    escaped = head.apply(lambda c: c.astype("str").str.replace("|", r"\|", regex=False) if c.dtype == object or pd.api.types.is_string_dtype(c) else c)
    return dg.MetadataValue.md(escaped.to_markdown(index=False))


def partition_metadata(
    context: dg.AssetExecutionContext, by_partition: dict[str, dict], asset_key: dg.AssetKey | str | None = None
) -> dict:
    """Each partition's own metadata (figures accumulated over the chunks that built it): returned
    for the Output of one partition; for a range (a single-run backfill) attached to each
    partition directly, and nothing is returned. A multi-asset names the asset (``asset_key``)."""
    keys = context.partition_keys
    if len(keys) == 1:
        return by_partition[keys[0]]
    for key in keys:
        context.add_asset_metadata(by_partition[key], partition_key=key, **({"asset_key": asset_key} if asset_key else {}))
    return {}


def partition_check_results(context: dg.AssetExecutionContext, by_partition: dict[str, dg.AssetCheckResult]):
    """One check's results, one per partition of the run, each recorded under its partition.

    An AssetCheckResult cannot name a partition: Dagster gives it the run's partition only when
    the run has a single partition key, and records it without one ("-" in the UI, and the
    partition's planned check shown as skipped) in a run over a range, even a range of one day (a
    single-run backfill, the demo's and the daily jobs' ranges). So each partition's result
    becomes an AssetCheckEvaluation naming it and targeting that partition's materialization, as
    Dagster records a single partition's; the check's output is emitted once."""
    if not by_partition:
        return
    first = next(iter(by_partition.values()))
    key = dg.AssetCheckKey(first.asset_key or context.asset_key, first.check_name)
    if key not in context.selected_asset_check_keys:
        return
    spec = context.assets_def.get_spec_for_check_key(key)
    yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))
    for partition, result in by_partition.items():
        yield dg.AssetCheckEvaluation(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=result.passed,
            metadata=result.metadata,
            target_materialization_data=_materialization_of(context, key.asset_key, partition),
            severity=result.severity,
            description=result.description,
            blocking=spec.blocking,
            partition=partition,
        )


def _materialization_of(context: dg.AssetExecutionContext, asset_key: dg.AssetKey, partition: str):
    """The partition's newest materialization (this run's, when it produced one), which the
    check's result is about; as Dagster records it for a single partition's check."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        run_id=record.run_id, storage_id=record.storage_id, timestamp=record.timestamp
    )
