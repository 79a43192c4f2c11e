"""The backtest: ``anomaly-assets evaluate`` on a small labelled file and on SMD machines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.cli import main
from anomaly_assets.core.evaluation import EvaluationConfig, EvaluationInputError, evaluate, prepare_input
from anomaly_assets.core.smd import read_smd, smd_machines

from anomaly_assets_tests.conftest import require_service

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SMD = DATASETS / "smd"
SKAB = DATASETS / "skab" / "data" / "valve1"


def skab_runs(count: int) -> pd.DataFrame:
    """SKAB valve1 runs in the long format (as ../shared/eval/convert.py writes them): one device
    per run, 1-second samples, the first 400 rows train."""
    require_service(SKAB.is_dir(), f"the SKAB dataset is absent ({SKAB})")
    frames = []
    for path in sorted(SKAB.glob("*.csv"), key=lambda p: int(p.stem))[:count]:
        raw = pd.read_csv(path, sep=";")
        frame = pd.DataFrame(
            {"device_id": f"valve1-{int(path.stem):02d}", "cohort": "valve1", "timestamp": pd.to_datetime(raw["datetime"], utc=True)}
        )
        for column in raw.columns.drop(["datetime", "anomaly", "changepoint"]):
            frame[column.replace(" ", "_").lower()] = raw[column].astype(float)
        frame["split"] = ["train"] * 400 + ["test"] * (len(raw) - 400)
        frame["label"] = raw["anomaly"].astype(int)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def labelled_fleet(devices: int = 6, days: int = 6, seed: int = 3) -> pd.DataFrame:
    """Long format: 10-minute rows, 3 metrics, a cohort column, level-shift faults labelled 1."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2026-03-01", periods=days * 144, freq="10min", tz="UTC")
    hour = times.hour.to_numpy()
    frames = []
    for d in range(devices):
        cpu = 30 + 10 * np.sin(2 * np.pi * hour / 24) + rng.normal(0, 2, len(times))
        temp = 35 + rng.normal(0, 1, len(times))
        mem = 50 + rng.normal(0, 3, len(times))
        label = np.zeros(len(times), dtype=int)
        for start in rng.choice(np.arange(len(times) // 10, len(times) - 20), size=3, replace=False):
            label[start : start + 12] = 1
        cpu = np.where(label == 1, cpu + 35, cpu)
        temp = np.where(label == 1, temp + 8, temp)
        frames.append(
            pd.DataFrame(
                {
                    "device_id": f"dev-{d}",
                    "timestamp": times,
                    "model": "A" if d % 2 else "B",
                    "cpu": cpu,
                    "temp": temp,
                    "mem": mem,
                    "label": label,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_evaluate_synthetic_metrics_are_sane():
    report = evaluate(labelled_fleet(), EvaluationConfig(cohort_columns=("model",)))
    pipeline, forest = report.summary["pipeline"], report.summary["isolation_forest_raw"]
    assert report.metrics == ("cpu", "temp", "mem")
    assert report.rows["devices"] == 6 and report.rows["train"] + report.rows["test"] == 6 * 6 * 144
    for metrics in (pipeline, forest):
        assert 0.0 <= metrics["event_f1"] <= metrics["event_f1_best"] + 1e-9 <= 1.0 + 1e-9
        assert metrics["alerts_per_device_per_day"] >= 0
    assert pipeline["auc_roc"] > 0.9 and pipeline["auc_pr"] > 0.5 and pipeline["event_f1_best"] > 0.5
    assert forest["auc_roc"] > 0.8
    assert set(report.per_device["device_id"]) == {f"dev-{d}" for d in range(6)}
    assert list(report.scores.columns) == ["device_id", "timestamp", "score", "is_anomaly", "label"]
    assert len(report.scores) == report.rows["test"]


def test_input_errors_are_clear():
    frame = labelled_fleet(devices=2, days=3)
    with pytest.raises(EvaluationInputError, match="device_id"):
        prepare_input(frame.drop(columns="device_id"))
    with pytest.raises(EvaluationInputError, match="no labels|'label'"):
        prepare_input(frame.drop(columns="label"))
    with pytest.raises(EvaluationInputError, match="split must be"):
        prepare_input(frame.assign(split="later"))
    with pytest.raises(EvaluationInputError, match="cohort column"):
        prepare_input(frame, cohort_columns=("nope",))


def test_cli_evaluate_writes_scores_and_json(tmp_path: Path, capsys):
    frame = labelled_fleet(devices=4, days=6)
    frame["split"] = np.where(frame["timestamp"] < pd.Timestamp("2026-03-04", tz="UTC"), "train", "test")
    path = tmp_path / "fleet.csv"
    frame.to_csv(path, index=False)
    scores = tmp_path / "out" / "scores.csv"
    code = main(["evaluate", "--input", str(path), "--cohort-cols", "model", "--scores-out", str(scores), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload["overall"]) == {"pipeline", "isolation_forest_raw"}
    assert payload["rows"]["test"] == int((frame["split"] == "test").sum())
    written = pd.read_csv(scores)
    assert list(written.columns) == ["device_id", "timestamp", "score", "is_anomaly", "label"]
    assert len(written) == payload["rows"]["test"] and written["label"].isin([0, 1]).all()
    # Bad input: a clear error, exit code 2.
    assert main(["evaluate", "--input", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert main(["evaluate", "--input", str(path), "--cohort-cols", "nope"]) == 2
    assert "cohort column" in capsys.readouterr().err


def test_evaluate_on_two_smd_machines(tmp_path: Path, capsys):
    require_service(SMD.is_dir(), f"the SMD dataset is absent ({SMD})")
    machines = smd_machines(SMD)[:2]
    frame = read_smd(SMD, machines)
    assert frame.shape[1] == 4 + 38 and set(frame["split"]) == {"train", "test"}
    assert frame.loc[frame["split"] == "train", "label"].isna().all()
    code = main(["evaluate", "--input", str(SMD), "--format", "smd", "--machines", ",".join(machines), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["model_scope"] == "device" and payload["rows"]["devices"] == 2
    for method in ("pipeline", "isolation_forest_raw"):
        assert 0.5 < payload["macro"][method]["auc_roc"] <= 1.0
    assert main(["evaluate", "--input", str(SMD), "--format", "smd", "--machines", "machine-9-9"]) == 2


def test_evaluate_on_skab_runs_at_one_hertz(tmp_path: Path, capsys):
    """Runs of ~1,100 rows at 1 Hz: windows of 12 and 72 seconds, fitted and thresholded inside
    the 400 training rows, each run scored against its own history."""
    frame = skab_runs(3)
    path = tmp_path / "skab.csv"
    frame.to_csv(path, index=False)
    scores = tmp_path / "skab_scores.csv"
    code = main(
        ["evaluate", "--input", str(path), "--cohort-cols", "cohort", "--model-scope", "device", "--scores-out", str(scores), "--json"]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["windows"] == ["12s", "72s"] and payload["rows"]["devices"] == 3
    assert payload["members"] == ["forest", "reconstruction", "robust_z"]
    assert payload["rows"]["test"] == int((frame["split"] == "test").sum())
    pipeline, forest = payload["macro"]["pipeline"], payload["macro"]["isolation_forest_raw"]
    assert pipeline["auc_pr"] > 0.7 and pipeline["auc_roc"] > 0.7, pipeline
    assert pipeline["auc_pr"] > forest["auc_pr"], (pipeline, forest)
    assert len(pd.read_csv(scores)) == payload["rows"]["test"]


def test_evaluate_takes_repeated_timestamps_and_devices_without_history(tmp_path: Path):
    """Exact duplicates keep one copy and conflicting rows are set aside (both counted), as the
    telemetry contract has it; a run without training rows is fitted on its cohort's."""
    frame = skab_runs(3)
    clean = evaluate(frame, EvaluationConfig(cohort_columns=("cohort",), model_scope="device"))
    copies = frame.iloc[500:520]
    conflicting = frame.iloc[[600, 700]].assign(pressure=lambda f: f["pressure"] + 1.0)
    messy = pd.concat([frame, copies, conflicting], ignore_index=True).sample(frac=1.0, random_state=0)
    report = evaluate(messy, EvaluationConfig(cohort_columns=("cohort",), model_scope="device"))
    assert report.rows["duplicate_rows"] == 20 and report.rows["conflicting_rows"] == 4
    assert report.rows["test"] == clean.rows["test"] - 2  # both rows of the two conflicting keys left out
    assert report.macro["pipeline"]["auc_pr"] == pytest.approx(clean.macro["pipeline"]["auc_pr"], abs=0.05)

    newcomer = frame["device_id"] == frame["device_id"].iloc[-1]
    without_history = frame.loc[~(newcomer & (frame["split"] == "train"))]
    report = evaluate(without_history, EvaluationConfig(cohort_columns=("cohort",), model_scope="device"))
    rows = report.per_device.query("method == 'pipeline'").set_index("device_id")
    assert rows.loc[frame["device_id"].iloc[-1], "auc_roc"] > 0.6, rows
    fleet = evaluate(without_history, EvaluationConfig(cohort_columns=("cohort",), model_scope="fleet"))
    assert fleet.rows["test"] == report.rows["test"] and fleet.macro["pipeline"]["auc_roc"] > 0.6


def test_evaluate_on_a_slice_of_smd():
    """Two machines, 4,000 training and 4,000 test rows each at 1-minute samples: windows of
    12 and 72 minutes, every member and the fusion run."""
    require_service(SMD.is_dir(), f"the SMD dataset is absent ({SMD})")
    machines = smd_machines(SMD)[:2]
    frame = read_smd(SMD, machines)
    frame = frame.groupby(["device_id", "split"], group_keys=False).head(4000)
    report = evaluate(frame, EvaluationConfig(model_scope="device"))
    assert report.windows == ("12min", "72min") and report.rows["test"] == 8000
    assert 0.6 < report.macro["pipeline"]["auc_roc"] <= 1.0, report.macro


def test_evaluate_a_univariate_hourly_series_of_months():
    """One metric at 1-hour samples over 90 days: windows of 12 and 24 hours (72 samples would pass
    the one-day lookback), a daily profile learnt, and a level shift found."""
    rng = np.random.default_rng(5)
    times = pd.date_range("2026-01-01", periods=90 * 24, freq="1h", tz="UTC")
    frames = []
    for device in range(2):
        value = 10 + 3 * np.sin(2 * np.pi * times.hour.to_numpy() / 24) + rng.normal(0, 0.5, len(times))
        label = np.zeros(len(times), dtype=int)
        label[70 * 24 + device * 100 : 70 * 24 + device * 100 + 30] = 1
        value = np.where(label == 1, value + 4, value)
        frames.append(pd.DataFrame({"device_id": f"d{device}", "timestamp": times, "value": value, "label": label}))
    report = evaluate(pd.concat(frames, ignore_index=True), EvaluationConfig(model_scope="device"))
    assert report.windows == ("12h", "24h") and report.metrics == ("value",)
    assert report.macro["pipeline"]["auc_roc"] > 0.9, report.macro
