"""Schedules, single-run backfills, feature drift and the drift sensor (on a real instance)."""

from __future__ import annotations

import datetime as dt
import json
import os

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core.drift import drift_streak_end, feature_drift, fit_drift_reference
from anomaly_assets.definitions import build_definitions
from anomaly_assets.defs.monitoring.sensors import drift_retraining_sensor
from anomaly_assets.defs.schedules import weekly_retraining_schedule
from anomaly_assets.demo import run_demo
from anomaly_assets.settings import Settings

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SCORED_DAYS = ["2026-11-08", "2026-11-09", "2026-11-10"]


@pytest.fixture(scope="module")
def drifting_home(tmp_path_factory):
    """A demo whose fleet gets a firmware update on 2026-11-08 that lifts memory use for good."""
    saved = dict(os.environ)
    settings = Settings(
        home=tmp_path_factory.mktemp("drift") / "home", fleet_devices=30, fleet_seed=11, fleet_shift_offset_days=7
    )
    run_demo(settings, days=10, progress=lambda _m: None)
    yield settings
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def defs(drifting_home):
    return build_definitions(drifting_home)


def _instance(settings: Settings) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(settings.dagster_home))


def _evaluate_sensor(defs, instance, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"model_registry": defs.resources["model_registry"]}
    )
    return drift_retraining_sensor(context)


def test_streak_needs_m_consecutive_days_with_k_drifted_features():
    counts = {"2026-11-08": 4, "2026-11-09": 5, "2026-11-10": 3}
    assert drift_streak_end(counts, min_features=3, consecutive=2) == "2026-11-10"
    assert drift_streak_end(counts, min_features=4, consecutive=2) is None  # the latest day has 3
    assert drift_streak_end({"2026-11-08": 9, "2026-11-10": 9}, min_features=3, consecutive=2) is None  # a gap
    assert drift_streak_end({}, 1, 1) is None


def test_psi_flags_a_shifted_feature_and_not_a_stable_one():
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"stable": rng.normal(0, 1, 20_000), "shifted": rng.normal(0, 1, 20_000)})
    current = pd.DataFrame({"stable": rng.normal(0, 1, 5_000), "shifted": rng.normal(1.0, 1, 5_000)})
    table = feature_drift(fit_drift_reference(reference, ["stable", "shifted"]), current).set_index("feature")
    assert table.loc["shifted", "drifted"] and table.loc["shifted", "psi"] > 0.2
    assert not table.loc["stable", "drifted"] and table.loc["stable", "psi"] < 0.05
    assert table.loc["shifted", "ks"] > 0.3 > table.loc["stable", "ks"]


def test_feature_drift_finds_the_firmware_shift_in_the_scored_days(drifting_home):
    instance = _instance(drifting_home)
    counts = {}
    for record in instance.fetch_materializations(dg.AssetKey("feature_drift"), limit=10).records:
        materialization = record.asset_materialization
        counts[materialization.partition] = materialization.metadata["drifted_features"].value
    assert set(counts) == set(SCORED_DAYS)
    for day in SCORED_DAYS:
        assert "memory_used_pct" in counts[day], (day, counts[day])
    # The demo scores the days in one run; the drift check's result is stored for each of them.
    key = dg.AssetCheckKey(dg.AssetKey("feature_drift"), "no_feature_drift")
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
    assert {r.partition: r.status.value for r in history} == dict.fromkeys(SCORED_DAYS, "FAILED")


def test_sensor_stays_quiet_without_drift_then_fires_once_then_cools_down(drifting_home, defs):
    instance = _instance(drifting_home)
    job = defs.resolve_job_def("scoring_job")
    calm = {"ops": {"score_and_measure_drift": {"config": {"psi_threshold": 1e9}}}, **QUIET}
    tags = {"dagster/asset_partition_range_start": SCORED_DAYS[0], "dagster/asset_partition_range_end": SCORED_DAYS[-1]}
    assert job.execute_in_process(instance=instance, run_config=calm, tags=tags).success
    quiet = _evaluate_sensor(defs, instance)
    assert not quiet.run_requests

    assert job.execute_in_process(instance=instance, run_config=QUIET, tags=tags).success
    fired = _evaluate_sensor(defs, instance, cursor=quiet.cursor)
    [request] = fired.run_requests
    assert request.partition_key == "2026-11-10"
    assert request.run_key == "drift-retrain-2026-11-10"
    cooling = _evaluate_sensor(defs, instance, cursor=fired.cursor)
    assert isinstance(cooling, dg.SkipReason) and "cooldown" in cooling.skip_message

    # The requested retraining produces a newer version: the cooldown ends, and the same
    # drift streak does not request a second retraining.
    training = defs.resolve_job_def("training_job").execute_in_process(
        instance=instance, partition_key=request.partition_key, run_config=QUIET
    )
    assert training.success
    after = _evaluate_sensor(defs, instance, cursor=fired.cursor)
    assert not after.run_requests
    assert json.loads(after.cursor)["last_requested_partition"] == "2026-11-10"

    # A tick reads only the measurements recorded since the previous tick, not the history.
    read: list[int] = []
    fetch = instance.fetch_materializations

    def counting(*args, **kwargs):
        page = fetch(*args, **kwargs)
        read.append(len(page.records))
        return page

    instance.fetch_materializations = counting
    idle = _evaluate_sensor(defs, instance, cursor=after.cursor)
    assert read == [0] and not idle.run_requests
    assert json.loads(idle.cursor)["drifted"]["2026-11-10"] >= 3  # the streak is remembered, not re-read


def test_schedules_request_the_last_complete_day(tmp_path, restore_environ):
    """The daily run is Dagster's schedule for the partitioned scoring_job (one run per day, at
    ANOMALY_ASSETS_SCORING_TIME); the weekly retraining asks the partitions for the last complete day."""
    defs = build_definitions(Settings(home=tmp_path / "home"))
    daily = defs.resolve_schedule_def("daily_scoring_schedule")
    assert (daily.cron_schedule, daily.execution_timezone, daily.job_name) == ("0 2 * * *", "UTC", "scoring_job")
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC), repository_def=defs.get_repository_def()
    )
    [scoring] = daily.evaluate_tick(context).run_requests
    assert scoring.partition_key == "2026-11-19"
    [retraining] = weekly_retraining_schedule.evaluate_tick(context).run_requests
    assert retraining.partition_key == "2026-11-19" and retraining.run_key == "retraining-2026-11-19"
    before = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 1, 4, 0, tzinfo=dt.UTC))
    assert not weekly_retraining_schedule.evaluate_tick(before).run_requests  # no day has ended yet
    with pytest.raises(ValueError, match="ANOMALY_ASSETS_SCORING_TIME"):
        Settings.from_env({"ANOMALY_ASSETS_SCORING_CRON": "* * * * *"})


def test_a_backfill_range_is_one_run_that_materializes_every_partition_exactly_once(tmp_path, restore_environ):
    settings = Settings(home=tmp_path / "home", fleet_devices=10, fleet_seed=3)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    tags = {"dagster/asset_partition_range_start": "2026-11-01", "dagster/asset_partition_range_end": "2026-11-05"}
    result = defs.resolve_job_def("telemetry_job").execute_in_process(instance=instance, run_config=QUIET, tags=tags)
    assert result.success
    assert len(instance.get_runs()) == 1
    days = [f"2026-11-0{d}" for d in range(1, 6)]
    for asset in ("raw_telemetry", "validated_telemetry", "device_features"):
        partitions = sorted(
            e.materialization.partition
            for e in result.get_asset_materialization_events()
            if e.materialization.asset_key == dg.AssetKey(asset)
        )
        assert partitions == days, asset
        for day in days:
            frame = pd.read_parquet(settings.parquet_dir / asset / f"{day}.parquet")
            assert (frame["timestamp"].dt.strftime("%Y-%m-%d") == day).all()
            assert not frame.duplicated(["device_id", "timestamp"]).any()
    # Features built in the range equal features built for one day alone (with its lookback).
    in_range = pd.read_parquet(settings.parquet_dir / "device_features" / "2026-11-03.parquet")
    alone = defs.resolve_job_def("telemetry_job").execute_in_process(
        instance=instance, run_config=QUIET, partition_key="2026-11-03"
    )
    assert alone.success
    pd.testing.assert_frame_equal(in_range, pd.read_parquet(settings.parquet_dir / "device_features" / "2026-11-03.parquet"))
