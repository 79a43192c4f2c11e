"""device_incidents (anomalous rows grouped into device and cohort incidents) and alert_deliveries
(incidents sent to the configured channels, once per incident and channel)."""

import dataclasses

import dagster as dg

from anomaly_assets import audit
from anomaly_assets.core.audit import run_actor
from anomaly_assets.version import code_version
from anomaly_assets.core.alerts import ChannelConfigError
from anomaly_assets.core.incident_days import IncidentDays
from anomaly_assets.core.incident_rules import IncidentRules
from anomaly_assets.defs.partitions import daily_partitions, days_in, markdown_preview, partition_check_results, partition_window
from anomaly_assets.explorer import links
from anomaly_assets.resources import ResultsStore
from anomaly_assets.resources import incident_store
from anomaly_assets.resources.alert_router import AlertRouter
from anomaly_assets.resources.parquet_io import DeviceChunks

INCIDENT_PREVIEW = ["kind", "device_id", "cohort", "status", "severity_level", "started_at", "anomalous_samples", "devices", "top_features"]
_DEFAULT_RULES = IncidentRules()

# Incidents follow each scored partition, and deliveries follow incidents: Dagster's declarative
# automation (eager, for every partition, not only the latest day) instead of a hand-written
# sensor. device_incidents waits for its day's scores, not for its own previous day (a first day,
# or a gap, starts fresh with a warning).
AFTER_UPSTREAM = dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
INCIDENTS_AFTER_SCORING = AFTER_UPSTREAM.allow(dg.AssetSelection.assets("scored_anomalies"))


class IncidentConfig(dg.Config):
    """Hysteresis, cooldown, severity levels and the cohort rule (defaults: 5-minute samples)."""

    open_k: int = _DEFAULT_RULES.open_k
    open_n: int = _DEFAULT_RULES.open_n
    close_m: int = _DEFAULT_RULES.close_m
    cooldown_minutes: float = _DEFAULT_RULES.cooldown_minutes
    stale_after_minutes: float = _DEFAULT_RULES.stale_after_minutes
    medium_at: float = _DEFAULT_RULES.medium_at
    high_at: float = _DEFAULT_RULES.high_at
    critical_at: float = _DEFAULT_RULES.critical_at
    cohort_bucket_minutes: int = _DEFAULT_RULES.cohort_bucket_minutes
    cohort_min_share: float = _DEFAULT_RULES.cohort_min_share
    cohort_min_flagged_devices: int = _DEFAULT_RULES.cohort_min_flagged_devices
    cohort_min_devices: int = _DEFAULT_RULES.cohort_min_devices
    cohort_min_device_samples: int = _DEFAULT_RULES.cohort_min_device_samples
    cohort_close_after_buckets: int = _DEFAULT_RULES.cohort_close_after_buckets

    def rules(self) -> IncidentRules:
        try:
            return IncidentRules(**self.model_dump())
        except ValueError as error:
            raise dg.Failure(description=f"device_incidents run config: {error}") from error


@dg.asset(
    partitions_def=daily_partitions,
    group_name="alerting",
    kinds={"pandas", "sql"},
    owners=["team:fleet-analytics"],
    code_version=code_version(),
    # A day continues from the state the day before left (open incidents, hysteresis, cooldowns):
    # declared, so the UI shows later days stale after an earlier one changes and runs them in order.
    deps=[dg.AssetDep("device_incidents", partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1))],
    automation_condition=INCIDENTS_AFTER_SCORING,
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="Anomalous rows grouped into device incidents (hysteresis, cooldown) and cohort incidents; "
    "stable ids, upserted in the 'incidents' table; incidents open at midnight continue the next day.",
)
def device_incidents(
    context: dg.AssetExecutionContext,
    config: IncidentConfig,
    scored_anomalies: DeviceChunks,
    results_store: ResultsStore,
) -> dg.MaterializeResult:
    rules = config.rules()
    start, end = partition_window(context)
    days = days_in(start, end)
    first_partition = daily_partitions.get_first_partition_key()
    previous = incident_store.previous_day(days[0])
    processed, states = incident_store.load_state(results_store, previous)
    if not processed and days[0] != first_partition:
        context.log.warning(
            f"device_incidents {previous} has not been processed: incidents of {days[0]} start without "
            "the previous day's open incidents and hysteresis windows"
        )
    # A chunk of devices at a time, each carried through the run's days in order; cohort incidents
    # once every chunk's counts are in (anomaly_assets.core.incident_days).
    tracker = IncidentDays(days, states, rules)
    for chunk in scored_anomalies:
        tracker.add(chunk)
    metadata_by_day = {}
    explorer = links.explorer_url()
    for position, (day, result) in enumerate(tracker.results().items()):
        written = incident_store.write_day(results_store, day, result, context.run.run_id)
        incidents = result.incidents
        metadata_by_day[day] = {
            "dagster/row_count": len(incidents),
            "device_incidents": int((incidents["kind"] == "device").sum()) if len(incidents) else 0,
            "cohort_incidents": int((incidents["kind"] == "cohort").sum()) if len(incidents) else 0,
            "opened": int((incidents["first_partition"] == day).sum()) if len(incidents) else 0,
            "continued_from_previous_day": tracker.open_entering(day),
            "open_at_end_of_day": sum(1 for s in result.states.values() if s.get("open")),
            "attached_to_cohort_incidents": int(incidents["cohort_incident_id"].notna().sum()) if len(incidents) else 0,
            "cooldown_suppressed_samples": result.suppressed_samples,
            "previous_day_state": "loaded" if processed or position else "missing (started fresh)",
            "stale_incidents_deleted": written["stale_deleted"],
            "rules": dg.MetadataValue.json(dataclasses.asdict(rules)),
            **({"explorer": dg.MetadataValue.url(links.incidents_page(explorer, day))} if explorer else {}),
            "preview": markdown_preview(
                incidents.sort_values("max_severity", ascending=False)[INCIDENT_PREVIEW] if len(incidents) else incidents, rows=10
            ),
        }
        context.log.info(f"{day}: {len(incidents)} incidents touched, {written}")
    if len(days) == 1:
        return dg.MaterializeResult(metadata=metadata_by_day[days[0]])
    for day, metadata in metadata_by_day.items():
        context.add_asset_metadata(metadata, partition_key=day)
    return dg.MaterializeResult()


@dg.asset(
    partitions_def=daily_partitions,
    group_name="alerting",
    kinds={"sql"},
    owners=["team:fleet-analytics"],
    code_version=code_version(),
    deps=[device_incidents],
    automation_condition=AFTER_UPSTREAM,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        dg.AssetCheckSpec(
            "no_failed_deliveries",
            asset="alert_deliveries",
            partitions_def=daily_partitions,  # a check's result names its partition in the UI
            description="Every incident reached every channel that should receive it (failed ones are retried next run).",
        )
    ],
    description="Incidents of the partition sent to the alert channels of ANOMALY_ASSETS_ALERT_CHANNELS "
    "(webhook, Slack, email), once per (incident, channel); failed deliveries of earlier runs are retried.",
)
def alert_deliveries(context: dg.AssetExecutionContext, results_store: ResultsStore, alert_router: AlertRouter):
    start, end = partition_window(context)
    days = days_in(start, end)
    try:
        channels = alert_router.channel_configs()
    except ChannelConfigError as error:
        raise dg.Failure(description=str(error)) from error
    if audit.record_channels_if_changed(results_store, run_actor(context.run.run_id, context.run.tags), channels):
        context.log.info("the alert channels configuration changed since the last run: recorded in the audit trail")

    # The delivery log's state after this run, reported on each day of the run (failed deliveries
    # of any day are retried by the next run).
    def on_each_day(result: dg.AssetCheckResult):
        return partition_check_results(context, dict.fromkeys(days, result))

    if not channels:
        yield dg.MaterializeResult(metadata={"status": "no channels configured", "channels": 0})
        yield from on_each_day(dg.AssetCheckResult(check_name="no_failed_deliveries", passed=True, metadata={"status": "no channels configured"}))
        return
    candidates = incident_store.delivery_candidates(results_store, days)
    report = alert_router.deliver(results_store.engine, candidates, log=context.log.warning)
    failed = incident_store.failed_deliveries(results_store)
    failed = failed.loc[failed["channel"].isin([c.name for c in channels])]  # channels still configured
    table = report.table()
    yield dg.MaterializeResult(
        metadata={
            "status": "delivered" if report.total("failed") == 0 else "some deliveries failed (retried next run)",
            "channels": len(channels),
            "candidate_incidents": len(candidates),
            "delivered": report.total("delivered"),
            "digested": report.total("digested"),
            "digests_sent": report.total("digests_sent"),
            "suppressed_by_cohort_incident": report.total("suppressed"),
            "failed": report.total("failed"),
            "already_done": report.total("already_done"),
            "per_channel": dg.MetadataValue.md(table.to_markdown(index=False)),
            "dagster_link": alert_router.asset_url(),
        }
    )
    yield from on_each_day(
        dg.AssetCheckResult(
            check_name="no_failed_deliveries",
            passed=failed.empty,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"failed_deliveries": len(failed), "failures": markdown_preview(failed, rows=20)},
        )
    )


alerting_job = dg.define_asset_job(
    "alerting_job",
    selection=dg.AssetSelection.assets(device_incidents, alert_deliveries),
    partitions_def=daily_partitions,
    description="Group a day's scored anomalies into incidents and send them to the alert channels.",
)



alerting_automation_sensor = dg.AutomationConditionSensorDefinition(
    "alerting_automation_sensor",
    target=dg.AssetSelection.assets("device_incidents", "alert_deliveries"),
    minimum_interval_seconds=30,
    description="Materializes device_incidents for each day whose scored_anomalies changed, then alert_deliveries.",
)
