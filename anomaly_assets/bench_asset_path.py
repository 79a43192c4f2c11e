"""The daily scoring job through the Dagster assets, timed as a schedule runs it.

    python -m anomaly_assets.bench_asset_path --devices 10000 --fast-path

The scored day and its lookback day of N devices are written as parquet files, a files source
(as ``benchmarks/bench_asset_memory.py`` uses) that the source streams. Untimed preparation, in
a child process: a champion trained on a small fleet's week, and the lookback day's raw and
validated telemetry (device_features reads it). Then, in another child process, ``scoring_job``
runs for the scored day through ``dagster.execute_job`` with the job's own executor (what the
daily schedule launches), and the result gives the run's wall seconds, each step's seconds (from
its start to its success in the event log) and each asset's rows.

``--fast-path`` also runs ``anomaly-assets bench``'s fast path (2 workers, chunks of 500) on
the same number of devices in the same run, for the ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

LOOKBACK_DAY, DAY = "2026-11-08", "2026-11-09"
TRAINING_DEVICES = 100
SEED = 11
ASSETS = ("raw_telemetry", "validated_telemetry", "device_features", "scored_anomalies", "feature_drift")


def measure_asset_path(devices: int, workdir: Path, devices_per_chunk: int = 1_000) -> dict:
    """Prepare (untimed) and run ``scoring_job`` for one day of ``devices`` devices under ``workdir``.

    Returns ``wall_seconds`` (the run, from launch to its end), ``step_seconds`` (step key:
    seconds), ``rows`` (asset: rows materialized), ``devices``, ``executor`` and ``workers``."""
    workdir = Path(workdir)
    write_source(workdir / "source", devices)
    _child("prepare", workdir, devices_per_chunk)
    return {"devices": devices, "devices_per_chunk": devices_per_chunk, **_child("score", workdir, devices_per_chunk)}


def format_asset_path(result: dict) -> list[str]:
    """Table lines: the run's wall time, each step's seconds, each asset's rows."""
    lines = [
        f"scoring_job through the assets: {result['devices']:,} devices, {result['rows'].get('scored_anomalies', 0):,} rows "
        f"scored, executor {result['executor']}, {result['workers']} chunk worker(s)",
        f"{'step':<34}{'seconds':>9}",
    ]
    lines += [f"{step:<34}{seconds:>9.2f}" for step, seconds in result["step_seconds"].items()]
    lines.append(f"{'run, wall':<34}{result['wall_seconds']:>9.2f}")
    lines.append("rows: " + ", ".join(f"{asset} {rows:,}" for asset, rows in result["rows"].items()))
    return lines


def files_source_settings(workdir: Path, devices_per_chunk: int):
    """A home under ``workdir`` reading the parquet files ``write_source`` leaves in ``workdir/source``."""
    from anomaly_assets.core import generator
    from anomaly_assets.settings import Settings

    mapping = {
        "cohorts": {c: c for c in generator.COHORT_COLUMNS},
        "metrics": {m: m for m in generator.METRICS},
        "label": "is_injected_anomaly",
    }
    return Settings(
        home=workdir / "home",
        devices_per_chunk=devices_per_chunk,
        source="files",
        source_glob=str(workdir / "source" / "*.parquet"),
        source_mapping=json.dumps(mapping),
    )


def write_source(directory: Path, devices: int) -> None:
    """The training week of a small fleet, and the lookback and scored days of ``devices`` devices."""
    from anomaly_assets.core import generator

    directory.mkdir(parents=True, exist_ok=True)
    training = generator.FleetConfig(n_devices=TRAINING_DEVICES, seed=SEED)
    days = [training.start_date + dt.timedelta(days=d) for d in range(7)]
    generator.generate_days(training, days).to_parquet(directory / "training.parquet", index=False)
    fleet = generator.FleetConfig(n_devices=devices, seed=SEED)
    for day in (LOOKBACK_DAY, DAY):
        generator.generate_day(fleet, dt.date.fromisoformat(day)).to_parquet(directory / f"{day}.parquet", index=False)


def _child(kind: str, workdir: Path, devices_per_chunk: int) -> dict:
    command = [sys.executable, "-m", "anomaly_assets.bench_asset_path", "--child", kind]
    command += ["--workdir", str(workdir), "--devices-per-chunk", str(devices_per_chunk)]
    # As the fast path's children: one thread per process for the numeric libraries.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(f"asset path step {kind} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def enter(settings):
    """Make this process the code location of ``settings``: quiet libraries, the settings (its
    source too) in the environment the steps build the code location from, the home prepared."""
    import logging

    from anomaly_assets.settings import export_to_environment, prepare_embedded_home

    for noisy in ("mlflow", "alembic", "dagster"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    export_to_environment(settings)
    # The source too: the run's steps build the code location from the environment.
    os.environ.update(
        {
            "ANOMALY_ASSETS_SOURCE": settings.source,
            "ANOMALY_ASSETS_SOURCE_GLOB": settings.source_glob,
            "ANOMALY_ASSETS_SOURCE_MAPPING": settings.source_mapping,
        }
    )
    os.environ["DAGSTER_HOME"] = str(prepare_embedded_home(settings))
    return settings


def _prepare(workdir: Path, devices_per_chunk: int) -> dict:
    """A champion trained on the small fleet's week; the lookback day's raw and validated telemetry."""
    import dagster as dg

    from anomaly_assets.definitions import build_definitions
    from anomaly_assets.demo import QUIET, partition_range_tags

    settings = enter(files_source_settings(workdir, devices_per_chunk))
    defs = build_definitions(settings)
    first = settings.start_date
    last = first + dt.timedelta(days=settings.training_days - 1)
    instance = dg.DagsterInstance.get()
    runs = (("telemetry_job", partition_range_tags(first, last), None), ("training_job", {}, last.isoformat()))
    for job, tags, key in runs:
        result = defs.resolve_job_def(job).execute_in_process(instance=instance, run_config=QUIET, tags=tags, partition_key=key)
        assert result.success, job
    lookback = dg.AssetSelection.assets("device_inventory", "raw_telemetry", "validated_telemetry")
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, run_config=QUIET, partition_key=LOOKBACK_DAY, asset_selection=list(lookback.resolve(defs.resolve_asset_graph()))
    )
    assert result.success, "lookback day"
    return {}


def scoring_job():
    """The code location's scoring_job, as its schedule launches it (a reconstructable target)."""
    from anomaly_assets.definitions import defs

    return defs.resolve_job_def("scoring_job")


def _score(workdir: Path, devices_per_chunk: int) -> dict:
    import dagster as dg

    from anomaly_assets import bench_asset_path
    from anomaly_assets.demo import QUIET
    from anomaly_assets.resources.chunk_pool import chunk_workers

    settings = enter(files_source_settings(workdir, devices_per_chunk))
    instance = dg.DagsterInstance.get()
    job = dg.reconstructable(bench_asset_path.scoring_job)
    executor = job.get_definition().executor_def.name
    started = time.perf_counter()
    with dg.execute_job(job, instance=instance, run_config=QUIET, tags={"dagster/partition": DAY}) as result:
        wall = time.perf_counter() - started
        if not result.success:
            raise RuntimeError(f"scoring_job failed for {DAY}")
        run_id = result.run_id
    return {
        "wall_seconds": wall,
        "step_seconds": step_seconds(instance, run_id),
        "rows": _rows(instance, run_id),
        "executor": os.environ.get("ANOMALY_ASSETS_EXECUTOR") or executor,
        "workers": chunk_workers(),
        "chunks_of": settings.devices_per_chunk,
    }


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Each step's seconds, from its start to its success in the run's event log."""
    import dagster as dg

    starts, seconds = {}, {}
    records = instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS})
    for record in records:
        key = record.dagster_event.step_key
        if record.dagster_event.event_type == dg.DagsterEventType.STEP_START:
            starts[key] = record.timestamp
        else:
            seconds[key] = record.timestamp - starts[key]
    return seconds


def _rows(instance, run_id: str) -> dict[str, int]:
    import dagster as dg

    rows = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.dagster_event.event_specific_data.materialization
        name = materialization.asset_key.to_user_string()
        count = materialization.metadata.get("dagster/row_count")
        if count is not None:
            rows[name] = int(count.value)
        elif name in ASSETS:
            rows.setdefault(name, 0)
    return rows


def _fast_path(workdir: Path, devices: int) -> dict:
    """``anomaly-assets bench``'s fast path on the same fleet size: 2 workers, chunks of 500."""
    from anomaly_assets import benchmark

    workdir.mkdir(parents=True, exist_ok=True)
    chunks = benchmark.prepare(workdir, devices, 500, 1_000)["chunks"]
    benchmark._child("train", workdir, {})
    return benchmark._child("fast", workdir, {"chunks": chunks, "workers": 2})


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--devices-per-chunk", type=int, default=1_000)
    parser.add_argument("--fast-path", action="store_true", help="also run the fast path, for the ratio")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        work = {"prepare": _prepare, "score": _score}[args.child]
        print(json.dumps(work(Path(args.workdir), args.devices_per_chunk)))
        return 0
    with tempfile.TemporaryDirectory(prefix="anomaly_asset_path_") as tmp:
        print(f"asset path: {args.devices:,} devices (preparation not timed)", file=sys.stderr)
        report = {"asset_path": measure_asset_path(args.devices, Path(tmp) / "assets", args.devices_per_chunk)}
        if args.fast_path:
            print("fast path: 2 workers, chunks of 500", file=sys.stderr)
            report["fast_path"] = _fast_path(Path(tmp) / "fast", args.devices)
    if args.json:
        print(json.dumps(report))
        return 0
    print("\n".join(format_asset_path(report["asset_path"])))
    if "fast_path" in report:
        fast = report["fast_path"]["wall_seconds"]
        ratio = report["asset_path"]["wall_seconds"] / fast
        print(f"fast path, 2 workers: {fast:.2f} s wall; the asset path takes {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
