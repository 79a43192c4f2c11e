"""Integration: a real dagster-daemon launches the daily scoring schedule, the incidents and alert
deliveries that follow scoring (declarative automation) and the drift sensor's retraining run,
all succeed, and the daemon stops cleanly."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_daemon_runs_schedule_and_drift_sensor(tmp_path):
    home = tmp_path / "home"
    env = {
        **os.environ,
        "ANOMALY_ASSETS_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "ANOMALY_ASSETS_FLEET_DEVICES": "20",
        "ANOMALY_ASSETS_FLEET_SEED": "5",
        "ANOMALY_ASSETS_FLEET_SHIFT_OFFSET_DAYS": "7",
        "ANOMALY_ASSETS_DRIFT_SENSOR_INTERVAL_SECONDS": "5",
    }
    # Ten days with a firmware shift from day 8: scoring days 8-10 drift.
    _run([str(BIN / "anomaly-assets"), "demo", "--devices", "20", "--seed", "5", "--fleet-shift-day", "7",
          "--home", str(home), "--json"], env)
    # The daily run is Dagster's schedule for the partitioned scoring_job: it ticks once a day at
    # ANOMALY_ASSETS_SCORING_TIME. Set it to a minute that lies ahead once the daemon is up (a
    # tick the daemon reaches late is still run: Dagster catches up on ticks missed since the start).
    tick = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)).replace(second=0, microsecond=0)
    env["ANOMALY_ASSETS_SCORING_TIME"] = f"{tick:%H:%M}"
    for kind, name in (
        ("schedule", "daily_scoring_schedule"),
        ("sensor", "drift_retraining_sensor"),
        ("sensor", "alerting_automation_sensor"),
    ):
        _run([str(BIN / "dagster"), kind, "start", name, "-w", "workspace.yaml"], env)

    log = open(tmp_path / "daemon.log", "w")
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    try:
        deadline = time.monotonic() + 300
        wanted = {"dagster/schedule_name": "daily_scoring_schedule", "dagster/sensor_name": "drift_retraining_sensor"}
        finished: dict[str, dg.DagsterRunStatus] = {}
        while time.monotonic() < deadline and len(finished) < len(wanted):
            for tag, name in wanted.items():
                runs = instance.get_runs(filters=dg.RunsFilter(tags={tag: name}))
                done = [r for r in runs if r.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)]
                if done:
                    finished[name] = done[-1].status
            assert daemon.poll() is None, "dagster-daemon exited early: " + (tmp_path / "daemon.log").read_text()[-3000:]
            time.sleep(3)
        assert finished == {name: dg.DagsterRunStatus.SUCCESS for name in wanted.values()}, (
            finished, (tmp_path / "daemon.log").read_text()[-3000:]
        )
        [retraining] = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "drift_retraining_sensor"}))
        assert retraining.tags["dagster/partition"] == "2026-11-10"
        assert retraining.job_name == "training_job"
        # The scheduled day's scores bring its incidents and deliveries, by themselves.
        scoring = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/schedule_name": "daily_scoring_schedule"}))[-1]
        day = scoring.tags["dagster/partition"]
        assert day == (tick - dt.timedelta(days=1)).date().isoformat()  # the last complete day at the tick
        assert any(
            e.asset_materialization and e.run_id == scoring.run_id
            for e in instance.fetch_materializations(dg.AssetKey("device_inventory"), limit=10).records
        )  # the daily run reads the inventory again
        while time.monotonic() < deadline + 240:
            events = [
                e for e in instance.fetch_materializations(dg.AssetKey("alert_deliveries"), limit=50).records
                if e.asset_materialization and e.asset_materialization.partition == day
            ]
            if events:
                break
            assert daemon.poll() is None, "dagster-daemon exited early: " + (tmp_path / "daemon.log").read_text()[-3000:]
            time.sleep(3)
        assert events, ("no alert_deliveries for " + day, (tmp_path / "daemon.log").read_text()[-3000:])
        incidents = [
            e for e in instance.fetch_materializations(dg.AssetKey("device_incidents"), limit=50).records
            if e.asset_materialization and e.asset_materialization.partition == day
        ]
        assert incidents
    finally:
        daemon.send_signal(signal.SIGINT)
        try:
            code = daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            raise AssertionError("dagster-daemon did not stop within 60 s of SIGINT")
        log.close()
    assert code in (0, -signal.SIGINT, 130), f"daemon exit code {code}"
