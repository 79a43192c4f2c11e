"""retention_job: delete results older than their table's maximum age (in batches) and tag old,
non-champion model versions ``archived=true``; ``dry_run`` reports what it would do and changes
nothing. weekly_retention_schedule runs it for real every Sunday."""

import datetime as dt

import dagster as dg
import pandas as pd

from anomaly_assets import audit
from anomaly_assets.core.audit import run_actor
from anomaly_assets.core.retention import DEFAULT_MAX_AGE_DAYS, VersionInfo, cutoff, plan_archive, validate_ages
from anomaly_assets.resources import MlflowModelRegistry, ResultsStore
from anomaly_assets.resources.registry_client import CHAMPION
from anomaly_assets.resources.purge import RETENTION_TABLES, purge_older_than

ARCHIVED_TAG = "archived"


class RetentionConfig(dg.Config):
    dry_run: bool = True  # launching by hand only reports; the schedule sets False
    # maximum age in days per table; tables left out keep their default age
    max_age_days: dict[str, int] = dict(DEFAULT_MAX_AGE_DAYS)
    keep_last_versions: int = 5
    batch_size: int = 5000
    as_of: str | None = None  # ISO date the ages count back from; default: today (UTC)


class PurgeConfig(dg.Config):
    dry_run: bool
    max_age_days: dict[str, int]
    batch_size: int
    as_of: str | None = None


class ArchiveConfig(dg.Config):
    dry_run: bool
    keep_last_versions: int


def _as_of(value: str | None) -> dt.date:
    if value is None:
        return dt.datetime.now(dt.UTC).date()
    try:
        return dt.date.fromisoformat(value)
    except ValueError as error:
        raise dg.Failure(description=f"retention_job config as_of {value!r} is not an ISO date (yyyy-mm-dd)") from error


@dg.op(description="Delete (or, in a dry run, count) results older than each table's maximum age, in batches.")
def purge_old_results(context: dg.OpExecutionContext, config: PurgeConfig, results_store: ResultsStore) -> dict:
    ages = {**DEFAULT_MAX_AGE_DAYS, **config.max_age_days}
    try:
        validate_ages(ages, RETENTION_TABLES)
    except ValueError as error:
        raise dg.Failure(description=f"retention_job config: {error}") from error
    as_of = _as_of(config.as_of)
    results = [
        purge_older_than(results_store.engine, name, cutoff(as_of, age), config.batch_size, config.dry_run)
        for name, age in sorted(ages.items())
    ]
    table = pd.DataFrame([{**r.__dict__, "max_age_days": ages[r.table]} for r in results])
    verb = "would delete" if config.dry_run else "deleted"
    for r in results:
        count = r.matched if config.dry_run else r.deleted
        context.log.info(f"{r.table}: {verb} {count} rows of days before {r.cutoff} ({r.batches} batches)")
    context.add_output_metadata(
        {
            "dry_run": config.dry_run,
            "as_of": as_of.isoformat(),
            "rows_matched": int(table["matched"].sum()),
            "rows_deleted": int(table["deleted"].sum()),
            "report": dg.MetadataValue.md(table.drop(columns=["dry_run"]).to_markdown(index=False)),
        }
    )
    return {"dry_run": config.dry_run, "as_of": as_of.isoformat(), "tables": [r.__dict__ for r in results]}


@dg.op(description="Tag model versions older than the newest K that carry no alias (never champion) archived=true.")
def archive_model_versions(context: dg.OpExecutionContext, config: ArchiveConfig, model_registry: MlflowModelRegistry) -> dict:
    client = model_registry.client()
    name = model_registry.model_name
    found = client.search_model_versions(f"name = '{name}'")
    aliases: dict[str, list[str]] = {}
    if found:
        for alias, version in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
    versions = [
        VersionInfo(str(v.version), tuple(sorted(aliases.get(str(v.version), []))), (v.tags or {}).get(ARCHIVED_TAG) == "true")
        for v in found
    ]
    try:
        plan = plan_archive(versions, config.keep_last_versions, protected_alias=CHAMPION)
    except ValueError as error:
        raise dg.Failure(description=f"retention_job config: {error}") from error
    if not config.dry_run:
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        for version in plan.archive:
            model_registry.tag_version(version, {ARCHIVED_TAG: "true", "archived_at": stamp, "archived_by": f"retention_job run {context.run_id}"})
    report = {
        "dry_run": config.dry_run,
        "model_name": name,
        "champion": model_registry.alias_version(CHAMPION) if found else None,
        "archived" if not config.dry_run else "would_archive": plan.archive,
        "already_archived": plan.already_archived,
        "kept_recent": plan.kept_recent,
        "kept_aliased": plan.kept_aliased,
    }
    context.log.info(f"model versions of {name}: {report}")
    context.add_output_metadata({k: dg.MetadataValue.json(v) if isinstance(v, list) else v for k, v in report.items() if v is not None})
    return report


@dg.op(description="Record the run in the audit trail unless it was a dry run (which changes nothing).")
def audit_retention_run(context: dg.OpExecutionContext, purged: dict, archived: dict, results_store: ResultsStore) -> None:
    if purged["dry_run"]:
        return
    deleted = ", ".join(f"{t['table']} {t['deleted']:,}" for t in purged["tables"] if t["deleted"]) or "none"
    versions = ", ".join(archived.get("archived") or []) or "none"
    detail = f"deleted rows: {deleted} (days before the cut-offs, as of {purged['as_of']}); archived model versions: {versions}"
    source = "scheduled" if context.run.tags.get("dagster/schedule_name") else "manual"
    audit.record(results_store, run_actor(context.run_id, context.run.tags), "retention.run", "retention_job", detail, f"{source} retention run")


@dg.config_mapping
def _retention_run_config(config: RetentionConfig) -> dg.RunConfig:
    return dg.RunConfig(
        ops={
            "purge_old_results": PurgeConfig(
                dry_run=config.dry_run, max_age_days=config.max_age_days, batch_size=config.batch_size, as_of=config.as_of
            ),
            "archive_model_versions": ArchiveConfig(dry_run=config.dry_run, keep_last_versions=config.keep_last_versions),
        }
    )


@dg.job(
    config=_retention_run_config,
    description="Delete results older than each table's maximum age in batches, and tag old non-champion "
    "model versions archived=true (run config: dry_run, max_age_days, keep_last_versions, batch_size, as_of).",
)
def retention_job():
    audit_retention_run(purge_old_results(), archive_model_versions())


weekly_retention_schedule = dg.ScheduleDefinition(
    name="weekly_retention_schedule",
    job=retention_job,
    cron_schedule="30 3 * * 0",
    execution_timezone="UTC",
    run_config={"dry_run": False},
    description="Every Sunday 03:30 UTC: retention_job for real (not a dry run) with the default ages.",
)
