"""``anomaly-assets bench``: the partition path end to end on a synthetic fleet, against a naive
reference pipeline measured in the same run.

The parent process generates the data (not timed) into parquet files, one per chunk of devices,
then runs each pipeline in a child process, so each child's peak memory (``ru_maxrss``) is the
pipeline's own. The fast path processes one chunk of devices at a time: its peak memory depends
on the chunk size, not on the fleet size.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly_assets.core import generator
from anomaly_assets.core.baselines import fit_baselines
from anomaly_assets.core.cohorts import fit_cohort_stats
from anomaly_assets.core.detector import DetectorConfig, FleetAnomalyModel, train_detector
from anomaly_assets.core.features import FeatureSpec, build_device_features
from anomaly_assets.core.scoring import daily_device_summary
from anomaly_assets.core.validation import validate_telemetry

DAY = dt.date(2026, 11, 9)
STAGES = ("read", "validate", "features", "cohort_features", "score", "explain", "persist")


def _spec() -> FeatureSpec:
    return FeatureSpec(generator.METRICS, generator.COHORT_COLUMNS, label_columns=generator.LABEL_COLUMNS)


def _contract():
    from anomaly_assets.resources.telemetry_source import SyntheticFleetSource

    return SyntheticFleetSource().contract()


def prepare(workdir: Path, devices: int, chunk_devices: int, train_devices: int) -> dict:
    """Generate the scored day and its previous day per device chunk, and a 7-day training set."""
    chunks = []
    for index, first in enumerate(range(0, devices, chunk_devices)):
        config = generator.FleetConfig(n_devices=min(chunk_devices, devices - first), seed=1000 + index)
        path = workdir / f"chunk{index:04d}.parquet"
        pd.concat([generator.generate_day(config, DAY - dt.timedelta(days=1)), generator.generate_day(config, DAY)]).assign(
            device_id=lambda f, first=first: f["device_id"].str.replace("dev-", f"c{index:04d}-", regex=False)
        ).to_parquet(path, index=False)
        chunks.append(str(path))
    training = generator.generate_days(
        generator.FleetConfig(n_devices=train_devices, seed=7), [DAY - dt.timedelta(days=d) for d in range(8, 1, -1)]
    )
    training.to_parquet(workdir / "training.parquet", index=False)
    return {"chunks": chunks, "training": str(workdir / "training.parquet")}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train(workdir: Path) -> dict:
    started = time.perf_counter()
    telemetry = pd.read_parquet(workdir / "training.parquet")
    spec = _spec()
    features = build_device_features(telemetry, spec)
    stats = fit_cohort_stats(features, spec.metrics, spec.cohort_columns)
    base = fit_baselines(features, spec.metrics, spec.cohort_columns)
    model, _ = train_detector(features, stats, base, spec, DetectorConfig())
    seconds = time.perf_counter() - started
    pd.to_pickle(model, workdir / "model.pkl")
    return {"training_rows": len(telemetry), "training_seconds": seconds, "peak_mb": _peak_mb()}


def run_fast(workdir: Path, chunks: list[str]) -> dict:
    model: FleetAnomalyModel = pd.read_pickle(workdir / "model.pkl")
    contract, spec = _contract(), model.spec
    day_start = pd.Timestamp(DAY, tz="UTC")
    seconds = dict.fromkeys(STAGES, 0.0)
    rows = 0
    import sqlalchemy as sa

    from anomaly_assets.resources.results_store import ResultsStore, anomaly_events, device_daily_summary

    store = ResultsStore(url=f"sqlite:///{workdir / 'fast.db'}")
    for index, chunk in enumerate(chunks):
        clock = time.perf_counter()
        frame = pd.read_parquet(chunk)
        seconds["read"] += time.perf_counter() - clock
        day_mask = frame["timestamp"] >= day_start

        clock = time.perf_counter()
        validated = validate_telemetry(frame.loc[day_mask], contract, day_start, day_start + pd.Timedelta(days=1)).valid
        seconds["validate"] += time.perf_counter() - clock

        clock = time.perf_counter()
        features = build_device_features(pd.concat([frame.loc[~day_mask], validated]), spec, keep_from=day_start)
        seconds["features"] += time.perf_counter() - clock

        clock = time.perf_counter()
        matrix = model.model_matrix(features)
        seconds["cohort_features"] += time.perf_counter() - clock

        clock = time.perf_counter()
        scores = model.raw_scores(matrix)
        seconds["score"] += time.perf_counter() - clock

        clock = time.perf_counter()
        scored = model.score_from(features, matrix, scores).assign(
            model_name="bench", model_version="1", partition_date=DAY.isoformat()
        )
        seconds["explain"] += time.perf_counter() - clock

        clock = time.perf_counter()
        scored.to_parquet(workdir / f"scored{index:04d}.parquet", index=False)
        events = scored.loc[scored["is_anomaly"]]
        with store.engine.begin() as connection:  # append chunk by chunk into the day's partition
            if index == 0:
                for table in (anomaly_events, device_daily_summary):
                    connection.execute(table.delete().where(table.c.partition_date == DAY.isoformat()))
            store.insert(connection, anomaly_events, events)
            store.insert(connection, device_daily_summary, daily_device_summary(scored))
        seconds["persist"] += time.perf_counter() - clock
        rows += len(validated)
    assert sa  # SQLAlchemy is what persist measures
    return {"rows": rows, "seconds": seconds, "peak_mb": _peak_mb()}


def run_reference(workdir: Path, chunks: list[str], max_devices: int) -> dict:
    """The obvious way: pandas groupby-rolling, merges, ``IsolationForest.score_samples``, ``to_sql``."""
    import sqlalchemy as sa

    model: FleetAnomalyModel = pd.read_pickle(workdir / "model.pkl")
    spec = model.spec
    day_start = pd.Timestamp(DAY, tz="UTC")
    parts, devices = [], 0
    for chunk in chunks:  # only as many chunks as the reference's devices need
        if devices >= max_devices:
            break
        parts.append(pd.read_parquet(chunk))
        devices += parts[-1]["device_id"].nunique()
    frame = pd.concat(parts)
    frame = frame.loc[frame["device_id"].isin(frame["device_id"].unique()[:max_devices])]
    seconds = dict.fromkeys(STAGES, 0.0)

    clock = time.perf_counter()
    frame = frame.sort_values(["device_id", "timestamp"]).reset_index(drop=True)
    grouped = frame.set_index("timestamp").groupby("device_id")
    features = frame.copy()
    for metric in spec.metrics:
        features[f"{metric}__delta"] = frame.groupby("device_id")[metric].diff()
        for window in spec.windows:
            rolling = grouped[metric].rolling(window)
            features[f"{metric}__dev_{window}"] = frame[metric].to_numpy() - rolling.mean().to_numpy()
            features[f"{metric}__std_{window}"] = rolling.std().to_numpy()
    features["hour_sin"] = np.sin(2 * np.pi * features["timestamp"].dt.hour / 24)
    features["hour_cos"] = np.cos(2 * np.pi * features["timestamp"].dt.hour / 24)
    features["missing_metrics"] = frame[list(spec.metrics)].isna().sum(axis=1).astype(float)
    features["gap_minutes"] = frame.groupby("device_id")["timestamp"].diff().dt.total_seconds() / 60
    features = features.loc[features["timestamp"] >= day_start].reset_index(drop=True)
    seconds["features"] = time.perf_counter() - clock

    clock = time.perf_counter()
    matrix = model.model_matrix(features)  # cohort z-scores and baselines, as stored in the model
    seconds["cohort_features"] = time.perf_counter() - clock

    clock = time.perf_counter()
    scores = -model.forest.score_samples(matrix)
    seconds["score"] = time.perf_counter() - clock

    clock = time.perf_counter()
    events = features[["device_id", "timestamp"]].assign(score=scores).loc[scores > model.threshold]
    engine = sa.create_engine(f"sqlite:///{workdir / 'reference.db'}")
    events.to_sql("anomaly_events", engine, if_exists="replace", index=False)
    seconds["persist"] = time.perf_counter() - clock
    return {"rows": len(features), "seconds": seconds, "peak_mb": _peak_mb()}


def _child(kind: str, workdir: Path, payload: dict) -> dict:
    command = [sys.executable, "-m", "anomaly_assets.benchmark", kind, str(workdir), json.dumps(payload)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(f"benchmark step {kind} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


@dataclasses.dataclass
class BenchReport:
    devices: int
    rows: int
    fast: dict
    reference: dict
    training: dict
    machine: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_benchmark(devices: int, chunk_devices: int, reference_devices: int, train_devices: int, progress=print) -> BenchReport:
    with tempfile.TemporaryDirectory(prefix="anomaly_bench_") as tmp:
        workdir = Path(tmp)
        progress(f"generating {devices} devices x 2 days and {train_devices} devices x 7 training days (not timed)")
        prepared = prepare(workdir, devices, chunk_devices, train_devices)
        progress("training on 7 days")
        training = _child("train", workdir, {})
        progress(f"fast path over {len(prepared['chunks'])} chunk(s) of {chunk_devices} devices")
        fast = _child("fast", workdir, {"chunks": prepared["chunks"]})
        progress(f"naive reference on {min(devices, reference_devices)} devices")
        reference = _child("reference", workdir, {"chunks": prepared["chunks"], "max_devices": reference_devices})
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return BenchReport(devices, fast["rows"], fast, reference, training, machine)


def format_report(report: BenchReport) -> str:
    fast, reference = report.fast, report.reference
    lines = [
        f"{report.devices:,} devices, {report.rows:,} rows scored ({report.machine})",
        f"{'stage':<16}{'fast s':>9}{'fast rows/s':>14}{'naive rows/s':>14}{'speed-up':>10}",
    ]
    for stage in STAGES:
        fast_s, naive_s = fast["seconds"][stage], reference["seconds"].get(stage, 0.0)
        fast_rate = fast["rows"] / fast_s if fast_s else float("inf")
        naive_rate = reference["rows"] / naive_s if naive_s else float("nan")
        ratio = f"{fast_rate / naive_rate:>9.1f}x" if naive_s else f"{'-':>10}"
        lines.append(f"{stage:<16}{fast_s:>9.2f}{fast_rate:>14,.0f}{naive_rate:>14,.0f}{ratio}")
    fast_total, naive_total = sum(fast["seconds"].values()), sum(reference["seconds"].values())
    fast_rate, naive_rate = fast["rows"] / fast_total, reference["rows"] / naive_total
    lines += [
        f"{'end to end':<16}{fast_total:>9.2f}{fast_rate:>14,.0f}{naive_rate:>14,.0f}{fast_rate / naive_rate:>9.1f}x",
        f"peak memory: fast {fast['peak_mb']:,.0f} MB, naive {reference['peak_mb']:,.0f} MB",
        f"training on 7 days ({report.training['training_rows']:,} rows): {report.training['training_seconds']:.1f} s",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # a child step: python -m anomaly_assets.benchmark KIND WORKDIR PAYLOAD
    kind, workdir, payload = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    if kind == "train":
        out = train(workdir)
    elif kind == "fast":
        out = run_fast(workdir, payload["chunks"])
    else:
        out = run_reference(workdir, payload["chunks"], payload["max_devices"])
    print(json.dumps(out))
