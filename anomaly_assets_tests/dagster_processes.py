"""A real dagster-webserver (and dagster-daemon) on a project home, for tests that check what the UI
shows or launches: the processes load ``workspace.yaml`` from this checkout, as ``make dev`` does.
And two local Celery workers, for the Celery executor's test and benchmark."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import requests

from anomaly_assets_tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def home_environment(home: Path, **settings: str) -> dict[str, str]:
    """This process's environment pointed at ``home``; the subprocesses import this checkout,
    whatever the virtualenv's install points at."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "ANOMALY_ASSETS_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        **settings,
    }


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def wait_for_webserver(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dagster-webserver exited with {process.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                if response.status == 200 and "dagster_webserver_version" in json.load(response):
                    return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"dagster-webserver did not answer /server_info within {timeout:.0f} s:\n{tail(log)}")


def stop(process: subprocess.Popen, name: str) -> None:
    """SIGINT (graceful), then SIGKILL; then clean up what is left of its process group
    (code servers, run workers), which it was started as the leader of."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop within 30 s of SIGINT: killing it")
            process.kill()
            process.wait(timeout=10)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Webserver:
    """What the UI's pages ask the webserver: ``graphql`` posts a query to its /graphql endpoint."""

    def __init__(self, url: str):
        self.url = url

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=120)
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]


@contextlib.contextmanager
def dagster_ui(home: Path, env: dict[str, str], logs: Path, daemon: bool = False) -> Iterator[Webserver]:
    """dagster-webserver on a free port of 127.0.0.1 (and dagster-daemon, which dequeues launched
    runs and drives backfills; its schedules and sensors stay stopped), on the instance under
    ``home/dagster``. Their logs are printed when the block fails."""
    # Created here first: two processes creating a fresh SQLite instance's tables at once collide.
    dg.DagsterInstance.from_config(str(home / "dagster")).dispose()
    port = free_port()
    started: list[tuple[subprocess.Popen, str, Path]] = []
    commands = [("dagster-webserver", ["-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)])]
    if daemon:
        commands.append(("dagster-daemon", ["run", "-w", "workspace.yaml"]))
    try:
        for name, args in commands:
            log = logs / f"{name}.log"
            with open(log, "w") as out:
                process = subprocess.Popen(
                    [str(BIN / name), *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            started.append((process, name, log))
        url = f"http://127.0.0.1:{port}"
        wait_for_webserver(url, started[0][0], started[0][2])
        yield Webserver(url)
    except BaseException:
        for _, name, log in started:
            print(f"--- {name} log ---\n{tail(log)}")
        raise
    finally:
        for process, name, _ in reversed(started):
            stop(process, name)


@contextlib.contextmanager
def two_celery_workers(logs: Path, env: dict[str, str]) -> Iterator[list[subprocess.Popen]]:
    """Two Celery workers for the Celery executor (``worker1@<host>``, ``worker2@<host>``), one pool
    process each taking one task at a time, logging to ``logs/worker<i>.log``; stopped after, with
    their whole process groups."""
    workers = []
    try:
        for i in (1, 2):
            with open(logs / f"worker{i}.log", "w") as out:
                workers.append(subprocess.Popen(
                    [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", "celery_worker.yaml",
                     "-n", f"worker{i}@%h", "--", "--concurrency=1", "--prefetch-multiplier=1"],
                    cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: the celery processes it starts stop with it
                ))  # fmt: skip
        time.sleep(8)  # let both workers connect to the broker
        for worker in workers:
            assert worker.poll() is None, "a Celery worker exited:\n" + "\n".join(tail(logs / f"worker{i}.log") for i in (1, 2))
        yield workers
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
