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
    assert {"postgres", "migrate", "mlflow", "code", "webserver", "daemon", "explorer", "proxy", "redis", "celery-worker"} <= set(SERVICES)
    health = SERVICES["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(health)
    for name in ("code", "webserver", "daemon", "celery-worker"):
        assert SERVICES[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("code", "explorer", "celery-worker"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert SERVICES["celery-worker"]["profiles"] == ["celery"]


def test_only_the_proxy_publishes_ports_and_local_ones_bind_to_loopback():
    published = {name: service["ports"] for name, service in SERVICES.items() if service.get("ports")}
    assert set(published) == {"proxy", "postgres"}
    assert all(port.startswith("127.0.0.1:") for port in published["postgres"])
    assert {p.split(":")[-1] for p in published["proxy"]} == {"3000", "8050", "5000"}
    caddyfile = (REPO / "deploy" / "Caddyfile").read_text()
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in SERVICES["proxy"]["volumes"]
    assert caddyfile.count("import sign_in") == 2 and "{$ANOMALY_PROXY_USERS}" in caddyfile
    assert '"caddy", "run", "--config", str(REPO / "deploy" / "Caddyfile")' in (
        REPO / "anomaly_assets_tests" / "test_production_stack.py"
    ).read_text()


def test_each_service_connects_with_its_own_role():
    def results_role(name: str) -> str:
        return re.match(r"postgresql\+psycopg2://(\w+):", SERVICES[name]["environment"]["ANOMALY_ASSETS_RESULTS_URL"]).group(1)

    assert results_role("migrate") == "results_owner"
    assert results_role("code") == "results_writer" and results_role("celery-worker") == "results_writer"
    assert results_role("explorer") == "results_reader"
    assert "ANOMALY_ASSETS_RESULTS_URL" not in SERVICES["webserver"]["environment"]
    assert "MLFLOW_TRACKING_PASSWORD" not in SERVICES["daemon"]["environment"]
    assert SERVICES["code"]["environment"]["DAGSTER_PG_USERNAME"] == "dagster"
    assert "postgresql+psycopg2://mlflow:" in SERVICES["mlflow"]["command"]
    assert "./deploy/postgres-init.sh:/docker-entrypoint-initdb.d/10-roles.sh:ro" in SERVICES["postgres"]["volumes"]


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
    assert _command("webserver")[:5] == ["python", "-m", "anomaly_assets.webserver", "-w", "workspace.production.yaml"]
    assert '"-m", "anomaly_assets.webserver", "-w"' in native
    assert _command("daemon")[:3] == ["dagster-daemon", "run", "-w"]
    assert _command("mlflow")[:4] == ["mlflow", "server", "--app-name", "basic-auth"] and "--serve-artifacts" in _command("mlflow")
    assert '"server", "--app-name", "basic-auth", "--backend-store-uri"' in native and '"--serve-artifacts"' in native
    assert _command("migrate") == ["anomaly-assets", "migrate"] and '"anomaly-assets"), "migrate"' in native
    assert _command("explorer")[:2] == ["anomaly-assets", "explore"] and '"anomaly-assets"), "explore"' in native
    celery = _command("celery-worker")
    assert celery[:6] == ["dagster-celery", "worker", "start", "-A", "dagster_celery.app", "-y"]
    assert '"dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", "celery_worker.yaml"' in (
        REPO / "anomaly_assets_tests" / "dagster_processes.py"  # two_celery_workers, which the Celery tests start
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
