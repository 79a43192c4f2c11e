"""retention_job: dry run reports and deletes nothing; a real run deletes old rows in batches and
tags old, unaliased model versions archived=true (never the champion)."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from anomaly_assets.core.retention import VersionInfo, plan_archive
from anomaly_assets.defs.retention.jobs import retention_job, weekly_retention_schedule
from anomaly_assets.resources import MlflowModelRegistry, ResultsStore
from anomaly_assets.resources.results_store import alert_delivery_log, anomaly_events, quarantined_telemetry

AS_OF = "2026-11-28"  # anomaly_events 90 days -> before 2026-08-30; quarantine 30 -> 2026-10-29; log 180 -> 2026-06-01


def _events(day: str, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "partition_date": day,
            "device_id": [f"dev-{i}" for i in range(n)],
            "timestamp": pd.Timestamp(f"{day} 12:00", tz="UTC"),
            "cohort": "Acme|X1|1",
            "score": 0.7,
            "severity": 70.0,
            "top_feature_1": "cpu",
            "top_feature_2": "mem",
            "top_feature_3": None,
            "model_name": "fleet_anomaly_detector",
            "model_version": "1",
        }
    )


def _quarantine(day: str, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"partition_date": day, "device_id": "dev-1", "timestamp": f"{day}T00:00:00Z", "rule": "range", "reason": "out of range", "row_json": "{}"},
        index=range(n),
    )


@pytest.fixture
def store(tmp_path) -> ResultsStore:
    store = ResultsStore(url=f"sqlite:///{tmp_path / 'results.db'}")
    for day, n in (("2026-08-01", 25), ("2026-08-15", 25), ("2026-11-20", 25)):
        store.replace_partitions(anomaly_events, [day], _events(day, n))
    for day, n in (("2026-10-01", 10), ("2026-11-20", 5)):
        store.replace_partitions(quarantined_telemetry, [day], _quarantine(day, n))
    rows = [
        {"incident_id": f"inc-{day}-{i}", "channel": "ops", "status": "delivered", "partition_date": day, "attempts": 1}
        for day, n in (("2026-05-01", 3), ("2026-11-20", 2))
        for i in range(n)
    ]
    with store.engine.begin() as connection:
        connection.execute(alert_delivery_log.insert(), rows)
    return store


@pytest.fixture
def registry(tmp_path) -> MlflowModelRegistry:
    """Six registered versions (no artifacts needed): champion on v2, challenger on v6."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = MlflowModelRegistry(tracking_uri=uri, model_name="retention_test_model")
    client = registry.client()
    client.create_registered_model(registry.model_name)
    for i in range(6):
        client.create_model_version(registry.model_name, source=(tmp_path / f"model-{i}").as_uri())
    client.set_registered_model_alias(registry.model_name, "champion", "2")
    client.set_registered_model_alias(registry.model_name, "challenger", "6")
    return registry


def _run(store, registry, **config):
    result = retention_job.execute_in_process(
        run_config={"as_of": AS_OF, "keep_last_versions": 2, **config},
        resources={"results_store": store, "model_registry": registry},
    )
    assert result.success
    return result.output_for_node("purge_old_results"), result.output_for_node("archive_model_versions")


def _counts(store: ResultsStore) -> dict[str, int]:
    return {t.name: store.count(t) for t in (anomaly_events, quarantined_telemetry, alert_delivery_log)}


def _archived(registry: MlflowModelRegistry) -> set[str]:
    versions = registry.client().search_model_versions(f"name = '{registry.model_name}'")
    return {str(v.version) for v in versions if v.tags.get("archived") == "true"}


def test_dry_run_reports_and_changes_nothing_then_a_real_run_deletes_in_batches(store, registry):
    before = _counts(store)
    assert before == {"anomaly_events": 75, "quarantined_telemetry": 15, "alert_delivery_log": 5}

    purge, archive = _run(store, registry, dry_run=True, batch_size=7)
    by_table = {t["table"]: t for t in purge["tables"]}
    assert by_table["anomaly_events"]["matched"] == 50 and by_table["anomaly_events"]["cutoff"] == "2026-08-30"
    assert (by_table["anomaly_events"]["oldest_day"], by_table["anomaly_events"]["newest_day"]) == ("2026-08-01", "2026-08-15")
    assert by_table["quarantined_telemetry"]["matched"] == 10
    assert by_table["alert_delivery_log"]["matched"] == 3
    assert all(t["deleted"] == 0 and t["batches"] == 0 for t in purge["tables"])
    assert _counts(store) == before
    assert archive["would_archive"] == ["4", "3", "1"] and archive["kept_aliased"] == ["2"]
    assert _archived(registry) == set()

    purge, archive = _run(store, registry, dry_run=False, batch_size=7)
    by_table = {t["table"]: t for t in purge["tables"]}
    assert (by_table["anomaly_events"]["deleted"], by_table["anomaly_events"]["batches"]) == (50, 8)  # 7 x 7 + 1
    assert (by_table["quarantined_telemetry"]["deleted"], by_table["quarantined_telemetry"]["batches"]) == (10, 2)
    assert by_table["alert_delivery_log"]["deleted"] == 3
    assert _counts(store) == {"anomaly_events": 25, "quarantined_telemetry": 5, "alert_delivery_log": 2}
    remaining = store.read_frame("SELECT DISTINCT partition_date FROM anomaly_events")
    assert list(remaining["partition_date"]) == ["2026-11-20"]
    assert archive["archived"] == ["4", "3", "1"]
    assert _archived(registry) == {"1", "3", "4"}  # never the champion (2) nor the newest two
    assert registry.alias_version("champion") == "2"

    purge, archive = _run(store, registry, dry_run=False)  # nothing left to do
    assert all(t["matched"] == 0 for t in purge["tables"])
    assert archive["archived"] == [] and archive["already_archived"] == ["4", "3", "1"]


def test_per_table_ages_override_the_defaults_and_bad_config_is_named(store, registry):
    purge, _ = _run(store, registry, dry_run=True, max_age_days={"anomaly_events": 5})
    by_table = {t["table"]: t for t in purge["tables"]}
    assert by_table["anomaly_events"]["matched"] == 75 and by_table["quarantined_telemetry"]["matched"] == 10

    for ages, message in (
        ({"anomaly_event": 3}, r"unknown tables \['anomaly_event'\]; known tables: \['alert_delivery_log'"),
        ({"alert_delivery_log": 30, "incidents": 60}, r"alert_delivery_log \(30 days\) must be kept at least as long as incidents"),
    ):
        with pytest.raises(dg.Failure, match=message):
            retention_job.execute_in_process(
                run_config={"max_age_days": ages}, resources={"results_store": store, "model_registry": registry}
            )


def test_archive_plan_keeps_the_newest_and_every_aliased_version():
    versions = [VersionInfo(str(v), ("champion",) if v == 1 else ()) for v in range(1, 8)] + [VersionInfo("8", (), True)]
    plan = plan_archive(versions, keep_last=3)
    assert plan.kept_recent == ["8", "7", "6"] and plan.kept_aliased == ["1"]
    assert plan.archive == ["5", "4", "3", "2"]
    assert plan_archive(versions, keep_last=0).already_archived == ["8"]


def test_the_weekly_schedule_runs_for_real():
    [request] = weekly_retention_schedule.evaluate_tick(dg.build_schedule_context()).run_requests
    assert request.run_config == {"dry_run": False}
    assert weekly_retention_schedule.cron_schedule == "30 3 * * 0"
