"""The compose file and Dockerfile, checked without a Docker engine: parsed, and each service's
command matched against the commands the integration tests run natively."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _command(service: str) -> list[str]:
    command = SERVICES[service]["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_compose_has_the_whole_stack():
    assert {"postgres", "mlflow", "code", "webserver", "daemon", "redis", "celery-worker"} <= set(SERVICES)
    health = SERVICES["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(health)
    for name in ("code", "webserver", "daemon", "celery-worker"):
        assert SERVICES[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert SERVICES["celery-worker"]["profiles"] == ["celery"]


def test_services_run_as_a_non_root_user_and_secrets_come_from_the_environment():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER anomaly$", dockerfile, re.M)
    for name, service in SERVICES.items():
        if service.get("build"):
            assert service["user"] not in ("root", "0"), name
    text = (REPO / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        password = re.match(r"\s*[A-Z_]*PASSWORD:\s*(\S+)", line)
        if password:
            assert password.group(1).startswith("${"), f"literal password in: {line}"
        assert not re.search(r"://[^:/\s]+:(?!\$\{)[^@\s]+@", line), f"literal credential in: {line}"


def test_service_commands_match_what_the_integration_tests_run_natively():
    native = (REPO / "anomaly_assets_tests" / "test_production_stack.py").read_text()
    assert _command("code")[:5] == ["dagster", "api", "grpc", "-m", "anomaly_assets.definitions"]
    assert '"api", "grpc", "-m", "anomaly_assets.definitions"' in native
    assert _command("webserver")[:3] == ["dagster-webserver", "-w", "workspace.production.yaml"]
    assert _command("daemon")[:3] == ["dagster-daemon", "run", "-w"]
    assert _command("mlflow")[:2] == ["mlflow", "server"] and "--serve-artifacts" in _command("mlflow")
    assert '"server", "--backend-store-uri"' in native and '"--serve-artifacts"' in native
    celery = _command("celery-worker")
    assert celery[:6] == ["dagster-celery", "worker", "start", "-A", "dagster_celery.app", "-y"]
    assert '"dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", "celery_worker.yaml"' in (
        REPO / "anomaly_assets_tests" / "test_celery_executor.py"
    ).read_text()


def test_production_workspace_points_at_the_code_service():
    workspace = yaml.safe_load((REPO / "workspace.production.yaml").read_text())
    [location] = workspace["load_from"]
    assert location["grpc_server"]["host"] == "code"
    assert str(location["grpc_server"]["port"]) == _command("code")[-1]


def test_dagster_yaml_is_postgres_backed_with_queued_runs_and_retries():
    config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    assert set(config["storage"]["postgres"]["postgres_db"]["password"]) == {"env"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_coordinator"]["config"]["max_concurrent_runs"] >= 1
    assert config["run_retries"]["enabled"] is True
