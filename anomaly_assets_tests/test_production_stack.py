"""Integration: the production stack on the machine's real PostgreSQL.

dagster-webserver, dagster-daemon and the code location's gRPC server run as subprocesses on a
PostgreSQL-backed instance (the repository's dagster.yaml); runs are launched through the GraphQL
client; the model goes to an MLflow server backed by PostgreSQL; results go to PostgreSQL.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
import sqlalchemy as sa

from anomaly_assets_tests.conftest import free_port, provisioned_roles, require_service, wait_http

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Services:
    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp, self.env, self.processes = tmp, env, []

    def start(self, name: str, args: list[str], health_url: str | None = None, env: dict | None = None) -> subprocess.Popen:
        log = self.tmp / f"{name}.log"
        process = subprocess.Popen(args, cwd=REPO, env=env or self.env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
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


ADMIN_PASSWORD = "mlflow-Admin-" + uuid.uuid4().hex[:12]  # found in no log, event or table afterwards
PROXY_USER, PROXY_PASSWORD = "alice", "proxy-Pass-" + uuid.uuid4().hex[:12]


def _mlflow_auth_config(tmp: Path) -> Path:
    """deploy/mlflow-auth.ini with the user store under ``tmp``."""
    config = configparser.ConfigParser()
    config.read(REPO / "deploy" / "mlflow-auth.ini")
    config["mlflow"]["database_uri"] = f"sqlite:///{tmp / 'mlflow-auth.db'}"
    path = tmp / "mlflow-auth.ini"
    with path.open("w") as handle:
        config.write(handle)
    return path


@pytest.fixture
def stack(tmp_path):
    """The production topology natively: PostgreSQL roles from deploy/postgres-init.sh (migrations
    as the owner, the code location as the writer, the explorer as the reader), MLflow with its
    basic-auth app, and Caddy from deploy/Caddyfile in front of the webserver and the explorer."""
    require_service(shutil.which("caddy") is not None, "caddy (the authenticating proxy) is not installed")
    with provisioned_roles() as role_url:
        yield from _stack(tmp_path, role_url)


def _stack(tmp_path: Path, role_url):
    dagster_db, mlflow_db = role_url("dagster", "dagster"), role_url("mlflow", "mlflow")
    results_writer, results_reader = role_url("results_writer", "results"), role_url("results_reader", "results")
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    pg = urlparse(dagster_db)
    mlflow_port, grpc_port, web_port, explorer_port = free_port(), free_port(), free_port(), free_port()
    proxy_ports = {"dagster": free_port(), "explorer": free_port(), "mlflow": free_port()}
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_USERNAME": pg.username,
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_HOST": pg.hostname,
        "DAGSTER_PG_DB": pg.path.lstrip("/"),
        "ANOMALY_ASSETS_ENV": "production",
        "ANOMALY_ASSETS_RESULTS_URL": results_writer,
        "ANOMALY_ASSETS_STORAGE_PATH": str(tmp_path / "storage"),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD,
        "ANOMALY_ASSETS_FLEET_DEVICES": "10",
        "ANOMALY_ASSETS_FLEET_SEED": "2",
    }
    hashed = subprocess.run(["caddy", "hash-password", "--plaintext", PROXY_PASSWORD], capture_output=True, text=True, check=True)
    proxy_env = {
        **os.environ,
        "ANOMALY_PROXY_USERS": f"{PROXY_USER} {hashed.stdout.strip()}",
        "PROXY_BIND": "127.0.0.1",
        "PROXY_DAGSTER_PORT": str(proxy_ports["dagster"]),
        "PROXY_EXPLORER_PORT": str(proxy_ports["explorer"]),
        "PROXY_MLFLOW_PORT": str(proxy_ports["mlflow"]),
        "DAGSTER_UPSTREAM": f"127.0.0.1:{web_port}",
        "EXPLORER_UPSTREAM": f"127.0.0.1:{explorer_port}",
        "MLFLOW_UPSTREAM": f"127.0.0.1:{mlflow_port}",
    }
    mlflow_env = {
        **env,
        "MLFLOW_AUTH_CONFIG_PATH": str(_mlflow_auth_config(tmp_path)),
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
    }
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {grpc_port}\n      location_name: anomaly_assets\n"
    )
    migrate = subprocess.run(
        [str(BIN / "anomaly-assets"), "migrate"], env={**env, "ANOMALY_ASSETS_RESULTS_URL": role_url("results_owner", "results")},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    services = Services(tmp_path, env)
    try:
        services.start(
            "mlflow",
            [str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--backend-store-uri", mlflow_db,
             "--artifacts-destination", (tmp_path / "mlartifacts").as_uri(), "--serve-artifacts",
             "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
            health_url=f"http://127.0.0.1:{mlflow_port}/health", env=mlflow_env,
        )  # fmt: skip
        services.start("grpc", [str(BIN / "dagster"), "api", "grpc", "-m", "anomaly_assets.definitions",
                                "-h", "127.0.0.1", "-p", str(grpc_port)])
        services.start("webserver", [sys.executable, "-m", "anomaly_assets.webserver", "-w", str(workspace), "-h", "127.0.0.1",
                                     "-p", str(web_port)], health_url=f"http://127.0.0.1:{web_port}/server_info")
        services.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)])
        services.start("explorer", [str(BIN / "anomaly-assets"), "explore", "--port", str(explorer_port)],
                       health_url=f"http://127.0.0.1:{explorer_port}/healthz", env={**env, "ANOMALY_ASSETS_RESULTS_URL": results_reader})
        services.start("proxy", ["caddy", "run", "--config", str(REPO / "deploy" / "Caddyfile"), "--adapter", "caddyfile"],
                       env=proxy_env)
        _wait_port(proxy_ports["dagster"])
        yield {"env": env, "proxy": proxy_ports, "dagster_db": dagster_db, "results_db": results_writer, "tmp": tmp_path,
               "databases": [dagster_db, mlflow_db, results_writer]}  # fmt: skip
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


def _status(port: int, path: str, credentials: tuple[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(credentials).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "anomaly-assets"), *args], env=env, capture_output=True, text=True, timeout=120)


def test_the_stack_behind_its_proxy_and_least_privilege_roles(stack, monkeypatch):
    from dagster_graphql import DagsterGraphQLClient

    ports, tmp, env = stack["proxy"], stack["tmp"], stack["env"]
    signed_in = (PROXY_USER, PROXY_PASSWORD)
    # Nobody reaches the Dagster UI, its GraphQL API or the explorer without signing in at the proxy.
    assert _status(ports["dagster"], "/server_info")[0] == 401
    assert _status(ports["dagster"], "/graphql", (PROXY_USER, "wrong"))[0] == 401
    assert _status(ports["explorer"], "/")[0] == 401
    assert _status(ports["dagster"], "/server_info", signed_in)[0] == 200
    assert _status(ports["mlflow"], "/api/2.0/mlflow/registered-models/search")[0] == 401  # MLflow's own login

    basic = "Basic " + base64.b64encode(":".join(signed_in).encode()).decode()
    client = DagsterGraphQLClient("127.0.0.1", port_number=ports["dagster"], timeout=60, headers={"Authorization": basic})
    telemetry = _launch_and_wait(
        client, "telemetry_job",
        {"dagster/asset_partition_range_start": "2026-11-01", "dagster/asset_partition_range_end": "2026-11-07"}, tmp,
    )
    _launch_and_wait(client, "training_job", {"dagster/partition": "2026-11-07"}, tmp)
    scoring = _launch_and_wait(client, "scoring_job", {"dagster/partition": "2026-11-08"}, tmp)

    # Runs and their events are in PostgreSQL, tagged with the user the proxy signed in.
    dagster_engine = sa.create_engine(stack["dagster_db"])
    with dagster_engine.connect() as connection:
        for run_id in (telemetry, scoring):
            assert connection.execute(sa.text("SELECT status FROM runs WHERE run_id = :r"), {"r": run_id}).scalar_one() == "SUCCESS"
            events = connection.execute(sa.text("SELECT count(*) FROM event_logs WHERE run_id = :r"), {"r": run_id}).scalar_one()
            assert events > 10
            launched_by = sa.text("SELECT value FROM run_tags WHERE run_id = :r AND key = 'anomaly_assets/launched_by'")
            assert connection.execute(launched_by, {"r": run_id}).scalar_one() == PROXY_USER
    dagster_engine.dispose()

    # Results are in PostgreSQL (written by the writer role), and re-materializing replaces them.
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

    # Without MLflow credentials `model promote` fails with a sentence, not a traceback.
    anonymous = {k: v for k, v in env.items() if k not in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    refused = _cli(anonymous, "model", "promote", "--version", "1")
    assert refused.returncode == 2 and "requires a login: set MLFLOW_TRACKING_USERNAME" in refused.stderr
    assert "Traceback" not in refused.stderr

    # With them: a second version (the first one's files again), promoted by an operator from the
    # CLI, then rolled back by the proxy's user from Dagster; the audit trail names both.
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, env[name])
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(env["MLFLOW_TRACKING_URI"])  # an earlier test in this process may have set another
    first_version = mlflow.MlflowClient().get_model_version("fleet_anomaly_detector", "1")
    assert mlflow.register_model(first_version.source, "fleet_anomaly_detector").version == "2"
    promoted = _cli({**env, "LOGNAME": "ops-bob"}, "model", "promote", "--version", "2", "--reason", "hotfix")
    assert promoted.returncode == 0, promoted.stderr
    _launch_and_wait(client, "rollback_model_job", {}, tmp)
    listing = _cli(env, "audit", "--json")
    assert listing.returncode == 0, listing.stderr
    trail = [(r["who"], r["via"], r["action"], r["detail"]) for r in json.loads(listing.stdout)]
    assert trail == [
        (PROXY_USER, "dagster", "champion.first", "version - -> 1"),
        ("ops-bob", "cli", "champion.promote", "version 1 -> 2"),
        (PROXY_USER, "dagster", "champion.rollback", "version 2 -> 1"),
    ]
    # The explorer (read-only role) shows the trail through the proxy, to the signed-in user.
    status, page = _status(ports["explorer"], "/audit", signed_in)
    assert status == 200 and "ops-bob" in page and f"signed in as {PROXY_USER}" in page

    # The model loads back by alias with the credentials.
    path = list(sys.path)
    try:
        model = mlflow.pyfunc.load_model("models:/fleet_anomaly_detector@champion")
    finally:  # MLflow puts the package's code first on sys.path: later tests' workers must not import it
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        sys.path[:] = path
    assert model.unwrap_python_model().model.threshold > 0

    # No password reached a log, an event, a tag or a table.
    texts = [p.read_text(errors="replace") for p in tmp.rglob("*") if p.is_file() and p.suffix in (".log", ".out", ".err", ".txt")]
    for url in stack["databases"]:
        database = sa.make_url(url).database
        dump = subprocess.run(["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "--data-only", database],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert dump.returncode == 0, dump.stderr
        texts.append(dump.stdout)
    assert len(texts) > 8 and any("champion.rollback" in t for t in texts)
    for secret in (ADMIN_PASSWORD, PROXY_PASSWORD):
        assert not any(secret in t for t in texts)
    results.dispose()
