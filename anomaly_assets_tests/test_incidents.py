"""Incidents: hysteresis and cooldown on hand-built sequences, midnight, cohort incidents, and the
device_incidents asset's idempotent re-materialization."""

from __future__ import annotations

import pandas as pd
import pytest

from anomaly_assets.core.incident_hysteresis import detect_device_incidents
from anomaly_assets.core.incident_records import incident_id
from anomaly_assets.core.incident_rules import IncidentRules
from anomaly_assets.core.incidents import detect_incidents
from anomaly_assets.defs.alerting.assets import device_incidents
from anomaly_assets.resources import incident_store
from anomaly_assets.resources.results_store import incident_state, incidents
from anomaly_assets_tests.incident_helpers import SCORED as SCORED_SOURCE
from anomaly_assets_tests.incident_helpers import AlertingHarness, device_rows, scored, write_scored_partitions

RULES = IncidentRules(open_k=3, open_n=5, close_m=3, cooldown_minutes=30, stale_after_minutes=60)
T0 = pd.Timestamp("2026-11-08 10:00", tz="UTC")
INCIDENTS_ONLY = (device_incidents,)


def _run(flags: str, rules: IncidentRules = RULES, day_end: pd.Timestamp | None = None, start: str = "2026-11-08 10:00"):
    rows = device_rows("dev-1", "Acme|X1|1", start, flags)
    end = day_end if day_end is not None else rows["timestamp"].max() + pd.Timedelta(minutes=5)
    return detect_device_incidents(rows, {}, rules, "2026-11-08", end)


def _at(i: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=5 * i)


def test_opens_only_after_k_of_the_last_n_samples():
    none, states, _ = _run("1010001000100010")  # never 3 anomalies within 5 samples
    assert none.empty and states["dev-1"]["open"] is None  # the window (with its last anomaly) carries over

    found, states, _ = _run("0001011")
    [incident] = found.to_dict("records")
    assert incident["status"] == "open"
    assert incident["started_at"] == _at(3)  # the window's first anomaly, not the sample that tipped it
    assert incident["opened_at"] == _at(6)
    assert (incident["anomalous_samples"], incident["samples"]) == (3, 4)
    assert incident["incident_id"] == incident_id("device", "dev-1", _at(3))
    assert states["dev-1"]["open"]["incident_id"] == incident["incident_id"]


def test_closes_after_m_consecutive_normal_samples():
    # opens at #2; two normals are not enough (#5 is anomalous again); closes on the third normal in a row (#8)
    found, states, _ = _run("111001000" + "0000")
    [incident] = found.to_dict("records")
    assert incident["status"] == "closed" and incident["close_reason"] == "recovered"
    assert incident["ended_at"] == _at(8)
    assert incident["last_anomaly_at"] == _at(5)
    assert (incident["anomalous_samples"], incident["samples"]) == (4, 9)
    assert incident["severity_level"] == "medium" and incident["max_severity"] == 72.0
    assert incident["top_features"].split(", ")[0] == "cpu_util_pct__dev_1h"
    assert states["dev-1"]["cooldown_until"] == _at(8 + 6).isoformat()  # 30 min: carried to the next day


def test_cooldown_blocks_a_new_incident_until_it_ends():
    # closes at #5 -> cooldown until #11 (30 min); #6..#10 are suppressed; from #11 the window restarts
    found, states, suppressed = _run("111000" + "111111" + "11" + "000")
    assert len(found) == 2
    first, second = found.sort_values("started_at").to_dict("records")
    assert first["ended_at"] == _at(5)
    assert second["started_at"] == _at(11) and second["opened_at"] == _at(13)
    assert suppressed == 5
    assert first["incident_id"] != second["incident_id"]

    # without a cooldown the device reopens at once
    eager = IncidentRules(open_k=3, open_n=5, close_m=3, cooldown_minutes=0)
    again, _, suppressed = _run("111000" + "111", rules=eager)
    assert len(again) == 2 and suppressed == 0


def test_a_device_that_goes_silent_is_closed_as_no_data():
    found, states, _ = _run("111", day_end=pd.Timestamp("2026-11-09", tz="UTC"))
    [incident] = found.to_dict("records")
    assert incident["status"] == "closed" and incident["close_reason"] == "no_data"
    assert incident["ended_at"] == _at(2)
    assert states == {}


def _two_days(day1_flags: str, day2_flags: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    day1 = device_rows("dev-1", "Acme|X1|1", "2026-11-08 23:30", day1_flags)
    assert day1["timestamp"].max() < pd.Timestamp("2026-11-09", tz="UTC")
    day2 = device_rows("dev-1", "Acme|X1|1", "2026-11-09 00:00", day2_flags)
    return day1, day2


def test_an_incident_open_at_midnight_continues_the_next_day_with_the_same_id():
    day1, day2 = _two_days("000111", "1110000000")
    midnight, next_midnight = pd.Timestamp("2026-11-09", tz="UTC"), pd.Timestamp("2026-11-10", tz="UTC")
    result1 = detect_incidents(day1, {}, RULES, "2026-11-08", midnight)
    first = result1.incidents
    assert first.loc[0, "status"] == "open"
    result2 = detect_incidents(day2, result1.states, RULES, "2026-11-09", next_midnight)
    [continued] = result2.incidents.to_dict("records")
    assert continued["incident_id"] == first.loc[0, "incident_id"]
    assert (continued["first_partition"], continued["last_partition"]) == ("2026-11-08", "2026-11-09")
    assert continued["status"] == "closed" and continued["anomalous_samples"] == 6
    # the same rows in one go give the same incident
    [whole] = detect_incidents(pd.concat([day1, day2]), {}, RULES, "2026-11-08", next_midnight).incidents.to_dict("records")
    assert whole["incident_id"] == continued["incident_id"]
    assert (whole["anomalous_samples"], whole["samples"], whole["ended_at"]) == (6, continued["samples"], continued["ended_at"])
    # processing a day again yields the same ids (stable ids)
    again = detect_incidents(day2, result1.states, RULES, "2026-11-09", next_midnight).incidents
    assert list(again["incident_id"]) == [continued["incident_id"]]


def test_the_hysteresis_window_spans_midnight():
    day1, day2 = _two_days("000011", "1000")
    result1 = detect_incidents(day1, {}, RULES, "2026-11-08", pd.Timestamp("2026-11-09", tz="UTC"))
    assert result1.incidents.empty and result1.states[("device", "dev-1")]["window"]
    result2 = detect_incidents(day2, result1.states, RULES, "2026-11-09", pd.Timestamp("2026-11-10", tz="UTC"))
    [incident] = result2.incidents.to_dict("records")
    assert incident["started_at"] == pd.Timestamp("2026-11-08 23:50", tz="UTC")
    assert incident["first_partition"] == "2026-11-09"


def _cohort_day(start: str = "2026-11-08 10:00", hours: int = 2) -> pd.DataFrame:
    """Cohort X1: 4 of 5 devices fire together; cohort X2: 1 of 5; cohort X3: 2 of 10 (a normal share)."""
    n = hours * 12
    frames = [device_rows(f"x1-{i}", "Acme|X1|1", start, "1" * n, severity=70 + 5 * i) for i in range(4)]
    frames.append(device_rows("x1-4", "Acme|X1|1", start, "0" * n))
    frames += [device_rows("x2-0", "Acme|X2|1", start, "1" * n)]
    frames += [device_rows(f"x2-{i}", "Acme|X2|1", start, "0" * n) for i in range(1, 5)]
    frames += [device_rows(f"x3-{i}", "Acme|X3|1", start, ("1" if i < 2 else "0") * n) for i in range(10)]
    return scored(*frames)


def test_a_cohort_firing_together_becomes_one_cohort_incident():
    rules = IncidentRules(open_k=3, open_n=5, close_m=3, cohort_min_share=0.3, cohort_min_flagged_devices=3)
    result = detect_incidents(_cohort_day(), {}, rules, "2026-11-08", pd.Timestamp("2026-11-09", tz="UTC"))
    found = result.incidents
    [cohort] = found.loc[found["kind"] == "cohort"].to_dict("records")
    assert cohort["cohort"] == "Acme|X1|1"
    assert (cohort["devices"], cohort["cohort_devices"], cohort["peak_share"]) == (4, 5, 0.8)
    assert cohort["device_ids"] == "x1-0, x1-1, x1-2, x1-3"
    assert cohort["started_at"] == pd.Timestamp("2026-11-08 10:00", tz="UTC")
    assert cohort["status"] == "closed" and cohort["ended_at"] == pd.Timestamp("2026-11-08 12:00", tz="UTC")
    assert cohort["severity_level"] == "high"  # worst device: severity 85
    devices = found.loc[found["kind"] == "device"].set_index("device_id")
    assert set(devices.index) == {"x1-0", "x1-1", "x1-2", "x1-3", "x2-0", "x3-0", "x3-1"}
    assert (devices.loc[["x1-0", "x1-1", "x1-2", "x1-3"], "cohort_incident_id"] == cohort["incident_id"]).all()
    assert devices.loc[["x2-0", "x3-0", "x3-1"], "cohort_incident_id"].isna().all()


def test_a_cohort_incident_open_at_midnight_continues():
    rules = IncidentRules(cohort_bucket_minutes=60, cohort_close_after_buckets=2)
    before = detect_incidents(_cohort_day("2026-11-08 22:00", hours=2), {}, rules, "2026-11-08", pd.Timestamp("2026-11-09", tz="UTC"))
    [open_cohort] = before.incidents.loc[before.incidents["kind"] == "cohort"].to_dict("records")
    assert open_cohort["status"] == "open"
    after = detect_incidents(_cohort_day("2026-11-09 00:00", hours=1), before.states, rules, "2026-11-09", pd.Timestamp("2026-11-10", tz="UTC"))
    [cohort] = after.incidents.loc[after.incidents["kind"] == "cohort"].to_dict("records")
    assert cohort["incident_id"] == open_cohort["incident_id"]
    assert cohort["status"] == "closed" and cohort["ended_at"] == pd.Timestamp("2026-11-09 01:00", tz="UTC")
    assert cohort["samples"] == 3  # firing buckets: 22h, 23h, 00h


def test_rules_and_levels():
    assert [RULES.level(s) for s in (50, 64.9, 65, 80, 90, 100)] == ["low", "low", "medium", "high", "critical", "critical"]
    with pytest.raises(ValueError, match="open_k must be between 1 and open_n"):
        IncidentRules(open_k=6, open_n=5)
    with pytest.raises(ValueError, match="cohort_min_share"):
        IncidentRules(cohort_min_share=0)


# --------------------------------------------------------------------------------------------
# the device_incidents asset


def _fleet_two_days() -> pd.DataFrame:
    """dev-1: an incident from 23:40 that runs past midnight; cohort X1 fires on day 2; dev-9: a short one on day 1."""
    return scored(
        device_rows("dev-1", "Acme|X9|1", "2026-11-08 12:00", "0" * 140 + "1111"),  # 12:00 .. 23:55
        device_rows("dev-1", "Acme|X9|1", "2026-11-09 00:00", "1111" + "0" * 20),
        device_rows("dev-9", "Acme|X9|1", "2026-11-08 12:00", "0" * 10 + "1111" + "0" * 20),
        _cohort_day("2026-11-09 10:00", hours=2),
    )


def test_device_incidents_rematerialized_updates_rows_and_never_duplicates(tmp_path):
    days = write_scored_partitions(tmp_path / "parquet", _fleet_two_days())
    assert days == ["2026-11-08", "2026-11-09"]
    harness = AlertingHarness(tmp_path)
    for day in days:
        result = harness.run(partition_key=day, assets=INCIDENTS_ONLY)
        assert result.success
    first = incident_store.read_incidents(harness.store)
    metadata = result.asset_materializations_for_node("device_incidents")[0].metadata
    assert metadata["previous_day_state"].value == "loaded"
    assert metadata["continued_from_previous_day"].value == 1
    spanning = first.loc[first["device_id"] == "dev-1"]
    assert len(spanning) == 1
    assert tuple(spanning.iloc[0][["first_partition", "last_partition", "status"]]) == ("2026-11-08", "2026-11-09", "closed")
    assert spanning.iloc[0]["anomalous_samples"] == 8
    assert (first["kind"] == "cohort").sum() == 1

    for day in days:  # again, in order: same rows, same ids
        assert harness.run(partition_key=day, assets=INCIDENTS_ONLY).success
    again = incident_store.read_incidents(harness.store)
    assert harness.store.count(incidents) == len(first)
    pd.testing.assert_frame_equal(first, again)

    # day 1 again after day 2: the incident day 2 extended keeps day 2's view
    assert harness.run(partition_key="2026-11-08", assets=INCIDENTS_ONLY).success
    pd.testing.assert_frame_equal(first, incident_store.read_incidents(harness.store))

    # a single-run backfill of both days gives the same incidents
    other = AlertingHarness(tmp_path / "range")
    write_scored_partitions(other.parquet, _fleet_two_days())
    assert other.run(partition_range=("2026-11-08", "2026-11-09"), assets=INCIDENTS_ONLY).success
    pd.testing.assert_frame_equal(first, incident_store.read_incidents(other.store))
    assert other.store.count(incident_state, ["2026-11-08"]) == harness.store.count(incident_state, ["2026-11-08"]) > 0


def test_changed_scores_replace_the_days_incidents(tmp_path):
    harness = AlertingHarness(tmp_path)
    write_scored_partitions(harness.parquet, scored(device_rows("dev-1", "Acme|X9|1", "2026-11-08 08:00", "0111100000" * 3)))
    no_cooldown = {"cooldown_minutes": 0}
    assert harness.run(partition_key="2026-11-08", incidents_config=no_cooldown).success
    assert harness.store.count(incidents) == 3
    # re-scored with another model: only one incident left on that day; the stale ones are deleted
    write_scored_partitions(harness.parquet, scored(device_rows("dev-1", "Acme|X9|1", "2026-11-08 08:00", "0111100000" + "0" * 20)))
    result = harness.run(partition_key="2026-11-08", incidents_config=no_cooldown)
    assert result.success
    assert harness.store.count(incidents) == 1
    metadata = result.asset_materializations_for_node("device_incidents")[0].metadata
    assert metadata["stale_incidents_deleted"].value == 2
    assert metadata["previous_day_state"].value == "missing (started fresh)"
    deliveries = result.asset_materializations_for_node("alert_deliveries")[0].metadata
    assert deliveries["status"].value == "no channels configured"


def test_invalid_incident_config_names_the_problem(tmp_path):
    harness = AlertingHarness(tmp_path)
    write_scored_partitions(harness.parquet, scored(device_rows("dev-1", "Acme|X9|1", "2026-11-08 08:00", "0111")))
    with pytest.raises(Exception, match="device_incidents run config: invalid incident rules: open_k"):
        harness.run(partition_key="2026-11-08", incidents_config={"open_k": 9, "open_n": 3})


def test_scored_partitions_bring_their_incidents_and_then_their_deliveries(tmp_path):
    """Declarative automation: each day whose scores change gets device_incidents (any day, not
    only the latest; not waiting for its own previous day), and alert_deliveries with it."""
    import dagster as dg

    from anomaly_assets.defs.alerting.assets import alert_deliveries

    from anomaly_assets.resources import ResultsStore
    from anomaly_assets.resources.alert_router import AlertRouter

    instance = dg.DagsterInstance.ephemeral()
    assets = dg.Definitions(
        assets=[SCORED_SOURCE, device_incidents, alert_deliveries],
        resources={"results_store": ResultsStore(url=f"sqlite:///{tmp_path}/r.db"), "alert_router": AlertRouter()},
    )
    first = dg.evaluate_automation_conditions(defs=assets, instance=instance)
    assert first.total_requested == 0  # nothing scored yet
    for day in ("2026-11-08", "2026-11-09"):  # e.g. a backfill of scoring_job
        instance.report_runless_asset_event(dg.AssetMaterialization("scored_anomalies", partition=day))
    second = dg.evaluate_automation_conditions(defs=assets, instance=instance, cursor=first.cursor)
    requested = {key.to_user_string(): set(subset) for key, subset in _requested(second).items()}
    # one run per day range: incidents, then their deliveries
    assert requested == {"device_incidents": {"2026-11-08", "2026-11-09"}, "alert_deliveries": {"2026-11-08", "2026-11-09"}}
    for day in ("2026-11-08", "2026-11-09"):
        for asset in ("device_incidents", "alert_deliveries"):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=day))
    third = dg.evaluate_automation_conditions(defs=assets, instance=instance, cursor=second.cursor)
    assert third.total_requested == 0  # handled: nothing is requested twice
    instance.report_runless_asset_event(dg.AssetMaterialization("scored_anomalies", partition="2026-11-08"))
    fourth = dg.evaluate_automation_conditions(defs=assets, instance=instance, cursor=third.cursor)
    assert {key.to_user_string(): set(subset) for key, subset in _requested(fourth).items()} == {
        "device_incidents": {"2026-11-08"},
        "alert_deliveries": {"2026-11-08"},
    }  # re-scoring a day brings its incidents again


def _requested(result) -> dict:
    return {
        r.key: r.true_subset.get_internal_subset_value().get_partition_keys()
        for r in result.results
        if r.true_subset.size
    }
