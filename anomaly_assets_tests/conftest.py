"""Shared fixtures: a throw-away embedded home per test module, and service availability."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from anomaly_assets.settings import Settings

# Importing anomaly_assets.definitions builds the default resources: keep them out of the checkout.
os.environ.setdefault("ANOMALY_ASSETS_HOME", tempfile.mkdtemp(prefix="anomaly_assets_tests_"))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(available: bool, reason: str) -> None:
    """Skip on a laptop without the service; fail in CI, where every service must be there."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: services are required)")
    pytest.skip(reason)


@pytest.fixture
def restore_environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def registry_with_three_versions(tmp_path: Path):
    """A local MLflow store under ``tmp_path/home`` (the environment points there) holding three
    versions registered without training (an empty artifact folder each), version 1 champion.
    Returns the registry resource and the settings."""
    from anomaly_assets.resources.model_registry import MlflowModelRegistry

    home = tmp_path / "home"
    (home / "mlflow").mkdir(parents=True)
    os.environ["ANOMALY_ASSETS_HOME"] = str(home)
    os.environ.pop("ANOMALY_ASSETS_ENV", None)
    os.environ.pop("ANOMALY_ASSETS_ACTOR", None)
    settings = Settings.from_env()
    registry = MlflowModelRegistry(tracking_uri=settings.mlflow_tracking_uri, artifact_location=settings.mlflow_artifact_location)
    client = registry.client()
    client.create_registered_model(registry.model_name)
    for version in (1, 2, 3):
        source = tmp_path / f"model-{version}"
        source.mkdir()
        client.create_model_version(registry.model_name, source=str(source))
    registry.set_champion("1", reason="first trained version", actor="test")
    return registry, settings


def small_settings(home: Path, devices: int = 30) -> Settings:
    return Settings(home=home, fleet_devices=devices, fleet_seed=11)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Wait until ``url`` answers; fail with the tail of ``log`` if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args[0]} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer within {timeout}s:\n{log.read_text()[-4000:]}")


def postgres_url(database: str = "postgres") -> str:
    host = os.environ.get("ANOMALY_ASSETS_TEST_PG_HOST", "127.0.0.1")
    user = os.environ.get("ANOMALY_ASSETS_TEST_PG_USER", "postgres")
    return f"postgresql+psycopg2://{user}@{host}:5432/{database}"


def postgres_available() -> bool:
    import sqlalchemy as sa

    try:
        with sa.create_engine(postgres_url(), connect_args={"connect_timeout": 3}).connect():
            return True
    except Exception:
        return False


@pytest.fixture
def postgres_databases():
    """A factory of fresh, empty PostgreSQL databases, all dropped after the test.

    ``create()`` returns the new database's SQLAlchemy URL.
    """
    import uuid

    import sqlalchemy as sa

    require_service(postgres_available(), "PostgreSQL is not reachable on 127.0.0.1:5432 (user postgres)")
    admin = sa.create_engine(postgres_url(), isolation_level="AUTOCOMMIT")
    names: list[str] = []

    def create() -> str:
        name = f"anomaly_test_{uuid.uuid4().hex[:10]}"
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        names.append(name)
        return postgres_url(name)

    try:
        yield create
    finally:
        with admin.connect() as connection:
            for name in names:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_database(postgres_databases) -> str:
    return postgres_databases()


@contextlib.contextmanager
def provisioned_roles():
    """deploy/postgres-init.sh run against the local server with a unique prefix: the stack's
    databases and its role per service. Yields ``url(role, database)``; drops everything after."""
    import shutil
    import subprocess
    import uuid

    import sqlalchemy as sa

    require_service(postgres_available(), "PostgreSQL is not reachable on 127.0.0.1:5432 (user postgres)")
    require_service(shutil.which("psql") is not None, "psql (PostgreSQL's client) is not installed")
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    admin_url = sa.make_url(postgres_url())
    env = {
        **os.environ,
        "PGHOST": admin_url.host or "127.0.0.1",
        "POSTGRES_USER": admin_url.username or "postgres",
        "ANOMALY_ASSETS_PG_PREFIX": prefix,
        **{f"{name}_PASSWORD": f"pw-{uuid.uuid4().hex[:10]}" for name in
           ("DAGSTER_DB", "MLFLOW_DB", "RESULTS_OWNER", "RESULTS_WRITER", "RESULTS_READER")},
    }  # fmt: skip
    admin = sa.create_engine(postgres_url(), isolation_level="AUTOCOMMIT")
    try:
        script = Path(__file__).resolve().parents[1] / "deploy" / "postgres-init.sh"
        result = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        yield lambda role, database: str(sa.make_url(postgres_url(prefix + database)).set(username=prefix + role))
    finally:
        with admin.connect() as connection:
            for database in ("dagster", "mlflow", "results"):
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{prefix}{database}" WITH (FORCE)'))
            for role in ("dagster", "mlflow", "results_owner", "results_writer", "results_reader"):
                connection.execute(sa.text(f'DROP ROLE IF EXISTS "{prefix}{role}"'))
        admin.dispose()
