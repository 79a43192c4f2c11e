"""The whole graph on the embedded default: demo command, re-materialization, stores."""

from __future__ import annotations

import os

import dagster as dg
import pandas as pd
import pytest

from anomaly_assets.cli import main
from anomaly_assets.definitions import build_definitions
from anomaly_assets.resources.results_store import anomaly_events, device_daily_summary, incidents
from anomaly_assets_tests.conftest import small_settings


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """Run the demo once for the module: 30 devices, 7 training days, 2 scored days."""
    saved = dict(os.environ)
    home = tmp_path_factory.mktemp("demo") / "home"
    exit_code = main(["demo", "--devices", "30", "--days", "9", "--seed", "11", "--home", str(home), "--json"])
    os.environ.clear()
    os.environ.update(saved)
    assert exit_code == 0
    return home


@pytest.fixture(scope="module")
def demo_defs(demo_home):
    return build_definitions(small_settings(demo_home))


def test_demo_materializes_every_asset_and_registers_a_champion(demo_home, demo_defs):
    instance = dg.DagsterInstance.from_config(str(demo_home / "dagster"))
    materialized = {
        key.to_user_string()
        for key in instance.get_asset_keys()
        if instance.get_latest_materialization_event(key) is not None
    }
    assert materialized == {
        "device_inventory",  # read by every telemetry and scoring run (empty: no inventory configured)
        "raw_telemetry",
        "validated_telemetry",
        "device_features",
        "cohort_stats",
        "baselines",
        "anomaly_detector",
        "model_promotion",
        "scored_anomalies",
        "feature_drift",
        "device_incidents",
        "alert_deliveries",
    }
    registry = demo_defs.resources["model_registry"]
    assert registry.alias_version("champion") == "1"
    store = demo_defs.resources["results_store"]
    assert store.count(anomaly_events, ["2026-11-08", "2026-11-09"]) > 0
    # one summary row per device and scored day
    assert store.count(device_daily_summary, ["2026-11-08", "2026-11-09"]) == 2 * 30
    for day in ("2026-11-08", "2026-11-09"):
        assert (demo_home / "parquet" / "scored_anomalies" / f"{day}.parquet").exists()
    # The demo groups the scored days into incidents too: each day's device_incidents partition
    # reports what it wrote (this small calm fleet may open none, so the count is compared).
    opened = 0
    for day in ("2026-11-08", "2026-11-09"):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("device_incidents"), asset_partitions=[day]), limit=1
        ).records
        assert records, f"device_incidents has no materialization for {day}"
        metadata = records[0].asset_materialization.metadata
        assert metadata["previous_day_state"].value in ("loaded", "missing (started fresh)")
        opened += metadata["opened"].value
    assert store.count(incidents) == opened


def test_training_never_sees_scored_days(demo_home):
    instance = dg.DagsterInstance.from_config(str(demo_home / "dagster"))
    for asset in ("cohort_stats", "baselines", "anomaly_detector"):
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        days = event.asset_materialization.metadata["training_days"].value
        assert days == [f"2026-11-0{d}" for d in range(1, 8)], asset
    scored = instance.get_latest_materialization_event(dg.AssetKey("scored_anomalies"))
    assert scored.asset_materialization.metadata["scores_training_days"].value is False


def test_rematerializing_a_partition_leaves_results_unchanged(demo_home, demo_defs):
    store = demo_defs.resources["results_store"]
    query = "SELECT * FROM anomaly_events WHERE partition_date = '2026-11-09' ORDER BY device_id, timestamp"
    before = store.read_frame(query)
    summary_before = store.count(device_daily_summary)
    job = demo_defs.resolve_job_def("scoring_job")
    result = job.execute_in_process(
        instance=dg.DagsterInstance.from_config(str(demo_home / "dagster")), partition_key="2026-11-09"
    )
    assert result.success
    after = store.read_frame(query)
    assert len(before) > 0
    pd.testing.assert_frame_equal(before, after)
    assert store.count(device_daily_summary) == summary_before


def test_scored_rows_carry_score_severity_explanation_and_model_version(demo_home):
    scored = pd.read_parquet(demo_home / "parquet" / "scored_anomalies" / "2026-11-08.parquet")
    expected = {"score", "severity", "is_anomaly", "top_feature_1", "top_feature_2", "top_feature_3", "model_name", "model_version"}
    assert expected <= set(scored.columns)
    assert scored["severity"].between(0, 100).all()
    assert (scored["model_version"] == "1").all()
    assert scored["is_anomaly"].any() and not scored["is_anomaly"].all()
    assert scored["top_feature_1"].notna().all()


def test_demo_rejects_too_few_days(tmp_path, restore_environ, capsys):
    assert main(["demo", "--days", "7", "--home", str(tmp_path)]) == 2
    assert "nothing to score" in capsys.readouterr().err
