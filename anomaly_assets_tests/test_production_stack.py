"""Integration: the production stack on the machine's real PostgreSQL.

dagster-webserver, dagster-daemon and the code location's gRPC server run as subprocesses on a
PostgreSQL-backed instance (the repository's dagster.yaml); runs are launched through the GraphQL
client; the model goes to an MLflow server backed by PostgreSQL; results go to PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
import sqlalchemy as sa

from anomaly_assets_tests.conftest import free_port, wait_http

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


class Services:
    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp, self.env, self.processes = tmp, env, []

    def start(self, name: str, args: list[str], health_url: str | None = None) -> subprocess.Popen:
        log = self.tmp / f"{name}.log"
        process = subprocess.Popen(args, cwd=REPO, env=self.env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.processes.append((name, process, log))
        if health_url:
            wait_http(health_url, process, log)
        return process

    def stop(self) -> None:
        for _name, process, _log in reversed(self.processes):
            process.terminate()
        for _name, process, _log in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def stack(tmp_path, postgres_databases):
    dagster_db, mlflow_db, results_db = postgres_databases(), postgres_databases(), postgres_databases()
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    pg = urlparse(dagster_db)
    mlflow_port, grpc_port, web_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_USERNAME": pg.username,
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_HOST": pg.hostname,
        "DAGSTER_PG_DB": pg.path.lstrip("/"),
        "ANOMALY_ASSETS_ENV": "production",
        "ANOMALY_ASSETS_RESULTS_URL": results_db,
        "ANOMALY_ASSETS_STORAGE_PATH": str(tmp_path / "storage"),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "ANOMALY_ASSETS_FLEET_DEVICES": "10",
        "ANOMALY_ASSETS_FLEET_SEED": "2",
    }
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {grpc_port}\n      location_name: anomaly_assets\n"
    )
    services = Services(tmp_path, env)
    try:
        services.start(
            "mlflow",
            [str(BIN / "mlflow"), "server", "--backend-store-uri", mlflow_db,
             "--artifacts-destination", (tmp_path / "mlartifacts").as_uri(), "--serve-artifacts",
             "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
            health_url=f"http://127.0.0.1:{mlflow_port}/health",
        )
        services.start("grpc", [str(BIN / "dagster"), "api", "grpc", "-m", "anomaly_assets.definitions",
                                "-h", "127.0.0.1", "-p", str(grpc_port)])
        services.start("webserver", [str(BIN / "dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1",
                                     "-p", str(web_port)], health_url=f"http://127.0.0.1:{web_port}/server_info")
        services.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)])
        yield {"env": env, "web_port": web_port, "dagster_db": dagster_db, "results_db": results_db, "tmp": tmp_path}
    finally:
        services.stop()


def _launch_and_wait(client, job: str, tags: dict[str, str], tmp: Path, timeout: float = 300) -> str:
    from dagster_graphql import DagsterGraphQLClientError

    deadline = time.monotonic() + 60
    while True:  # the webserver may still be loading the code location from the gRPC server
        try:
            run_id = client.submit_job_execution(job, repository_location_name="anomaly_assets", tags=tags)
            break
        except DagsterGraphQLClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            logs = "\n".join(p.read_text()[-2000:] for p in tmp.glob("*.log"))
            assert status == "SUCCESS", f"{job} {tags} ended {status}\n{logs}"
            return run_id
        time.sleep(2)
    raise AssertionError(f"{job} {tags} did not finish in {timeout}s")


def test_partitions_launched_through_graphql_run_on_a_postgres_instance(stack):
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=stack["web_port"], timeout=60)
    tmp = stack["tmp"]
    telemetry = _launch_and_wait(
        client, "telemetry_job",
        {"dagster/asset_partition_range_start": "2026-11-01", "dagster/asset_partition_range_end": "2026-11-07"}, tmp,
    )
    _launch_and_wait(client, "training_job", {"dagster/partition": "2026-11-07"}, tmp)
    scoring = _launch_and_wait(client, "scoring_job", {"dagster/partition": "2026-11-08"}, tmp)

    # Runs and their events are in PostgreSQL.
    dagster_engine = sa.create_engine(stack["dagster_db"])
    with dagster_engine.connect() as connection:
        for run_id in (telemetry, scoring):
            assert connection.execute(sa.text("SELECT status FROM runs WHERE run_id = :r"), {"r": run_id}).scalar_one() == "SUCCESS"
            events = connection.execute(sa.text("SELECT count(*) FROM event_logs WHERE run_id = :r"), {"r": run_id}).scalar_one()
            assert events > 10
    dagster_engine.dispose()

    # Results are in PostgreSQL, and re-materializing the partition replaces them.
    results = sa.create_engine(stack["results_db"])
    query = sa.text("SELECT count(*), count(DISTINCT model_version) FROM anomaly_events WHERE partition_date = '2026-11-08'")
    with results.connect() as connection:
        first = connection.execute(query).one()
    assert first[0] > 0 and first[1] == 1
    _launch_and_wait(client, "scoring_job", {"dagster/partition": "2026-11-08"}, tmp)
    with results.connect() as connection:
        assert connection.execute(query).one() == first
        summary = connection.execute(sa.text("SELECT count(*) FROM device_daily_summary WHERE partition_date = '2026-11-08'")).scalar_one()
    assert summary == 10
    results.dispose()

    # The model lives in the MLflow server (PostgreSQL backend) and loads back by alias.
    mlflow.set_tracking_uri(stack["env"]["MLFLOW_TRACKING_URI"])
    path = list(sys.path)
    try:
        model = mlflow.pyfunc.load_model("models:/fleet_anomaly_detector@champion")
    finally:  # MLflow puts the package's code first on sys.path: later tests' workers must not import it
        mlflow.set_tracking_uri(None)
        sys.path[:] = path
    assert model.unwrap_python_model().model.threshold > 0
