"""bench_asset_path: the scoring job through the assets on a tiny fleet reports real steps and
rows. Speed itself is measured by the benchmark, never asserted here."""

from __future__ import annotations

from anomaly_assets.bench_asset_path import format_asset_path, measure_asset_path


def test_scoring_job_through_the_assets_reports_its_steps_and_rows(tmp_path, monkeypatch):
    monkeypatch.delenv("ANOMALY_ASSETS_EXECUTOR", raising=False)
    monkeypatch.setenv("ANOMALY_ASSETS_CHUNK_WORKERS", "2")
    result = measure_asset_path(50, tmp_path, devices_per_chunk=20)  # 3 chunks: the worker pool runs

    rows = result["rows"]
    # 50 devices of 5-minute rows, a few lost to the synthetic fleet's dropouts, none to validation
    assert 45 * 288 < rows["raw_telemetry"] <= 50 * 288
    assert rows["raw_telemetry"] == rows["validated_telemetry"] == rows["device_features"] == rows["scored_anomalies"]
    assert "feature_drift" in rows
    steps = result["step_seconds"]
    assert set(steps) == {"device_inventory", "raw_telemetry", "validated_telemetry", "device_features", "score_and_measure_drift"}
    assert all(seconds > 0 for seconds in steps.values())
    assert result["wall_seconds"] >= max(steps.values())
    assert result["executor"] == "in_process" and result["workers"] == 2 and result["devices"] == 50

    lines = format_asset_path(result)
    assert lines[0].startswith("scoring_job through the assets: 50 devices")
    assert any(line.startswith("score_and_measure_drift") for line in lines)
    assert lines[-2].startswith("run, wall")
