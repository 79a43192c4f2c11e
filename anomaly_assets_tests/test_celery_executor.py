"""Integration: a run on the Celery executor (Redis broker) spreads its steps over two workers, and
device_range_scoring_job scores a day's device ranges on both."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd

from anomaly_assets.definitions import build_definitions
from anomaly_assets.settings import Settings
from anomaly_assets_tests.conftest import require_service
from anomaly_assets_tests.dagster_processes import tail, two_celery_workers

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BROKER = os.environ.get("ANOMALY_ASSETS_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def _redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(BROKER, socket_connect_timeout=2).ping())
    except Exception:
        return False


@contextlib.contextmanager
def _celery_home(tmp_path, **env_settings: str):
    """An embedded home for 10 devices with the training week's features built in-process, and the
    environment of the Celery executor (Redis broker and backend) in os.environ. Yields
    (settings, instance, environment for the workers and the CLI)."""
    require_service(_redis_available(), f"Redis is not reachable at {BROKER}")
    import redis

    redis.Redis.from_url(BROKER).flushdb()
    home = tmp_path / "home"
    settings = Settings(home=home, fleet_devices=10, fleet_seed=4)
    env = {
        **os.environ,
        "ANOMALY_ASSETS_HOME": str(home),
        "DAGSTER_HOME": str(settings.dagster_home),
        "ANOMALY_ASSETS_FLEET_DEVICES": "10",
        "ANOMALY_ASSETS_FLEET_SEED": "4",
        "ANOMALY_ASSETS_CELERY_BROKER": BROKER,
        "ANOMALY_ASSETS_CELERY_BACKEND": BROKER,
        # dagster-celery starts the `celery` executable by name: it must be on PATH.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **env_settings,
    }
    settings.dagster_home.mkdir(parents=True)
    (settings.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # The training window's features, built in-process first.
    os.environ.update(env)
    instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    tags = {"dagster/asset_partition_range_start": "2026-11-01", "dagster/asset_partition_range_end": "2026-11-07"}
    assert build_definitions(Settings.from_env()).resolve_job_def("telemetry_job").execute_in_process(instance=instance, tags=tags).success
    yield settings, instance, {**env, "ANOMALY_ASSETS_EXECUTOR": "celery"}


def _worker_logs(tmp_path, characters: int) -> str:
    return "\n".join(tail(tmp_path / f"worker{i}.log", characters) for i in (1, 2))


def _execute(tmp_path, celery_env: dict[str, str], job: str, partition: str) -> None:
    """``dagster job execute`` of one partition of ``job`` on the Celery executor."""
    result = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "anomaly_assets.definitions", "-j", job,
         "--tags", json.dumps({"dagster/partition": partition})],
        cwd=REPO, env=celery_env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + _worker_logs(tmp_path, 2000)


def _successful_run(instance: dg.DagsterInstance, job: str) -> dg.DagsterRun:
    [run] = instance.get_runs(filters=dg.RunsFilter(job_name=job))
    assert run.status == dg.DagsterRunStatus.SUCCESS
    return run


def test_steps_of_one_run_execute_on_two_celery_workers(tmp_path, restore_environ):
    with _celery_home(tmp_path) as (_settings, instance, celery_env), two_celery_workers(tmp_path, celery_env) as workers:
        _execute(tmp_path, celery_env, "training_job", "2026-11-07")

    run = _successful_run(instance, "training_job")
    step_pids = {
        record.dagster_event.step_key: record.dagster_event.pid
        for record in instance.all_logs(run.run_id)
        if record.dagster_event and record.dagster_event.event_type == dg.DagsterEventType.STEP_SUCCESS
    }
    assert set(step_pids) == {"cohort_stats", "baselines", "anomaly_detector", "model_promotion"}
    worker_pids = {str(w.pid) for w in workers}
    assert len(set(step_pids.values())) >= 2, step_pids  # the steps ran in two worker processes
    assert not {str(p) for p in step_pids.values()} & worker_pids  # in the workers' pool processes


def test_device_ranges_of_one_day_are_scored_on_both_celery_workers(tmp_path, restore_environ):
    day = "2026-11-08"
    # 10 devices in chunks of 2, ranges of 2 devices: 5 score_device_range steps.
    ranges = {"ANOMALY_ASSETS_DEVICES_PER_CHUNK": "2", "ANOMALY_ASSETS_DEVICES_PER_RANGE": "2"}
    with _celery_home(tmp_path, **ranges) as (settings, instance, celery_env):
        defs = build_definitions(Settings.from_env())
        tags = {"dagster/asset_partition_range_start": day, "dagster/asset_partition_range_end": day}
        assert defs.resolve_job_def("telemetry_job").execute_in_process(instance=instance, tags=tags).success
        assert defs.resolve_job_def("training_job").execute_in_process(instance=instance, partition_key="2026-11-07").success
        with two_celery_workers(tmp_path, celery_env):
            _execute(tmp_path, celery_env, "device_range_scoring_job", day)

    run = _successful_run(instance, "device_range_scoring_job")
    workers = {}
    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_OUTPUT):
        event = record.dagster_event
        if event.step_key.startswith("score_device_range["):
            metadata = event.step_output_data.metadata
            workers[event.step_key] = metadata["celery_worker"].value
            assert metadata["pid"].value == event.pid  # recorded by the step's own process
    assert len(workers) == 5
    # Celery's node names, "worker1@<host>...": the ranges were scored on both workers
    assert {name.split("@")[0] for name in workers.values()} == {"worker1", "worker2"}, workers
    scored = pd.read_parquet(settings.parquet_dir / "scored_anomalies" / f"{day}.parquet")
    features = pd.read_parquet(settings.parquet_dir / "device_features" / f"{day}.parquet")
    assert len(scored) == len(features) > 0 and scored["device_id"].nunique() == 10
    [materialization] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("scored_anomalies"), asset_partitions=[day]), limit=1
    ).records
    assert materialization.run_id == run.run_id
    assert not (settings.home / "staging" / "device_ranges" / run.run_id).exists()
