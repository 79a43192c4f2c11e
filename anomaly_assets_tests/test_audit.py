"""The audit trail: champion changes from the CLI (the OS user) and from the jobs (the run's
launcher), retention runs that change something, alert-channel changes without their secrets,
shown by `anomaly-assets audit` and the explorer's audit page. Versions are registered without
training (an empty artifact folder each), as in test_registry_cli."""

from __future__ import annotations

import json

import pytest

from anomaly_assets import audit
from anomaly_assets.cli import main
from anomaly_assets.core.alerts import ChannelConfig
from anomaly_assets.core.audit import LAUNCHED_BY_TAG, Actor, run_launcher
from anomaly_assets.defs.registry.assets import promote_model_job, rollback_model_job
from anomaly_assets.defs.retention.jobs import retention_job
from anomaly_assets.resources.results_store import ResultsStore
from anomaly_assets_tests.conftest import registry_with_three_versions


@pytest.fixture
def home(tmp_path, restore_environ):
    registry, settings = registry_with_three_versions(tmp_path)
    return {"registry": registry, "store": ResultsStore(url=settings.results_url)}


def test_cli_promotion_and_rollback_record_the_os_user(home, capsys, monkeypatch):
    monkeypatch.setenv("LOGNAME", "alice")  # getpass.getuser() reads LOGNAME first
    assert main(["model", "promote", "--version", "3", "--reason", "better on the October faults"]) == 0
    assert main(["model", "rollback", "--reason", "too many alerts"]) == 0
    capsys.readouterr()
    assert main(["audit", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["who"], r["via"], r["action"], r["detail"], r["reason"]) for r in rows] == [
        ("alice", "cli", "champion.promote", "version 1 -> 3", "better on the October faults"),
        ("alice", "cli", "champion.rollback", "version 3 -> 1", "too many alerts"),
    ]
    # The MLflow champion history names the same person.
    assert [e["actor"] for e in home["registry"].champion_history()[-2:]] == ["alice (cli)", "alice (cli)"]
    assert main(["audit"]) == 0
    text = capsys.readouterr().out
    assert "champion.rollback" in text and "alice via cli" in text and "why: too many alerts" in text


def test_jobs_record_the_runs_launcher(home):
    resources = {"model_registry": home["registry"], "results_store": home["store"]}
    promoted = promote_model_job.execute_in_process(
        resources=resources, tags={LAUNCHED_BY_TAG: "bob"},
        run_config={"ops": {"promote_model": {"config": {"version": "3", "reason": "gate was too strict"}}}},
    )  # fmt: skip
    rolled_back = rollback_model_job.execute_in_process(resources=resources, tags={"dagster/schedule_name": "nightly"})
    assert promoted.success and rolled_back.success
    rows = audit.entries(home["store"], action="champion")
    assert [(r["who"], r["via"], r["action"], r["detail"], r["run_id"]) for r in rows] == [
        ("bob", "dagster", "champion.promote", "version 1 -> 3", promoted.run_id),
        ("schedule nightly", "dagster", "champion.rollback", "version 3 -> 1", rolled_back.run_id),
    ]
    assert home["registry"].champion_history()[-2]["actor"] == f"bob (dagster run {promoted.run_id[:8]})"


def test_retention_is_recorded_only_when_it_changes_something(home):
    resources = {"model_registry": home["registry"], "results_store": home["store"]}
    assert retention_job.execute_in_process(resources=resources, tags={LAUNCHED_BY_TAG: "carol"}).success  # a dry run
    assert audit.entries(home["store"]) == []
    run = retention_job.execute_in_process(resources=resources, tags={LAUNCHED_BY_TAG: "carol"}, run_config={"dry_run": False})
    [row] = audit.entries(home["store"])
    assert (row["who"], row["action"], row["reason"], row["run_id"]) == ("carol", "retention.run", "manual retention run", run.run_id)
    assert row["detail"].startswith("deleted rows: none (days before the cut-offs") and "archived model versions: none" in row["detail"]


def test_alert_channel_changes_are_recorded_once_each_without_secrets(home):
    store, actor = home["store"], Actor("dave", "dagster", "run-1")
    assert audit.record_channels_if_changed(store, actor, []) is None  # nothing configured, nothing ever recorded
    secret = "https://hooks.example.com/services/T000/B000/s3cr3t-token"
    channels = [ChannelConfig(name="ops", type="webhook", url=secret, headers=(("X-Api-Key", "k3y-value"),))]
    assert audit.record_channels_if_changed(store, actor, channels) is not None
    assert audit.record_channels_if_changed(store, actor, channels) is None  # unchanged
    stricter = [ChannelConfig(name="ops", type="webhook", url=secret, headers=(("X-Api-Key", "k3y-value"),), min_severity="high")]
    assert audit.record_channels_if_changed(store, actor, stricter) is not None
    rows = audit.entries(store)
    assert [r["action"] for r in rows] == ["alert_channels.change"] * 2
    assert '"min_severity": "high"' in rows[1]["detail"] and "X-Api-Key" in rows[1]["detail"]
    assert not any(s in json.dumps(rows, default=str) for s in ("s3cr3t", "k3y-value", "hooks.example.com"))


def test_run_launcher_prefers_the_user_then_the_automation():
    assert run_launcher({LAUNCHED_BY_TAG: "erin", "dagster/schedule_name": "s"}) == "erin"
    assert run_launcher({"dagster/sensor_name": "drift_retraining_sensor"}) == "sensor drift_retraining_sensor"
    assert run_launcher({}).startswith("unknown launcher")


def test_explorer_audit_page_lists_the_trail_and_the_signed_in_user(home):
    from anomaly_assets.explorer.app import create_app

    audit.record_champion_change(home["store"], Actor("frank", "cli"), {"version": "3", "previous": "1", "action": "promote", "reason": "r"})
    client = create_app(home["store"], str(home["store"].url)).test_client()
    page = client.get("/audit", headers={"X-Forwarded-User": "grace"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "frank" in html and "version 1 -&gt; 3" in html and "signed in as grace" in html
    assert client.get("/audit?action=retention.run").get_data(as_text=True).count("frank") == 0
    assert client.get("/audit?action=nonsense").status_code == 400


def test_the_webserver_tags_every_kind_of_launch_with_the_proxys_user():
    from anomaly_assets.webserver import tag_launches

    launch = {"query": "mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {...}",
              "variables": {"executionParams": {"executionMetadata": {"tags": [{"key": LAUNCHED_BY_TAG, "value": "mallory"}]}}}}  # fmt: skip
    backfill = {"query": "mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {...}",
                "variables": {"backfillParams": {"partitionNames": ["2026-11-08"]}}}  # fmt: skip
    many = {"query": "mutation LaunchMultipleRuns($executionParamsList: [ExecutionParams!]!) {...}",
            "variables": {"executionParamsList": [{"selector": {}}, {"selector": {}}]}}  # fmt: skip
    reexecute = {"query": "mutation LaunchPipelineReexecution($reexecutionParams: ReexecutionParams) {...}",
                 "variables": {"reexecutionParams": {"parentRunId": "r", "strategy": "ALL_STEPS"}}}  # fmt: skip
    read = {"query": "query RunsRoot { runsOrError { __typename } }", "variables": {}}
    assert tag_launches([launch, backfill, many, reexecute], "alice") and not tag_launches(read, "alice")
    mine = {"key": LAUNCHED_BY_TAG, "value": "alice"}
    assert launch["variables"]["executionParams"]["executionMetadata"]["tags"] == [mine]  # the client's own value is replaced
    assert backfill["variables"]["backfillParams"]["tags"] == [mine]
    assert all(p["executionMetadata"]["tags"] == [mine] for p in many["variables"]["executionParamsList"])
    assert reexecute["variables"]["reexecutionParams"]["extraTags"] == [mine]
