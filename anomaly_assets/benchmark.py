"""``anomaly-assets bench``: the partition path end to end on a synthetic fleet, against a naive
reference pipeline measured in the same run.

The parent process generates the data (not timed) into parquet files, one per chunk of devices,
then runs each pipeline in a child process, so each child's peak memory is the pipeline's own.
The fast path's child coordinates worker processes that take chunks of devices from a queue and
run them through the same core functions the assets call; it writes the results database
itself. Its peak memory depends on the chunk size and the number of workers, not on the fleet
size.
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
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

# The pipeline's modules are imported where they are used: the coordinating process of the fast
# path only writes the results database, and its memory counts in the measured peak.
if TYPE_CHECKING:
    from anomaly_assets.core.detector import FleetAnomalyModel
    from anomaly_assets.core.features import FeatureSpec

DAY = dt.date(2026, 11, 9)
STAGES = ("read", "validate", "features", "cohort_features", "score", "explain", "persist")


def _spec() -> FeatureSpec:
    from anomaly_assets.core import generator
    from anomaly_assets.core.features import FeatureSpec

    return FeatureSpec(generator.METRICS, generator.COHORT_COLUMNS, label_columns=generator.LABEL_COLUMNS)


def _contract():
    from anomaly_assets.resources.telemetry_source import SyntheticFleetSource

    return SyntheticFleetSource().contract()


def prepare(workdir: Path, devices: int, chunk_devices: int, train_devices: int) -> dict:
    """Generate the scored day and its previous day per device chunk, and a 7-day training set."""
    from anomaly_assets.core import generator

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
    """This process's peak resident memory. On Linux the high-water mark of its own address
    space (``VmHWM``): ``ru_maxrss`` survives ``exec`` and would count the parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train(workdir: Path) -> dict:
    from anomaly_assets.core.baselines import fit_baselines
    from anomaly_assets.core.cohorts import fit_cohort_stats
    from anomaly_assets.core.detector import DetectorConfig, fit_slice, train_detector
    from anomaly_assets.core.features import build_device_features

    started = time.perf_counter()
    telemetry = pd.read_parquet(workdir / "training.parquet")
    spec = _spec()
    features = build_device_features(telemetry, spec)
    fit_rows = fit_slice(features)  # as the training assets fit them
    stats = fit_cohort_stats(fit_rows, spec.metrics, spec.cohort_columns)
    base = fit_baselines(fit_rows, spec.metrics, spec.cohort_columns)
    model, _ = train_detector(features, stats, base, spec, DetectorConfig())
    seconds = time.perf_counter() - started
    pd.to_pickle(model, workdir / "model.pkl")
    return {"training_rows": len(telemetry), "training_seconds": seconds, "peak_mb": _peak_mb()}


def _process_chunk(model: FleetAnomalyModel, contract, chunk: str, scored_path: Path) -> tuple[dict, int, pd.DataFrame, pd.DataFrame]:
    """One chunk of devices through the partition path, up to the results-database write."""
    from anomaly_assets.core.features import build_daily_features
    from anomaly_assets.core.scoring import daily_device_summary
    from anomaly_assets.core.validation import validate_telemetry

    spec = model.spec
    day_start = pd.Timestamp(DAY, tz="UTC")
    seconds = dict.fromkeys(STAGES, 0.0)

    clock = time.perf_counter()
    frame = pd.read_parquet(chunk)  # the day and the day before, as the asset's partition mapping loads them
    seconds["read"] = time.perf_counter() - clock

    clock = time.perf_counter()
    day_mask = (frame["timestamp"] >= day_start).to_numpy()
    validated = validate_telemetry(_rows(frame, day_mask), contract, day_start, day_start + pd.Timedelta(days=1)).valid
    seconds["validate"] = time.perf_counter() - clock
    rows = len(validated)

    clock = time.perf_counter()
    telemetry = pd.concat([_rows(frame, ~day_mask), validated])
    del frame, validated  # free each frame as soon as the next stage has what it needs: peak memory
    features = build_daily_features(telemetry, spec, [day_start])  # what the device_features asset calls
    del telemetry
    seconds["features"] = time.perf_counter() - clock

    clock = time.perf_counter()
    cohorts = model.cohorts(features)  # as FleetAnomalyModel.score, the asset's call, shares them
    inputs = model.model_inputs(features, cohorts)  # the forest's matrix and the device matrix
    seconds["cohort_features"] = time.perf_counter() - clock

    clock = time.perf_counter()
    scores = model.raw_scores(inputs)  # every ensemble member, fused
    seconds["score"] = time.perf_counter() - clock

    clock = time.perf_counter()
    scored = model.score_from(features, inputs, scores, cohorts).assign(
        model_name="bench", model_version="1", partition_date=DAY.isoformat()
    )
    seconds["explain"] = time.perf_counter() - clock
    del features, inputs, cohorts

    clock = time.perf_counter()
    scored.to_parquet(scored_path, index=False)
    events, summary = scored.loc[scored["is_anomaly"]], daily_device_summary(scored)
    seconds["persist"] = time.perf_counter() - clock
    return seconds, rows, events, summary


def _rows(frame: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    """``frame.loc[mask]``; a slice when the rows are one contiguous run (the chunk file holds the
    day before, then the day), which shares the columns instead of copying them."""
    positions = np.flatnonzero(mask)
    if len(positions) and positions[-1] - positions[0] + 1 == len(positions):
        return frame.iloc[positions[0] : positions[-1] + 1]
    return frame.loc[mask]


def _warm_up(model: FleetAnomalyModel, contract, chunk: str, workdir: Path) -> None:
    """Process start-up, not throughput: the chunk path once on both days of a few devices loads
    the GX context, the compiled kernels and pandas' first calls."""
    few = workdir / f"warm-up-{os.getpid()}.parquet"
    frame = pd.read_parquet(chunk)
    frame.loc[frame["device_id"].isin(frame["device_id"].unique()[:20])].to_parquet(few, index=False)
    scored = few.with_suffix(".scored.parquet")
    _process_chunk(model, contract, str(few), scored)
    few.unlink()
    scored.unlink()


def _worker(workdir: str, chunks: list[str], tasks, results, go) -> None:
    """A worker process: warm up, say so, wait for the start, then take chunks until told to stop."""
    model: FleetAnomalyModel = pd.read_pickle(Path(workdir) / "model.pkl")
    contract = _contract()
    _warm_up(model, contract, chunks[0], Path(workdir))
    results.put(("ready", None))
    go.wait()
    while (index := tasks.get()) is not None:
        seconds, rows, events, summary = _process_chunk(
            model, contract, chunks[index], Path(workdir) / f"scored{index:04d}.parquet"
        )
        results.put(("chunk", (index, seconds, rows, events, summary)))
    results.put(("done", _peak_mb()))


def run_fast(workdir: Path, chunks: list[str], workers: int = 1) -> dict:
    """The fast path over every chunk with ``workers`` processes; this process writes the results
    database (SQLite takes one writer), chunk by chunk into the day's partition, as chunks arrive.

    Stage seconds are summed over the workers (busy time per stage: its rows/s is per core); the
    end-to-end seconds are wall-clock, from the start signal to the last chunk committed.
    """
    import multiprocessing

    from anomaly_assets.resources.results_store import ResultsStore, anomaly_events, device_daily_summary

    context = multiprocessing.get_context("spawn")
    tasks, results, go = context.Queue(), context.Queue(), context.Event()
    processes = [
        context.Process(target=_worker, args=(str(workdir), chunks, tasks, results, go), daemon=True)
        for _ in range(max(1, workers))
    ]
    for process in processes:
        process.start()
    for index in range(len(chunks)):
        tasks.put(index)
    for _ in processes:
        tasks.put(None)
    store = ResultsStore(url=f"sqlite:///{workdir / 'fast.db'}")
    with store.engine.begin() as connection:  # the day's partition starts empty, before the clock
        for table in (anomaly_events, device_daily_summary):
            connection.execute(table.delete().where(table.c.partition_date == DAY.isoformat()))
    ready = 0
    while ready < len(processes):
        kind, _ = _next_result(results, processes)
        ready += kind == "ready"

    seconds = dict.fromkeys(STAGES, 0.0)
    rows, done, worker_peaks = 0, 0, []
    started = time.perf_counter()
    go.set()
    while done < len(processes):
        kind, payload = _next_result(results, processes)
        if kind == "done":
            done += 1
            worker_peaks.append(payload)
            continue
        _index, chunk_seconds, chunk_rows, events, summary = payload
        clock = time.perf_counter()
        with store.engine.begin() as connection:  # append chunk by chunk into the day's partition
            store.insert(connection, anomaly_events, events)
            store.insert(connection, device_daily_summary, summary)
        chunk_seconds["persist"] += time.perf_counter() - clock
        for stage, value in chunk_seconds.items():
            seconds[stage] += value
        rows += chunk_rows
    wall = time.perf_counter() - started
    for process in processes:
        process.join()
    # Peak memory of the run: every worker's peak plus this process's (an upper bound: the peaks
    # need not coincide).
    return {
        "rows": rows,
        "seconds": seconds,
        "wall_seconds": wall,
        "workers": len(processes),
        "peak_mb": sum(worker_peaks) + _peak_mb(),
        "worker_peak_mb": worker_peaks,
    }


def _next_result(results, processes) -> tuple[str, object]:
    import queue

    while True:
        try:
            return results.get(timeout=5)
        except queue.Empty:
            dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a benchmark worker died (exit code {dead[0]}); see its error above") from None


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
    # Cohort z-scores and baselines as DataFrames concatenated column-wise, then the model's columns
    # selected and imputed: the pandas way (the compiled path writes the row-major matrix directly).
    from anomaly_assets.core.ensemble import level_columns, robust_z_scores
    from anomaly_assets.core.model import _model_frame

    values = _model_frame(features, spec, model.cohort_stats, model.baselines)[model.feature_columns].to_numpy(dtype=np.float64)
    matrix = np.where(np.isnan(values), model.medians[None, :], values)

    device = model.model_inputs(features).device  # the ensemble's device matrix, as the fast path builds it
    seconds["cohort_features"] = time.perf_counter() - clock

    clock = time.perf_counter()
    # scikit-learn's forest for the forest member; the other members and the fusion as the model has them.
    members = {
        "forest": lambda: -model.forest.score_samples(matrix),
        "reconstruction": lambda: model.reconstruction.scores(device),
        "robust_z": lambda: robust_z_scores(device, level_columns(model.device_columns)),
    }
    scores = model.fusion.fuse(np.column_stack([members[m]() for m in model.members]))
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
    single: dict  # the fast path in one worker: per-stage busy seconds without a second process beside it
    fast: dict  # the fast path with every worker: the end-to-end figure
    reference: dict
    scoring_model: dict  # the fast path's model, fitted in core on a small window: setup, not the training figure
    machine: str
    training: dict | None = None  # training_job through the assets (bench_training), when asked for
    asset_path: dict | None = None  # scoring_job through the assets for the same day (bench_asset_path)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_benchmark(
    devices: int,
    chunk_devices: int,
    reference_devices: int,
    train_devices: int,
    workers: int = 2,
    progress=print,
    training_devices: int = 0,
    training_days: int = 7,
    asset_path: bool = False,
) -> BenchReport:
    with tempfile.TemporaryDirectory(prefix="anomaly_bench_") as tmp:
        workdir = Path(tmp)
        progress(f"generating {devices} devices x 2 days and {train_devices} devices x 7 training days (not timed)")
        prepared = prepare(workdir, devices, chunk_devices, train_devices)
        progress("fitting the fast path's model on 7 days")
        scoring_model = _child("train", workdir, {})
        chunks = prepared["chunks"]
        progress(f"fast path over {len(chunks)} chunk(s) of {chunk_devices} devices, 1 worker (the per-stage table)")
        single = _child("fast", workdir, {"chunks": chunks, "workers": 1})
        fast = single
        if workers > 1:
            progress(f"fast path with {workers} workers (end to end)")
            fast = _child("fast", workdir, {"chunks": chunks, "workers": workers})
        progress(f"naive reference on {min(devices, reference_devices)} devices")
        reference = _child("reference", workdir, {"chunks": chunks, "max_devices": reference_devices})
        assets = None
        if asset_path:
            from anomaly_assets.bench_asset_path import measure_asset_path

            progress(f"scoring_job through the assets for {devices} devices (preparation not timed)")
            assets = measure_asset_path(devices, workdir / "asset_path")
        training = None
        if training_devices:
            from anomaly_assets.bench_training import measure_training

            training = measure_training(workdir, training_devices, training_days, progress=progress)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return BenchReport(devices, fast["rows"], single, fast, reference, scoring_model, machine, training, assets)


def format_report(report: BenchReport) -> str:
    single, fast, reference = report.single, report.fast, report.reference
    lines = [
        f"{report.devices:,} devices, {report.rows:,} rows scored ({report.machine})",
        "per stage: the fast path in one worker process against the naive reference, both on one core",
        f"{'stage':<16}{'fast s':>9}{'fast rows/s':>14}{'naive rows/s':>14}{'speed-up':>10}",
    ]
    for stage in STAGES:
        fast_s, naive_s = single["seconds"][stage], reference["seconds"].get(stage, 0.0)
        fast_rate = single["rows"] / fast_s if fast_s else float("inf")
        naive_rate = reference["rows"] / naive_s if naive_s else float("nan")
        ratio = f"{fast_rate / naive_rate:>9.1f}x" if naive_s else f"{'-':>10}"
        lines.append(f"{stage:<16}{fast_s:>9.2f}{fast_rate:>14,.0f}{naive_rate:>14,.0f}{ratio}")
    naive_rate = reference["rows"] / sum(reference["seconds"].values())
    for label, run in (("end to end, 1 worker", single), (f"end to end, {fast['workers']} workers", fast)):
        if label.endswith("workers") and run is single:
            continue
        rate = run["rows"] / run["wall_seconds"]
        lines.append(f"{label:<26}{run['wall_seconds']:>9.2f} s {rate:>11,.0f} rows/s {rate / naive_rate:>6.1f}x the naive reference")
    lines += [
        f"naive reference end to end: {naive_rate:,.0f} rows/s",
        f"peak memory, all processes: fast {fast['peak_mb']:,.0f} MB with {fast['workers']} worker(s)"
        + (f" ({single['peak_mb']:,.0f} MB with 1)" if fast is not single else "")
        + f"; naive {reference['peak_mb']:,.0f} MB",
    ]
    if report.asset_path:
        from anomaly_assets.bench_asset_path import format_asset_path

        ratio = report.asset_path["wall_seconds"] / fast["wall_seconds"]
        lines += format_asset_path(report.asset_path)
        lines.append(f"the scoring job through the assets takes {ratio:.1f}x the fast path's end-to-end wall time")
    if report.training:
        from anomaly_assets.bench_training import format_training

        lines += format_training(report.training)
    return "\n".join(lines)


if __name__ == "__main__":  # a child step: python -m anomaly_assets.benchmark KIND WORKDIR PAYLOAD
    kind, workdir, payload = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    if kind == "train":
        out = train(workdir)
    elif kind == "fast":
        out = run_fast(workdir, payload["chunks"], payload["workers"])
    else:
        out = run_reference(workdir, payload["chunks"], payload["max_devices"])
    print(json.dumps(out))
