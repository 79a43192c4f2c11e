"""raw_telemetry and validated_telemetry: read the partition's window, validate it against the
telemetry contract with Great Expectations, quarantine the rows that break it.

``validated_telemetry`` reports one asset check per rule family (schema, keys, window,
uniqueness, ranges, counters) plus ``rows_accounted_for`` and the blocking
``bad_row_share_within_limit``. A broken schema or an empty day fails the asset, so nothing
downstream is built from it.
"""

import dataclasses

import dagster as dg
import pandas as pd

from anomaly_assets.version import code_version
from anomaly_assets.core.validation import (
    FAMILY_DESCRIPTIONS,
    RuleResult,
    SchemaError,
    TelemetryContract,
    ValidationResult,
)
from anomaly_assets.defs.partitions import (
    daily_partitions,
    days_in,
    markdown_preview,
    partition_check_results,
    partition_metadata,
    partition_window,
)
from anomaly_assets.core.inventory import contract_knowing
from anomaly_assets.resources import InventorySource, ResultsStore, TelemetrySource
from anomaly_assets.resources.chunk_workers import ChunkWorkers
from anomaly_assets.resources.chunk_tasks import validate_chunk
from anomaly_assets.resources.parquet_io import DeviceChunks, PartitionSpool, group_by_device
from anomaly_assets.resources.results_store import quarantined_telemetry

OWNERS = ["team:fleet-analytics"]
ASSET = "validated_telemetry"
# One asset check per rule family; only a broken schema blocks (besides the bad-row share).
FAMILY_CHECKS = {
    "schema": "schema_matches_contract",
    "keys": "keys_present",
    "window": "timestamps_in_partition_window",
    "uniqueness": "rows_unique",
    "ranges": "metrics_in_range",
    "counters": "counters_not_decreasing",
}
SAMPLE_ROWS = 5


@dg.asset(
    partitions_def=daily_partitions,
    group_name="ingestion",
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    code_version=code_version(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="One day of telemetry rows from the configured source, as delivered.",
)
def raw_telemetry(
    context: dg.AssetExecutionContext, telemetry_source: TelemetrySource, chunk_workers: ChunkWorkers
) -> dg.Output[PartitionSpool]:
    start, end = partition_window(context)
    spool = PartitionSpool(context.partition_keys)
    devices: dict[str, set] = {key: set() for key in spool.keys}
    mixed: list[str] = []
    # The source's parts as they stream in: a fleet's day is never in memory at once.
    for part in telemetry_source.read_window_chunks(start, end):
        # Parquet cannot store a column mixing numbers and text: keep such a column as text (values
        # unchanged as written), so the delivery is stored and validation reports the column's type.
        mixed += [c for c in part.columns if c not in mixed and (part[c].dtype == object and _mixed_types(part[c]))]
        part = part.assign(**{c: part[c].astype("str") for c in mixed if c in part and part[c].dtype != "str"})
        for key, rows in spool.split(group_by_device(part)):
            if "device_id" in rows:
                devices[key].update(rows["device_id"].dropna().unique())
            spool.append_to(key, rows)
        # Past one chunk of devices, the run's later steps will use its workers: they start now.
        chunk_workers.start_early(context, max(len(seen) for seen in devices.values()))
    metadata = {
        key: {
            "dagster/row_count": spool.rows_by_key[key],
            "devices": len(devices[key]),
            "source": telemetry_source.describe(),
            **({"mixed_type_columns_stored_as_text": dg.MetadataValue.json(mixed)} if mixed else {}),
            "preview": markdown_preview(spool.heads.get(key, pd.DataFrame())),
        }
        for key in spool.keys
    }
    return dg.Output(spool, metadata=partition_metadata(context, metadata))


def _mixed_types(values: pd.Series) -> bool:
    return len({type(v) for v in values.dropna()}) > 1


class ValidationConfig(dg.Config):
    allow_empty_partition: bool = False


@dg.asset(
    partitions_def=daily_partitions,
    group_name="ingestion",
    kinds={"pandas", "parquet", "great_expectations"},
    owners=OWNERS,
    code_version=code_version(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    output_required=False,  # an empty day that is allowed materializes nothing
    check_specs=[
        *(
            dg.AssetCheckSpec(
                name,
                asset=ASSET,
                partitions_def=daily_partitions,  # a check's result names its partition in the UI
                blocking=family == "schema",
                description=f"Contract rules '{family}': {FAMILY_DESCRIPTIONS[family]}. "
                + (
                    "Fails the run before features are built when the schema is broken."
                    if family == "schema"
                    else "Warns with the unexpected count and a sample; failing rows are quarantined."
                ),
            )
            for family, name in FAMILY_CHECKS.items()
        ),
        dg.AssetCheckSpec(
            "bad_row_share_within_limit",
            asset=ASSET,
            partitions_def=daily_partitions,
            blocking=True,
            description="Quarantined rows stay below the contract's share; above it, features are not built.",
        ),
        dg.AssetCheckSpec(
            "rows_accounted_for",
            asset=ASSET,
            partitions_def=daily_partitions,
            blocking=True,
            description="Persisted rows add up: raw_telemetry's parquet rows = validated rows written + the "
            "partition's rows in quarantined_telemetry.",
        ),
    ],
    description="Rows that pass the telemetry contract (anomaly_assets/contracts/telemetry_contract.yaml), checked "
    "with Great Expectations; failing rows go to the results table quarantined_telemetry with rule and reason. "
    "The device inventory's cohort attributes (ANOMALY_ASSETS_INVENTORY_COLUMNS) are joined onto the valid rows.",
)
def validated_telemetry(
    context: dg.AssetExecutionContext,
    config: ValidationConfig,
    raw_telemetry: DeviceChunks,
    device_inventory: pd.DataFrame,
    telemetry_source: TelemetrySource,
    inventory_source: InventorySource,
    results_store: ResultsStore,
    chunk_workers: ChunkWorkers,
):
    start, end = partition_window(context)
    # The inventory's cohort attributes are joined onto the valid rows; validation itself (what is
    # quarantined, and why) sees the telemetry as delivered.
    attributes = inventory_source.cohort_attributes()
    contract = contract_knowing(telemetry_source.contract(), attributes)
    source = telemetry_source.describe()
    if attributes and device_inventory.empty:
        context.log.warning(
            f"device_inventory holds no devices (see its metadata): {', '.join(attributes)} are 'unknown' for every device"
        )
    not_in_inventory: dict[str, int] = {}
    days = days_in(start, end)
    # One validation per partition day and chunk of devices (the contract's rules are per row or
    # per device, so a chunk of whole devices is validated exactly as the whole day would be).
    # Rows whose timestamp lies outside the run's window (or is unreadable) are validated with
    # the first day, where they are quarantined, never lost.
    day_starts = pd.DatetimeIndex(pd.to_datetime(days)).tz_localize("UTC")
    spool = PartitionSpool(context.partition_keys)
    parts: dict[str, list[ValidationResult]] = {}  # per day, each chunk's result without its valid rows
    broken: dict[str, SchemaError] = {}
    # Chunks spread over the run's workers, their valid rows written here in device order.
    shared = (raw_telemetry, contract, days, day_starts, start, end, attributes, device_inventory)
    validated_chunks = chunk_workers.map(validate_chunk, shared, range(raw_telemetry.chunk_count()))
    for validated in validated_chunks:
        for day in validated:
            if day.error is not None:
                broken.setdefault(day.day, day.error)
                continue
            if attributes:
                not_in_inventory[day.day] = not_in_inventory.get(day.day, 0) + day.devices_not_in_inventory
            spool.append_to(day.day, day.valid)
            parts.setdefault(day.day, []).append(day.result)
        if broken:  # the schema is the same in every chunk: the first broken one says it all
            validated_chunks.close()
            break
    results = {day: _merged_day(day_parts) for day, day_parts in parts.items()}

    if broken:
        spool.discard()
        yield from partition_check_results(context, {day: _schema_broken_check(error) for day, error in broken.items()})
        first_day, first_error = next(iter(broken.items()))
        raise dg.Failure(
            description=f"{source} delivered telemetry that breaks the contract's schema on {', '.join(broken)}; "
            f"nothing was validated or built. {first_day}: {first_error}",
            metadata={
                "failed_rules": dg.MetadataValue.json(
                    {day: [r.summary() for r in error.failed_rules] for day, error in broken.items()}
                ),
            },
        )

    empty = [day for day in days if day not in results]
    if empty and not config.allow_empty_partition:
        spool.discard()
        raise dg.Failure(
            description=f"{source} returned no rows for {', '.join(empty)} "
            f"(window [{start.isoformat()}, {end.isoformat()})). Nothing downstream is built for it. "
            "If an empty day is expected, materialize with the config "
            "{ops: {validated_telemetry: {config: {allow_empty_partition: true}}}}.",
            metadata={"source": source, "empty_partitions": dg.MetadataValue.json(empty)},
        )

    quarantined = (
        pd.concat([r.quarantined for r in results.values()], ignore_index=True)
        if results
        else pd.DataFrame(columns=["partition_date"])
    )
    results_store.replace_partitions(quarantined_telemetry, days, quarantined)
    # Accounting from what was persisted, not from the counts above: raw parquet rows against the
    # valid rows written and the quarantine rows now in the results database.
    raw_rows, valid_rows = dict(zip(days, raw_telemetry.rows_per_file(), strict=True)), spool.persisted_rows_by_key()
    accounting = {
        day: _accounting_check(raw_rows[day], valid_rows[day], results_store.count(quarantined_telemetry, [day]))
        for day in days
    }
    lost = {day: check.description for day, check in accounting.items() if not check.passed}
    if lost:
        spool.discard()
        yield from partition_check_results(context, accounting)
        raise dg.Failure(description="validated_telemetry: " + "; ".join(f"{day}: {why}" for day, why in lost.items()))

    if results:
        inventory = _inventory_metadata(inventory_source, attributes, device_inventory)
        per_day = {
            day: {
                **_validation_metadata(result, contract),
                "inventory": dg.MetadataValue.json(
                    {**inventory, **({"devices_not_in_inventory": not_in_inventory.get(day, 0)} if attributes else {})}
                ),
            }
            for day, result in results.items()
        }
        if len(days) == 1:
            yield dg.Output(spool, metadata=per_day[days[0]])
        else:
            for day, metadata in per_day.items():
                context.add_asset_metadata(metadata, partition_key=day)
            yield dg.Output(spool)
    else:
        spool.discard()
        context.log.warning(
            f"{source} returned no rows for {', '.join(empty)}; allow_empty_partition is set, so "
            "validated_telemetry is not materialized and nothing downstream runs"
        )

    # Each check's result per day, recorded under its partition (a range run included).
    of_day = {day: ({day: results[day]} if day in results else {}) for day in days}
    for family, name in FAMILY_CHECKS.items():
        yield from partition_check_results(context, {day: _family_check(name, family, of_day[day]) for day in days})
    yield from partition_check_results(
        context, {day: _bad_row_share_check(of_day[day], contract, [d for d in empty if d == day]) for day in days}
    )
    yield from partition_check_results(context, accounting)


def _inventory_metadata(inventory_source: InventorySource, attributes: tuple[str, ...], inventory: pd.DataFrame) -> dict:
    if not attributes:
        return {"joined": False, "source": inventory_source.describe()}
    return {"joined": True, "cohort_attributes": list(attributes), "inventory_devices": int(inventory["device_id"].nunique())}


def _merged_day(parts: list[ValidationResult]) -> ValidationResult:
    """One day's validation over all its chunks of devices (their valid rows are spooled)."""
    rules: dict[str, list[RuleResult]] = {}
    for part in parts:
        for rule in part.rule_results:
            rules.setdefault(rule.rule, []).append(rule)
    return dataclasses.replace(
        parts[0],
        valid_rows=sum(p.valid_rows for p in parts),
        quarantined=pd.concat([p.quarantined for p in parts], ignore_index=True) if len(parts) > 1 else parts[0].quarantined,
        rule_counts=_sum_counts(parts),
        rule_results=tuple(_merge(same) for same in rules.values()),
        unknown_columns=tuple(dict.fromkeys(c for p in parts for c in p.unknown_columns)),
        seconds=sum(p.seconds for p in parts),
    )


def _accounting_check(raw: int, valid: int, quarantined: int) -> dg.AssetCheckResult:
    accounted = raw == valid + quarantined
    return dg.AssetCheckResult(
        check_name="rows_accounted_for",
        passed=accounted,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"raw": raw, "valid": valid, "quarantined": quarantined},
        description=None if accounted else f"rows were lost: raw {raw} != valid {valid} + quarantined {quarantined}",
    )


def _schema_broken_check(error: SchemaError) -> dg.AssetCheckResult:
    failed = list(error.failed_rules)
    return dg.AssetCheckResult(
        check_name=FAMILY_CHECKS["schema"],
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(dict.fromkeys(r.message() for r in failed))[:2000],
        metadata={
            "failed_rules": dg.MetadataValue.json([r.summary() for r in failed]),
            "columns": dg.MetadataValue.json(sorted({c for r in failed for c in r.columns})),
        },
    )


def _family_check(name: str, family: str, results: dict[str, ValidationResult]) -> dg.AssetCheckResult:
    rules: dict[str, list[RuleResult]] = {}
    for result in results.values():
        for rule in result.family_results(family):
            rules.setdefault(rule.rule, []).append(rule)
    merged = [_merge(parts) for parts in rules.values()]
    failing = [r for r in merged if not r.success]
    sample = [dict(rule=r.rule, **s) for r in failing for s in r.sample][:SAMPLE_ROWS]
    return dg.AssetCheckResult(
        check_name=name,
        passed=not failing,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(r.message() for r in failing)[:2000] or None,
        metadata={
            "rules": len(merged),
            "unexpected_rows": sum(r.unexpected_count for r in merged),
            "quarantined_rows": sum(r.quarantined_count for r in merged),
            "by_rule": dg.MetadataValue.json({r.rule: r.summary() for r in merged}),
            "sample": dg.MetadataValue.md(pd.DataFrame(sample).to_markdown(index=False) if sample else "_none_"),
        },
    )


def _merge(parts: list[RuleResult]) -> RuleResult:
    """One rule's results over the days of a run."""
    first = parts[0]
    return RuleResult(
        rule=first.rule,
        family=first.family,
        expectation=first.expectation,
        columns=first.columns,
        description=first.description
        if all(p.description == first.description for p in parts)
        else f"{first.description.split(' in ')[0]} in its partition's day",
        success=all(p.success for p in parts),
        element_count=sum(p.element_count for p in parts),
        unexpected_count=sum(p.unexpected_count for p in parts),
        quarantined_count=sum(p.quarantined_count for p in parts),
        observed=first.observed,
        sample=tuple(s for p in parts for s in p.sample)[:SAMPLE_ROWS],
    )


def _bad_row_share_check(
    results: dict[str, ValidationResult], contract: TelemetryContract, empty: list[str]
) -> dg.AssetCheckResult:
    limit = contract.max_bad_row_share
    shares = {day: r.bad_row_share for day, r in results.items()}
    over = {day: share for day, share in shares.items() if share > limit}
    lines = []
    for day in over:
        result = results[day]
        top = sorted(result.rule_counts.items(), key=lambda kv: -kv[1])[:3]
        examples = []
        for rule, count in top:
            reasons = result.quarantined.loc[result.quarantined["rule"] == rule, "reason"].head(2).tolist()
            examples.append(f"{rule}: {count} rows (e.g. {'; '.join(reasons)})")
        lines.append(
            f"{day}: {len(result.quarantined)} of {result.raw_rows} rows ({shares[day]:.1%}) broke the contract, "
            f"limit {limit:.1%}: " + "; ".join(examples)
        )
    return dg.AssetCheckResult(
        check_name="bad_row_share_within_limit",
        passed=not over,
        metadata={
            "bad_row_share": max(shares.values(), default=0.0),
            "limit": limit,
            "by_partition": dg.MetadataValue.json({day: round(share, 6) for day, share in shares.items()}),
            "by_rule": dg.MetadataValue.json(_sum_counts(results.values())),
            **({"empty_partitions_allowed": dg.MetadataValue.json(empty)} if empty else {}),
        },
        description="\n".join(lines)[:4000] or None,
    )


def _sum_counts(results) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in results:
        for rule, count in result.rule_counts.items():
            counts[rule] = counts.get(rule, 0) + count
    return counts


def _validation_metadata(result: ValidationResult, contract: TelemetryContract) -> dict:
    quarantined = result.quarantined
    policy = result.unknown_column_policy
    return {
        "dagster/row_count": result.valid_rows,
        "raw_rows": result.raw_rows,
        "quarantined_rows": len(quarantined),
        "bad_row_share": round(result.bad_row_share, 6),
        "quarantine_by_rule": dg.MetadataValue.json(result.rule_counts),
        "quarantine_preview": markdown_preview(quarantined[["device_id", "timestamp", "rule", "reason"]]),
        "unknown_columns": dg.MetadataValue.json(list(result.unknown_columns)),
        "unknown_columns_policy": (
            "kept in validated_telemetry"
            if policy == "keep"
            else "dropped from validated_telemetry (still in raw_telemetry)"
        ),
        "contract": f"{contract.name} v{contract.version}",
        "validation_seconds": round(result.seconds, 3),
    }
