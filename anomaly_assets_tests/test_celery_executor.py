"""Integration: a run on the Celery executor (Redis broker) spreads its steps over two workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from anomaly_assets.definitions import build_definitions
from anomaly_assets.settings import Settings
from anomaly_assets_tests.conftest import require_service

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BROKER = os.environ.get("ANOMALY_ASSETS_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def _redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(BROKER, socket_connect_timeout=2).ping())
    except Exception:
        return False


def test_steps_of_one_run_execute_on_two_celery_workers(tmp_path, restore_environ):
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
    }
    settings.dagster_home.mkdir(parents=True)
    (settings.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # The training window's features, built in-process first.
    os.environ.update(env)
    instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    tags = {"dagster/asset_partition_range_start": "2026-11-01", "dagster/asset_partition_range_end": "2026-11-07"}
    assert build_definitions(settings).resolve_job_def("telemetry_job").execute_in_process(instance=instance, tags=tags).success

    celery_env = {**env, "ANOMALY_ASSETS_EXECUTOR": "celery"}
    workers = [
        subprocess.Popen(
            [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", "celery_worker.yaml",
             "-n", f"worker{i}@%h", "--", "--concurrency=1"],
            cwd=REPO, env=celery_env, stdout=open(tmp_path / f"worker{i}.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the celery processes it starts stop with it
        )
        for i in (1, 2)
    ]
    try:
        time.sleep(8)  # let both workers connect to the broker
        for worker in workers:
            assert worker.poll() is None, "a Celery worker exited:\n" + "\n".join(
                (tmp_path / f"worker{i}.log").read_text()[-3000:] for i in (1, 2)
            )
        result = subprocess.run(
            [str(BIN / "dagster"), "job", "execute", "-m", "anomaly_assets.definitions", "-j", "training_job",
             "--tags", json.dumps({"dagster/partition": "2026-11-07"})],
            cwd=REPO, env=celery_env, capture_output=True, text=True, timeout=300,
        )
        logs = "\n".join((tmp_path / f"worker{i}.log").read_text()[-2000:] for i in (1, 2))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + logs
    finally:
        # dagster-celery starts `celery` as a child: signal the whole group, or orphaned workers
        # would keep consuming the queue.
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)

    [run] = instance.get_runs(filters=dg.RunsFilter(job_name="training_job"))
    assert run.status == dg.DagsterRunStatus.SUCCESS
    step_pids = {
        record.dagster_event.step_key: record.dagster_event.pid
        for record in instance.all_logs(run.run_id)
        if record.dagster_event and record.dagster_event.event_type == dg.DagsterEventType.STEP_SUCCESS
    }
    assert set(step_pids) == {"cohort_stats", "baselines", "anomaly_detector", "model_promotion"}
    worker_pids = {str(w.pid) for w in workers}
    assert len(set(step_pids.values())) >= 2, step_pids  # the steps ran in two worker processes
    assert not {str(p) for p in step_pids.values()} & worker_pids  # in the workers' pool processes
