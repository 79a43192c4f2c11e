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

SMD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "smd"


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
    if not SMD.is_dir():
        pytest.skip(f"the SMD dataset is absent ({SMD})")
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
