"""Training through the Dagster assets, as ``training_job`` runs it: the figure ``anomaly-assets
bench --training-devices N --training-days D`` reports.

Preparation is not timed: a child process materializes ``telemetry_job`` (raw telemetry,
validation, features) for each of the D days of an N-device synthetic fleet into a fresh home,
one run a day as the daily schedule leaves them. Then another child process runs ``training_job``
for the window's last day (cohort_stats, baselines, anomaly_detector registered in MLflow,
model_promotion), in-process so its peak resident memory (VmHWM) is the run's: steps in sequence,
each reading the window a chunk of devices at a time. Per-step seconds come from the run's event log.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

START = dt.date(2026, 11, 1)


def _settings(home: Path, devices: int, days: int, devices_per_chunk: int):
    from anomaly_assets.settings import Settings

    return Settings(
        home=home, start_date=START, training_days=days, fleet_devices=devices, devices_per_chunk=devices_per_chunk
    )


def _definitions(home: Path, devices: int, days: int, devices_per_chunk: int):
    """The code location for ``home``: settings exported first, because the partitions definition
    and the training window mapping read them at import."""
    from anomaly_assets.bench_asset_path import enter

    settings = enter(_settings(home, devices, days, devices_per_chunk))
    from anomaly_assets.definitions import build_definitions

    return build_definitions(settings)


def prepare_features(home: Path, devices: int, days: int, devices_per_chunk: int) -> dict:
    """telemetry_job for each of the window's days, as the daily runs leave them (not timed)."""
    import dagster as dg

    from anomaly_assets.demo import QUIET

    defs = _definitions(home, devices, days, devices_per_chunk)
    job, instance = defs.resolve_job_def("telemetry_job"), dg.DagsterInstance.get()
    for offset in range(days):
        day = (START + dt.timedelta(days=offset)).isoformat()
        if not job.execute_in_process(instance=instance, run_config=QUIET, partition_key=day).success:
            raise RuntimeError(f"telemetry_job failed for {day} while preparing the training window")
    return {"days": days}


def run_training(home: Path, devices: int, days: int, devices_per_chunk: int) -> dict:
    """training_job for the window's last day, timed, in this process."""
    import dagster as dg

    from anomaly_assets.bench_asset_path import step_seconds
    from anomaly_assets.benchmark import _peak_mb
    from anomaly_assets.demo import QUIET

    defs = _definitions(home, devices, days, devices_per_chunk)
    last = (START + dt.timedelta(days=days - 1)).isoformat()
    instance = dg.DagsterInstance.get()
    started = time.perf_counter()
    result = defs.resolve_job_def("training_job").execute_in_process(instance=instance, run_config=QUIET, partition_key=last)
    wall = time.perf_counter() - started
    if not result.success:
        raise RuntimeError("training_job failed")
    return {
        "devices": devices,
        "days": days,
        "rows": int(_materialized(result, "cohort_stats", "training_rows")),
        "wall_seconds": wall,
        "step_seconds": step_seconds(instance, result.run_id),
        "peak_mb": _peak_mb(),
        "model_version": str(_materialized(result, "anomaly_detector", "model_version")),
    }


def _materialized(result, asset: str, key: str):
    """A metadata value of ``asset``'s materialization in the run."""
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == asset:
            return event.materialization.metadata[key].value
    raise RuntimeError(f"training_job recorded no {asset} materialization")


def _child(kind: str, payload: dict) -> dict:
    command = [sys.executable, "-m", "anomaly_assets.bench_training", kind, json.dumps(payload)]
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    if result.returncode:
        raise RuntimeError(f"training benchmark step {kind} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_training(workdir: Path, devices: int, days: int, devices_per_chunk: int = 1_000, progress=print) -> dict:
    """Prepare the window (not timed), then train through the assets; both in child processes."""
    payload = {"home": str(workdir / "training_home"), "devices": devices, "days": days, "devices_per_chunk": devices_per_chunk}
    progress(f"materializing telemetry_job for {devices:,} devices x {days} days (not timed)")
    _child("prepare", payload)
    progress("training_job through the assets")
    return _child("train", payload)


def format_training(training: dict) -> list[str]:
    rate = training["rows"] / training["wall_seconds"]
    steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in training["step_seconds"].items())
    return [
        f"training_job through the assets, {training['devices']:,} devices x {training['days']} days "
        f"({training['rows']:,} rows): {training['wall_seconds']:.1f} s, {rate:,.0f} rows/s, peak {training['peak_mb']:,.0f} MB",
        f"  per step: {steps}",
    ]


if __name__ == "__main__":  # a child step: python -m anomaly_assets.bench_training KIND PAYLOAD
    kind, payload = sys.argv[1], json.loads(sys.argv[2])
    arguments = (Path(payload["home"]), payload["devices"], payload["days"], payload["devices_per_chunk"])
    out = prepare_features(*arguments) if kind == "prepare" else run_training(*arguments)
    print(json.dumps(out))
