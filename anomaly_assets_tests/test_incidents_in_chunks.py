"""Incidents and alerts a chunk of devices at a time: the chunked tracker against one pass over
each day, and device_incidents and alert_deliveries through the IO manager in small chunks against
one chunk, on hand-built rows and on the synthetic fleet's scored days (faults running past
midnight, the firmware regression's cohort incident open at midnight)."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core.generator import FleetConfig
from anomaly_assets.core.incident_days import IncidentDays
from anomaly_assets.core.incident_rules import IncidentRules
from anomaly_assets.core.incidents import detect_incidents
from anomaly_assets.core.synthetic_scores import BLOCK_DEVICES, synthetic_scored_day, synthetic_scored_days
from anomaly_assets.defs.alerting.assets import device_incidents
from anomaly_assets.resources import PartitionedParquetIOManager, ResultsStore, incident_store
from anomaly_assets.resources.alert_router import AlertRouter
from anomaly_assets_tests.incident_helpers import (  # noqa: F401 (http_server is a fixture)
    QUIET,
    SCORED,
    AlertingHarness,
    device_rows,
    http_server,
    scored,
    write_scored_partitions,
)


def _random_fleet_two_days(seed: int = 3) -> pd.DataFrame:
    """42 devices in 3 cohorts over two days: random flags, a cohort burst on the first evening
    that runs past midnight, incidents open at midnight, and devices silent on the second day."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(42):
        flags = rng.random(576) < 0.04
        burst = slice(200 + i % 5, 260 + i % 7)
        flags[burst] |= rng.random(burst.stop - burst.start) < 0.5  # scattered bursts
        if i % 3 == 0:  # cohort M0 fires together from 22:00 on day one into day two
            flags[264:300] = True
        if i % 10 == 9:  # goes silent at midnight with an incident open
            flags[280:288] = True
            flags = flags[:288]
        severity = 55.0 + (i * 7) % 44
        frame = device_rows(f"dev-{i:03d}", f"Acme|M{i % 3}|1", "2026-11-08 00:00", "".join("1" if f else "0" for f in flags), severity)
        frames.append(frame.assign(score=frame["score"] + rng.random(len(frame)) * 0.01))
    return scored(*frames)


@pytest.mark.parametrize("chunks", [1, 6, 42])
def test_incidents_in_chunks_of_devices_equal_one_pass_over_each_day(chunks):
    """The chunked tracker (anomaly_assets.core.incident_days) gives exactly what one pass over all
    of each day's rows gives, the state carried through JSON as the incident_state table does."""
    rows = _random_fleet_two_days()
    days = ["2026-11-08", "2026-11-09"]
    rules = IncidentRules()
    # dev-999 enters the run with an incident open since the day before and then sends nothing
    earlier = detect_incidents(
        device_rows("dev-999", "Acme|M1|1", "2026-11-07 23:40", "1111", 90.0).assign(partition_date="2026-11-07"),
        {},
        rules,
        "2026-11-07",
        pd.Timestamp("2026-11-08", tz="UTC"),
    )
    previous = json.loads(json.dumps({f"{k}|{s}": v for (k, s), v in earlier.states.items()}))
    previous = {tuple(key.split("|", 1)): value for key, value in previous.items()}

    expected, states = {}, previous
    for day in days:
        result = detect_incidents(rows.loc[rows["partition_date"] == day], states, rules, day, pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1))
        expected[day] = result
        states = {key: json.loads(json.dumps(value)) for key, value in result.states.items()}

    tracker = IncidentDays(days, previous, rules)
    devices = rows["device_id"].unique()
    for part in np.array_split(devices, chunks):
        tracker.add(rows.loc[rows["device_id"].isin(part)])
    got = tracker.results()
    assert list(got) == days
    assert sum(len(r.incidents) for r in expected.values()) > 20
    assert (expected["2026-11-08"].incidents["kind"] == "cohort").any()
    assert ("device", "dev-999") in previous and (expected["2026-11-08"].incidents["device_id"] == "dev-999").any()
    for day in days:
        pd.testing.assert_frame_equal(got[day].incidents, expected[day].incidents, check_exact=True)
        assert got[day].states == {k: json.loads(json.dumps(v)) for k, v in expected[day].states.items()}
        assert got[day].suppressed_samples == expected[day].suppressed_samples


def test_device_incidents_in_chunks_of_seven_devices_writes_the_same_tables(tmp_path):
    """Through the asset: chunks of 7 devices and one chunk leave identical incident tables."""
    tables = {}
    for name, devices_per_chunk in (("chunked", 7), ("whole", 10_000)):
        root = tmp_path / name
        write_scored_partitions(root / "parquet", _random_fleet_two_days())
        store = ResultsStore(url=f"sqlite:///{root / 'results.db'}")
        for day in ("2026-11-08", "2026-11-09"):
            result = dg.materialize(
                [SCORED, device_incidents],
                selection=[device_incidents],
                partition_key=day,
                run_config=QUIET,
                resources={
                    "io_manager": PartitionedParquetIOManager(base_path=str(root / "parquet"), devices_per_chunk=devices_per_chunk),
                    "results_store": store,
                    "alert_router": AlertRouter(),
                },
            )
            assert result.success
        tables[name] = (
            incident_store.read_incidents(store).drop(columns=["updated_at", "run_id"], errors="ignore").sort_values("incident_id", ignore_index=True),
            store.read_frame("select partition_date, kind, subject, state_json from incident_state order by 1, 2, 3"),
        )
    assert len(tables["whole"][0]) > 20
    pd.testing.assert_frame_equal(tables["chunked"][0], tables["whole"][0])
    pd.testing.assert_frame_equal(tables["chunked"][1], tables["whole"][1])


# ----------------------------------------------------------------------------- the synthetic fleet

REGRESSION_DAY, NEXT_DAY = "2026-11-09", "2026-11-10"


def _synthetic_fleet(devices: int = 150) -> pd.DataFrame:
    """The synthetic fleet's scored regression day and the day after (seed of the demo fleet)."""
    days = [dt.date.fromisoformat(day) for day in (REGRESSION_DAY, NEXT_DAY)]
    return synthetic_scored_days(FleetConfig(n_devices=devices, seed=11), days)


def test_synthetic_scores_come_in_blocks_of_devices_the_same_each_time():
    config = FleetConfig(n_devices=BLOCK_DEVICES + 30, seed=4)
    day = dt.date.fromisoformat(REGRESSION_DAY)
    first, second = list(synthetic_scored_day(config, day)), list(synthetic_scored_day(config, day))
    assert len(first) == 2 and first[0]["device_id"].max() < f"dev-{BLOCK_DEVICES:06d}" <= first[1]["device_id"].min()
    for a, b in zip(first, second, strict=True):
        pd.testing.assert_frame_equal(a, b)
    rows = pd.concat(first, ignore_index=True)
    assert rows["device_id"].is_monotonic_increasing and set(rows["partition_date"]) == {REGRESSION_DAY}
    assert 1000 < rows["device_id"].nunique() < config.n_devices  # a few devices are silent all day
    flagged = rows.loc[rows["is_anomaly"]]
    assert (flagged["score"] > 0.5).all() and (rows.loc[~rows["is_anomaly"], "score"] <= 0.5).all()
    # the firmware release: from 18:00 one cohort holds most of the flagged rows
    evening = flagged.loc[flagged["timestamp"].dt.hour >= 18, "cohort"].value_counts()
    assert evening.iloc[0] > 5 * evening.iloc[1]


def test_incidents_and_alerts_of_the_synthetic_fleet_in_chunks_of_seven_equal_one_chunk(tmp_path, http_server):
    """Through dagster.materialize and the IO manager, two days (the second continuing the first's
    open incidents): chunks of 7 devices and one chunk leave the same incidents, incident state and
    delivery log, and send the same alerts."""
    fleet = _synthetic_fleet()
    results = {}
    for name, devices_per_chunk in (("chunked", 7), ("whole", 10_000)):
        channels = json.dumps([{"name": "ops", "type": "webhook", "url": http_server.url(f"/{name}"), "min_severity": "low"}])
        harness = AlertingHarness(tmp_path / name, AlertRouter(channels=channels), devices_per_chunk=devices_per_chunk)
        write_scored_partitions(harness.parquet, fleet)
        for day in (REGRESSION_DAY, NEXT_DAY):
            assert harness.run(partition_key=day).success
        log = incident_store.read_log(harness.store)[["incident_id", "channel", "status", "attempts"]]
        results[name] = {
            "incidents": incident_store.read_incidents(harness.store)
            .drop(columns=["updated_at", "run_id"], errors="ignore")
            .sort_values("incident_id", ignore_index=True),
            "state": harness.store.read_frame("select partition_date, kind, subject, state_json from incident_state order by 1, 2, 3"),
            "log": log.sort_values("incident_id", ignore_index=True),
            "sent": sorted(p["incident"]["incident_id"] for p in http_server.posts(f"/{name}") if p["type"] == "incident"),
        }
    incidents = results["whole"]["incidents"]
    cohort = incidents.loc[incidents["kind"] == "cohort"]
    devices = incidents.loc[incidents["kind"] == "device"]
    # what the comparison covers: a cohort incident open at midnight, device incidents continued
    # past midnight, attached to the cohort incident, and delivered or suppressed alerts
    assert len(cohort) == 1 and cohort[["first_partition", "last_partition"]].iloc[0].tolist() == [REGRESSION_DAY, NEXT_DAY]
    assert ((devices["first_partition"] == REGRESSION_DAY) & (devices["last_partition"] == NEXT_DAY)).sum() >= 3
    assert (devices["cohort_incident_id"] == cohort["incident_id"].iloc[0]).sum() >= 5
    assert len(devices) > 30 and set(results["whole"]["log"]["status"]) == {"delivered", "suppressed"}
    assert len(results["whole"]["sent"]) > 20 and results["whole"]["state"]["partition_date"].nunique() == 2
    for key in ("incidents", "state", "log"):
        pd.testing.assert_frame_equal(results["chunked"][key], results["whole"][key], check_exact=True)
    assert results["chunked"]["sent"] == results["whole"]["sent"]
