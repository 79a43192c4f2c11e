"""raw_telemetry and validated_telemetry: read the partition's window, validate, quarantine."""


import dagster as dg
import pandas as pd

from anomaly_assets.core.validation import ValidationResult, validate_telemetry
from anomaly_assets.defs.partitions import (
    daily_partitions,
    days_in,
    markdown_preview,
    partition_metadata,
    partition_window,
)
from anomaly_assets.resources import ResultsStore, TelemetrySource
from anomaly_assets.resources.results_store import quarantined_telemetry

OWNERS = ["team:fleet-analytics"]


@dg.asset(
    partitions_def=daily_partitions,
    group_name="ingestion",
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    code_version="1",
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="One day of telemetry rows from the configured source, as delivered.",
)
def raw_telemetry(context: dg.AssetExecutionContext, telemetry_source: TelemetrySource) -> dg.Output[pd.DataFrame]:
    start, end = partition_window(context)
    frame = telemetry_source.read_window(start, end)
    describe = lambda rows: {  # noqa: E731
        "dagster/row_count": len(rows),
        "devices": int(rows["device_id"].nunique()) if "device_id" in rows else 0,
        "source": telemetry_source.describe(),
        "preview": markdown_preview(rows),
    }
    return dg.Output(frame, metadata=partition_metadata(context, frame, describe))


class ValidationConfig(dg.Config):
    allow_empty_partition: bool = False


@dg.asset(
    partitions_def=daily_partitions,
    group_name="ingestion",
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    code_version="1",
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        dg.AssetCheckSpec(
            "bad_row_share_within_limit",
            asset="validated_telemetry",
            blocking=True,
            description="Quarantined rows stay below the contract's share; above it, features are not built.",
        ),
        dg.AssetCheckSpec(
            "rows_accounted_for", asset="validated_telemetry", description="raw rows = valid rows + quarantined rows"
        ),
    ],
    description="Rows that pass the telemetry contract; failing rows go to quarantined_telemetry with their reason.",
)
def validated_telemetry(
    context: dg.AssetExecutionContext,
    config: ValidationConfig,
    raw_telemetry: pd.DataFrame,
    telemetry_source: TelemetrySource,
    results_store: ResultsStore,
):
    start, end = partition_window(context)
    if raw_telemetry.empty and not config.allow_empty_partition:
        raise dg.Failure(
            description=f"{telemetry_source.describe()} returned no rows for [{start}, {end}); "
            "set allow_empty_partition to accept an empty day"
        )
    contract = telemetry_source.contract()
    days = days_in(start, end)
    # One validation per partition day. Rows whose timestamp lies outside the run's window (or
    # is unreadable) are validated with the first day, where they are quarantined, never lost.
    day_starts = pd.DatetimeIndex(pd.to_datetime(days)).tz_localize("UTC")
    timestamps = pd.to_datetime(raw_telemetry.get("timestamp"), utc=True, errors="coerce")
    in_window = (timestamps >= start) & (timestamps < end)
    row_day = timestamps.dt.floor("D").where(in_window, day_starts[0])
    results = [
        validate_telemetry(raw_telemetry.loc[row_day == day], contract, day, day + pd.Timedelta(days=1))
        for day in day_starts
    ]
    valid = pd.concat([r.valid for r in results], ignore_index=True)
    quarantined = pd.concat([r.quarantined for r in results], ignore_index=True)
    results_store.replace_partitions(quarantined_telemetry, days, quarantined)

    rule_counts: dict[str, int] = {}
    for result in results:
        for rule, count in result.rule_counts.items():
            rule_counts[rule] = rule_counts.get(rule, 0) + count
    total = len(raw_telemetry)
    bad_share = len(quarantined) / total if total else 0.0
    per_day = {day: _validation_metadata(result) for day, result in zip(days, results, strict=True)}
    if len(days) == 1:
        yield dg.Output(valid, metadata=per_day[days[0]])
    else:
        for day, metadata in per_day.items():
            context.add_asset_metadata(metadata, partition_key=day)
        yield dg.Output(valid)
    yield dg.AssetCheckResult(
        check_name="bad_row_share_within_limit",
        passed=bad_share <= contract.max_bad_row_share,
        metadata={"bad_row_share": bad_share, "limit": contract.max_bad_row_share, "by_rule": rule_counts},
        description=None
        if bad_share <= contract.max_bad_row_share
        else f"{len(quarantined)} of {total} rows ({bad_share:.1%}) broke the contract, limit "
        f"{contract.max_bad_row_share:.0%}: {rule_counts}",
    )
    yield dg.AssetCheckResult(
        check_name="rows_accounted_for",
        passed=total == len(valid) + len(quarantined),
        metadata={"raw": total, "valid": len(valid), "quarantined": len(quarantined)},
    )


def _validation_metadata(result: ValidationResult) -> dict:
    quarantined = result.quarantined
    return {
        "dagster/row_count": len(result.valid),
        "raw_rows": len(result.valid) + len(quarantined),
        "quarantined_rows": len(quarantined),
        "bad_row_share": round(result.bad_row_share, 6),
        "quarantine_by_rule": dg.MetadataValue.json(result.rule_counts),
        "quarantine_preview": markdown_preview(quarantined[["device_id", "timestamp", "rule", "reason"]]),
    }
