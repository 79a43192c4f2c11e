"""One day of N devices scored by device_range_scoring_job in one process against two local
Celery workers, measured in the same run.

    python benchmarks/bench_celery_ranges.py                       # 10,000 devices, ranges of 5,000
    python benchmarks/bench_celery_ranges.py --devices 20000

First, not measured: the day's telemetry written as files, a champion trained on 100 devices x 7
days (as benchmarks/bench_asset_memory.py does), and the day's device_features materialized.
Then the job scores the day twice: (a) in one process (the in-process executor: the ranges one
after another), (b) on the Celery executor with two workers of one pool process each (Redis at
ANOMALY_ASSETS_TEST_REDIS_URL, default redis://127.0.0.1:6379/11). Wall time is the whole
command's, from its start to its exit (imports included, as a user waits for them); peak memory
is each process's VmHWM: the one process of (a), each worker's pool process and the run's
coordinating process of (b). The scored partition and its results-database rows must hash the
same after both.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_asset_memory import DAY, LOOKBACK_DAY, _settings, measure_step, prepare  # noqa: E402

BROKER = os.environ.get("ANOMALY_ASSETS_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
PREPARATION = [("raw_telemetry", LOOKBACK_DAY), ("validated_telemetry", LOOKBACK_DAY), ("raw_telemetry", DAY),
               ("validated_telemetry", DAY), ("device_features", DAY)]  # fmt: skip
RUN_COLUMNS = ("id", "written_at", "created_at", "run_id", "scored_at")


def environment(home: Path, devices_per_chunk: int, devices_per_range: int, executor: str) -> dict[str, str]:
    """The settings of ``_settings`` as the environment of a subprocess that imports this checkout."""
    from anomaly_assets.settings import export_to_environment

    saved = dict(os.environ)
    try:
        export_to_environment(_settings(home, devices_per_chunk))
        env = dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {
        **env,
        "PYTHONPATH": str(REPO),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # dagster-celery runs `celery`
        "ANOMALY_ASSETS_DEVICES_PER_RANGE": str(devices_per_range),
        "ANOMALY_ASSETS_EXECUTOR": executor,
        "ANOMALY_ASSETS_CELERY_BROKER": BROKER,
        "ANOMALY_ASSETS_CELERY_BACKEND": BROKER,
    }


def run_job_in_this_process() -> None:
    """(a): the job on the in-process executor, in this process (a child of the benchmark's)."""
    import logging

    import dagster as dg

    for noisy in ("mlflow", "alembic", "dagster"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from anomaly_assets.definitions import defs

    result = defs.resolve_job_def("device_range_scoring_job").execute_in_process(
        instance=dg.DagsterInstance.get(), partition_key=DAY, raise_on_error=True
    )
    assert result.success


def timed(command: list[str], env: dict[str, str], log: Path) -> dict:
    """Seconds ``command`` took, start to exit, and its peak resident memory: its VmHWM, read
    until it exits (rusage would not do: a child's maxrss starts at its parent's, this
    benchmark's); its output goes to ``log``."""
    started = time.perf_counter()
    peak_mb = 0.0
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        while process.poll() is None:
            peak_mb = max(peak_mb, peak_mb_of(process.pid))
            time.sleep(0.1)
    seconds = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed:\n{log.read_text()[-4000:]}")
    return {"seconds": seconds, "peak_mb": peak_mb}


def peak_mb_of(pid: int) -> float:
    """A live process's VmHWM (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return max((int(line.split()[1]) / 1024.0 for line in status.splitlines() if line.startswith("VmHWM:")), default=0.0)


def peak_mb_of_group(leader: int) -> float:
    """The largest VmHWM among the live processes of ``leader``'s process group (a worker's pool
    process: the one that runs the steps)."""
    peaks = [0.0]
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getpgid(int(entry.name)) == leader:
                peaks.append(peak_mb_of(int(entry.name)))
        except OSError:  # gone meanwhile
            continue
    return max(peaks)


def step_seconds(home: Path) -> dict[str, float]:
    """Each step's duration in the latest run of the job, as Dagster recorded it."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    [run] = instance.get_runs(filters=dg.RunsFilter(job_name="device_range_scoring_job"), limit=1)
    return {
        record.dagster_event.step_key: record.dagster_event.event_specific_data.duration_ms / 1000.0
        for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
    }


def scored_hashes(home: Path) -> dict[str, int]:
    """A content hash of the day's scored partition and of its results-database rows (the
    columns each run writes itself left out), rows in a fixed order."""
    import pandas as pd

    from anomaly_assets.resources.results_store import ResultsDatabase

    database = ResultsDatabase(f"sqlite:///{home / 'results.db'}")
    frames = {
        "scored_anomalies": pd.read_parquet(home / "parquet" / "scored_anomalies" / f"{DAY}.parquet"),
        **{
            table: database.read_frame(f"SELECT * FROM {table} WHERE partition_date = :day", {"day": DAY})
            for table in ("anomaly_events", "device_daily_summary")
        },
    }
    hashes = {}
    for name, frame in frames.items():
        frame = frame.drop(columns=[c for c in RUN_COLUMNS if c in frame])
        frame = frame.sort_values([c for c in ("device_id", "timestamp") if c in frame], ignore_index=True)
        hashes[name] = int(pd.util.hash_pandas_object(frame, index=False).sum())
    return hashes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--devices-per-chunk", type=int, default=1_000)
    parser.add_argument("--devices-per-range", type=int, default=5_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.in_process:
        run_job_in_this_process()
        return 0

    from anomaly_assets_tests.dagster_processes import two_celery_workers

    with tempfile.TemporaryDirectory(prefix="anomaly_celery_ranges_") as tmp:
        print(f"preparing {args.devices:,} devices' features of {DAY} and a champion (not measured)", file=sys.stderr)
        home = prepare(Path(tmp), args.devices, args.devices_per_chunk)
        for asset, day in PREPARATION:
            measure_step(home, args.devices_per_chunk, asset, day)

        print("(a) one process", file=sys.stderr)
        env = environment(home, args.devices_per_chunk, args.devices_per_range, "in_process")
        one = timed([sys.executable, __file__, "--in-process"], env, Path(tmp) / "one_process.log")
        one["step_seconds"] = step_seconds(home)
        one_hashes = scored_hashes(home)

        print("(b) two Celery workers", file=sys.stderr)
        import redis

        redis.Redis.from_url(BROKER).flushdb()
        env = environment(home, args.devices_per_chunk, args.devices_per_range, "celery")
        command = [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m", "anomaly_assets.definitions",
                   "-j", "device_range_scoring_job", "--tags", json.dumps({"dagster/partition": DAY})]  # fmt: skip
        with two_celery_workers(Path(tmp), env) as workers:
            run = timed(command, env, Path(tmp) / "celery.log")
            celery = {"seconds": run["seconds"], "coordinator_peak_mb": run["peak_mb"]}
            celery["worker_peak_mb"] = [peak_mb_of_group(w.pid) for w in workers]
        celery["step_seconds"] = step_seconds(home)
        identical = scored_hashes(home) == one_hashes

    report = {
        "devices": args.devices,
        "devices_per_chunk": args.devices_per_chunk,
        "devices_per_range": args.devices_per_range,
        # a range is a whole number of chunks
        "ranges": math.ceil(args.devices / (math.ceil(args.devices_per_range / args.devices_per_chunk) * args.devices_per_chunk)),
        "one_process": one,
        "celery_two_workers": celery,
        "time_ratio": celery["seconds"] / one["seconds"],
        "identical_rows": identical,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.devices:,} devices, one day; {report['ranges']} ranges of {args.devices_per_range:,} devices "
              f"in chunks of {args.devices_per_chunk:,}; {os.cpu_count()} cores")  # fmt: skip
        print(f"(a) one process:        {one['seconds']:6.1f} s   peak {one['peak_mb']:,.0f} MB")
        peaks = ", ".join(f"{mb:,.0f}" for mb in celery["worker_peak_mb"])
        print(f"(b) two Celery workers: {celery['seconds']:6.1f} s   peak per worker {peaks} MB; "
              f"the run's coordinating process {celery['coordinator_peak_mb']:,.0f} MB")  # fmt: skip
        for name, figures in (("(a)", one), ("(b)", celery)):
            print(f"    steps {name}: " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in figures["step_seconds"].items()))
        print(f"time (b)/(a): {report['time_ratio']:.2f}x; rows identical by hash: {'yes' if identical else 'NO'}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
