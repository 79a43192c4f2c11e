"""Peak memory and time of the Dagster partition path, by step, in chunks of devices against the
whole partition in memory, measured in the same run.

    python benchmarks/bench_asset_memory.py                        # 20,000 devices, chunks of 1,000
    python benchmarks/bench_asset_memory.py --devices 100000 --skip-whole

The telemetry is a files source (ANOMALY_ASSETS_SOURCE=files): synthetic parquet files written
first, not measured, that the source streams 50,000 rows at a time, as a database would be
read. A champion is trained on 100 devices x 7 days of it. Then the scored day and its lookback
day are materialized for N devices, each asset step in a process of its own, as the
multiprocess executor runs them, so each step's peak resident memory (VmHWM) is its own:
raw_telemetry and validated_telemetry of both days, then device_features, scored_anomalies,
feature_drift and device_incidents of the scored day. The same steps run twice, with
ANOMALY_ASSETS_DEVICES_PER_CHUNK at the chunk size and at the fleet size (one chunk: the whole
partition in memory), and the table gives both and their ratio. ``imports`` is a step that only
loads the code location: the floor every step stands on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomaly_assets.bench_asset_path import DAY, LOOKBACK_DAY, TRAINING_DEVICES, files_source_settings, write_source  # noqa: E402

STEPS = [
    ("imports", DAY),
    ("raw_telemetry", LOOKBACK_DAY),
    ("validated_telemetry", LOOKBACK_DAY),
    ("raw_telemetry", DAY),
    ("validated_telemetry", DAY),
    ("device_features", DAY),
    ("scored_anomalies", DAY),
    ("feature_drift", DAY),
    ("device_incidents", DAY),
]


def _settings(home: Path, devices_per_chunk: int):
    return files_source_settings(home.parent, devices_per_chunk)


def train_champion(home: Path, devices_per_chunk: int) -> None:
    import datetime as dt
    import logging

    import dagster as dg

    from anomaly_assets.demo import QUIET, partition_range_tags
    from anomaly_assets.settings import export_to_environment, prepare_embedded_home

    for noisy in ("mlflow", "alembic", "dagster"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    settings = _settings(home, devices_per_chunk)
    export_to_environment(settings)
    prepare_embedded_home(settings)
    from anomaly_assets.definitions import build_definitions

    defs = build_definitions(settings)
    first = settings.start_date
    last = first + dt.timedelta(days=settings.training_days - 1)
    instance = dg.DagsterInstance.get()
    for job, tags, key in (("telemetry_job", partition_range_tags(first, last), None), ("training_job", {}, last.isoformat())):
        result = defs.resolve_job_def(job).execute_in_process(instance=instance, run_config=QUIET, tags=tags, partition_key=key)
        assert result.success, job


def prepare(directory: Path, devices: int, devices_per_chunk: int) -> Path:
    """The source files under ``directory`` and a champion trained on them; returns the home.
    This process's environment is left as it was."""
    home = directory / "home"
    write_source(directory / "source", devices)
    saved = dict(os.environ)
    try:
        train_champion(home, devices_per_chunk)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return home


def _peak_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def run_step(home: Path, devices_per_chunk: int, asset: str, day: str) -> dict:
    """One asset step for one partition, in this process (a child of the coordinating one)."""
    import logging

    from anomaly_assets.settings import export_to_environment

    for noisy in ("mlflow", "alembic", "dagster"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    settings = _settings(home, devices_per_chunk)
    export_to_environment(settings)
    import dagster as dg

    from anomaly_assets.definitions import build_definitions

    defs = build_definitions(settings)
    started = time.perf_counter()
    if asset != "imports":
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=dg.DagsterInstance.get(), partition_key=day, asset_selection=[dg.AssetKey(asset)], raise_on_error=True
        )
        assert result.success
    return {"seconds": time.perf_counter() - started, "peak_mb": _peak_mb()}


def measure_step(home: Path, devices_per_chunk: int, asset: str, day: str) -> dict:
    """``run_step`` in a process of its own: its peak memory is the step's alone."""
    command = [sys.executable, __file__, "--step", asset, "--day", day, "--home", str(home)]
    command += ["--devices-per-chunk", str(devices_per_chunk)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"step {asset} {day} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--devices-per-chunk", type=int, default=1_000)
    parser.add_argument("--skip-whole", action="store_true", help="skip the one-chunk reference (large fleets)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--day", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        print(json.dumps(run_step(Path(args.home), args.devices_per_chunk, args.step, args.day)))
        return 0

    configurations = {"chunks": args.devices_per_chunk}
    if not args.skip_whole:
        configurations["whole"] = max(args.devices, 1)
    with tempfile.TemporaryDirectory(prefix="anomaly_asset_memory_") as tmp:
        print(f"writing the source files and training a champion on {TRAINING_DEVICES} devices x 7 days (not measured)", file=sys.stderr)
        home = prepare(Path(tmp), args.devices, args.devices_per_chunk)
        figures: dict[str, list[dict]] = {}
        for name, devices_per_chunk in configurations.items():
            figures[name] = []
            for asset, day in STEPS:
                print(f"{name}: {asset} {day}", file=sys.stderr)
                figures[name].append({"step": asset, "day": day, **measure_step(home, devices_per_chunk, asset, day)})
    report = {"devices": args.devices, "devices_per_chunk": args.devices_per_chunk, "steps": figures}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.devices:,} devices x 2 days from a files source, {os.cpu_count()} cores; each step in its own process")
    header = f"{'step':<22}{'day':<12}{'chunks of ' + format(args.devices_per_chunk, ','):>22}"
    header += f"{'one chunk':>22}{'memory ratio':>14}" if "whole" in figures else ""
    print(header)
    print(f"{'':<34}{'peak MB':>11}{'seconds':>11}" + (f"{'peak MB':>11}{'seconds':>11}" if "whole" in figures else ""))
    for index, (asset, day) in enumerate(STEPS):
        chunked = figures["chunks"][index]
        line = f"{asset:<22}{day:<12}{chunked['peak_mb']:>11,.0f}{chunked['seconds']:>11.1f}"
        if "whole" in figures:
            whole = figures["whole"][index]
            line += f"{whole['peak_mb']:>11,.0f}{whole['seconds']:>11.1f}{whole['peak_mb'] / chunked['peak_mb']:>13.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
