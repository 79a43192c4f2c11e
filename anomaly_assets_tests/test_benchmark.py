"""``anomaly-assets bench``: the chunked, multi-process fast path computes what the one-shot
pipeline computes, and the report carries every stage. Speed itself is measured by the
benchmark, never asserted here."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from anomaly_assets import benchmark
from anomaly_assets.core.features import build_daily_features
from anomaly_assets.core.validation import validate_telemetry


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bench")
    chunks = benchmark.prepare(workdir, devices=30, chunk_devices=10, train_devices=12)["chunks"]
    benchmark.train(workdir)
    return workdir, chunks


def test_two_workers_persist_what_one_shot_scoring_gives(prepared):
    workdir, chunks = prepared
    out = benchmark.run_fast(workdir, chunks, workers=2)
    assert out["workers"] == 2 and len(out["worker_peak_mb"]) == 2
    assert set(out["seconds"]) == set(benchmark.STAGES) and all(v > 0 for v in out["seconds"].values())
    assert out["wall_seconds"] > 0

    model = pd.read_pickle(workdir / "model.pkl")
    day_start = pd.Timestamp(benchmark.DAY, tz="UTC")
    expected = []
    for chunk in chunks:  # each chunk on its own, in one process, the plain way
        frame = pd.read_parquet(chunk)
        day = frame["timestamp"] >= day_start
        valid = validate_telemetry(frame.loc[day], benchmark._contract(), day_start, day_start + pd.Timedelta(days=1)).valid
        features = build_daily_features(pd.concat([frame.loc[~day], valid]), model.spec, [day_start])
        expected.append(model.score(features))
    expected = pd.concat(expected, ignore_index=True)
    assert out["rows"] == len(expected) > 29 * 288  # 30 devices, a few rows lost to dropouts

    from anomaly_assets.resources.results_store import ResultsStore

    store = ResultsStore(url=f"sqlite:///{workdir / 'fast.db'}")
    events = store.read_frame("SELECT device_id, score, severity, top_feature_1 FROM anomaly_events")
    flagged = expected.loc[expected["is_anomaly"], ["device_id", "score", "severity", "top_feature_1"]]
    assert len(events) == len(flagged) > 0
    key = ["device_id", "score"]
    pd.testing.assert_frame_equal(
        events.sort_values(key).reset_index(drop=True),
        flagged.sort_values(key).reset_index(drop=True).astype(events.dtypes.to_dict()),
        check_exact=True,
    )
    summary = store.read_frame("SELECT device_id, samples FROM device_daily_summary")
    assert len(summary) == 30 and summary["samples"].sum() == len(expected)
    scored = pd.concat(pd.read_parquet(workdir / f"scored{i:04d}.parquet") for i in range(len(chunks)))
    assert len(scored) == len(expected)


def test_report_lists_every_stage_against_the_reference(prepared):
    workdir, chunks = prepared
    fast = benchmark.run_fast(workdir, chunks, workers=1)
    reference = benchmark.run_reference(workdir, chunks, max_devices=10)
    parallel = dict(fast, workers=2)
    report = benchmark.BenchReport(
        30, fast["rows"], fast, parallel, reference, {"training_rows": 1, "training_seconds": 1.0}, "test"
    )
    text = benchmark.format_report(report)
    for stage in (*benchmark.STAGES, "end to end, 1 worker", "end to end, 2 workers", "peak memory"):
        assert stage in text
    assert 0 < reference["rows"] <= 10 * 288  # one chunk of devices (dropouts remove a few rows)


def test_cli_bench_reports_one_and_two_worker_runs_as_json(capsys):
    from anomaly_assets.cli import main

    args = ["bench", "--devices", "40", "--chunk-devices", "20", "--reference-devices", "20", "--train-devices", "12"]
    training = ["--training-devices", "15", "--training-days", "3"]
    assert main([*args, *training, "--workers", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["single"]["workers"] == 1 and report["fast"]["workers"] == 2
    assert report["rows"] == report["single"]["rows"] == report["fast"]["rows"] > 39 * 288
    assert report["reference"]["rows"] <= 20 * 288 and report["scoring_model"]["training_rows"] > 0
    assert all(report["fast"]["seconds"][stage] > 0 for stage in benchmark.STAGES)

    # training_job through the assets: the window's rows, every step of the job, a registered version
    trained = report["training"]
    assert (trained["devices"], trained["days"]) == (15, 3)
    assert 14 * 288 * 3 < trained["rows"] <= 15 * 288 * 3  # 3 days of 15 devices, a few rows lost to dropouts
    assert set(trained["step_seconds"]) == {"cohort_stats", "baselines", "anomaly_detector", "model_promotion"}
    assert trained["model_version"] == "1" and trained["peak_mb"] > 0 and trained["wall_seconds"] > 0
    # scoring_job through the assets for the same 40 devices' day, against the fast path's wall time
    assets = report["asset_path"]
    assert assets["devices"] == 40 and 39 * 288 < assets["rows"]["scored_anomalies"] <= 40 * 288
    assert "score_and_measure_drift" in assets["step_seconds"] and assets["wall_seconds"] > 0

    text = benchmark.format_report(benchmark.BenchReport(**report))
    assert "training_job through the assets, 15 devices x 3 days" in text and "anomaly_detector" in text
    assert "scoring_job through the assets: 40 devices" in text and "the fast path's end-to-end wall time" in text


def test_rows_of_a_mask_are_the_masked_rows_whether_contiguous_or_not():
    import numpy as np

    frame = pd.DataFrame({"a": range(10), "b": [f"x{i}" for i in range(10)]}, index=range(100, 110))
    for mask in (np.arange(10) >= 4, np.arange(10) < 4, np.arange(10) % 3 == 0, np.zeros(10, bool), np.ones(10, bool)):
        pd.testing.assert_frame_equal(benchmark._rows(frame, mask), frame.loc[mask])
