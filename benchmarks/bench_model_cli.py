"""How fast `anomaly-assets model ...` answers when nothing needs to load (issue 19: within 3 s).

Builds a local SQLite MLflow store the way training leaves it (N versions, each with a run
carrying its validation metrics and the training tags; gate decisions with reasons; a champion
history), then times, as separate processes in the same run:

- the references: `python -c pass` (the interpreter), `python -c "import mlflow"` (the floor of
  anything that uses the MLflow client) and `mlflow --version`;
- `anomaly-assets model list`, `model list --json`, `model show` (the champion), and a
  `model promote` / `model rollback` pair;
- with ``--server``, `model list` against `mlflow server` serving the same store (production's
  shape: the command then loads MLflow's REST client, not its SQL store).

Each command runs R times, in interleaved rounds; the best and the median wall time and the best
CPU time (user + system: on a busy machine, what the command itself costs) are printed, with the
best wall time's ratios against the references of the same run. ``--baseline-src DIR`` also times `model list`
from another checkout's ``anomaly_assets`` (for example the previous commit's, from `git archive`).

    .venv/bin/python benchmarks/bench_model_cli.py                     # 5 versions, 5 repeats
    .venv/bin/python benchmarks/bench_model_cli.py --versions 30 --repeat 7
    git archive HEAD~1 anomaly_assets | tar -x -C /tmp/before
    .venv/bin/python benchmarks/bench_model_cli.py --baseline-src /tmp/before
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from anomaly_assets.settings import Settings

BIN = Path(sys.executable).parent
BUDGET_SECONDS = 3.0


def build_store(home: Path, versions: int) -> None:
    """Versions registered as training registers them, without training (a model folder holding
    only the MLmodel file, with a signature, which `model show` reads)."""
    import logging

    import pandas as pd
    from mlflow.entities import Metric
    from mlflow.models import Model, infer_signature

    from anomaly_assets.resources.registry_client import ModelRegistryClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its table creation
    settings = Settings(home=home)
    settings.mlflow_dir.mkdir(parents=True)
    registry = ModelRegistryClient(tracking_uri=settings.mlflow_tracking_uri, artifact_location=settings.mlflow_artifact_location)
    client = registry.client()
    experiment_id = registry.experiment_id(client)
    client.create_registered_model(registry.model_name)
    rows = pd.DataFrame({"device_id": ["dev-1"], "timestamp": ["2026-11-09T12:00:00Z"], "cpu_util_pct": [41.0]})
    signature = infer_signature(rows, pd.DataFrame({"score": [0.4]}), params={"score_from": ""})
    for number in range(1, versions + 1):
        day = f"2026-11-{7 + number:02d}" if number < 23 else f"2026-12-{number - 22:02d}"
        run = client.create_run(experiment_id, run_name=f"anomaly_detector {day}", tags={"dagster_partition": day})
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, 0.5 + number / 100, 0, 0) for k in ("auc_pr", "auc_roc", "f1")],
        )
        client.set_terminated(run.info.run_id)
        source = home / f"model-{number}"
        source.mkdir()
        Model(signature=signature).save(str(source / "MLmodel"))
        client.create_model_version(
            registry.model_name,
            source=str(source),
            run_id=run.info.run_id,
            tags={"training_window": f"..{day}", "dagster_partition": day, "code_version": "0.1.0"},
        )
        decision = "refused" if number % 3 == 2 else "passed"
        registry.tag_version(
            str(number),
            {"promotion_decision": decision, "promotion_reasons": f"{'fail' if decision == 'refused' else 'pass'}: "
             "alerts per day 12.0 vs the champion's 10.0; pass: auc_pr 0.61 vs 0.60", "promotion_compared_with": "1"},
        )  # fmt: skip
        if number == 1 or decision == "passed":
            registry.set_champion(str(number), reason="gate passed", actor="bench")


def timed(command: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``command``. On a busy machine the CPU
    time moves less than the wall time: it is what the command itself costs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@contextlib.contextmanager
def tracking_server(home: Path) -> Iterator[str]:
    """`mlflow server` on the same store, on a free local port: its URI (the production shape)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # it starts uvicorn by name
    store = Settings(home=home).mlflow_tracking_uri
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"mlflow server exited with {server.returncode}") from None
                time.sleep(1)
        else:
            raise SystemExit("mlflow server did not answer /health within 120 s")
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=5, help="registered versions in the store (default 5)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--baseline-src", help="a folder holding another version's anomaly_assets package")
    parser.add_argument("--server", action="store_true", help="also time `model list` against `mlflow server` on the store")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        home = Path(tmp, "home")
        build_store(home, args.versions)
        env = {**os.environ, "ANOMALY_ASSETS_HOME": str(home)}
        env.pop("ANOMALY_ASSETS_ENV", None)
        cli = [str(BIN / "anomaly-assets"), "model"]
        # name: (command, environment)
        commands = {
            "python -c pass": ([sys.executable, "-c", "pass"], env),
            'python -c "import mlflow"': ([sys.executable, "-c", "import mlflow"], env),
            "mlflow --version": ([str(BIN / "mlflow"), "--version"], env),
            "anomaly-assets model list": ([*cli, "list"], env),
            "anomaly-assets model list --json": ([*cli, "list", "--json"], env),
            "anomaly-assets model show": ([*cli, "show"], env),
            "anomaly-assets model promote --version 2 --force": ([*cli, "promote", "--version", "2", "--force"], env),
            "anomaly-assets model rollback": ([*cli, "rollback"], env),
        }
        if args.server:
            uri = stack.enter_context(tracking_server(home))
            production = {**env, "ANOMALY_ASSETS_ENV": "production", "MLFLOW_TRACKING_URI": uri}
            commands["anomaly-assets model list (mlflow server)"] = ([*cli, "list"], production)
        if args.baseline_src:
            baseline = {**env, "PYTHONPATH": args.baseline_src}
            commands[f"model list from {args.baseline_src}"] = ([sys.executable, "-m", "anomaly_assets.cli", "model", "list"], baseline)
        wall: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        # Interleaved rounds, so a busy moment on a shared machine weighs on every command alike.
        for _ in range(args.repeat):
            for name, (command, command_env) in commands.items():
                # Run outside the checkout: `python -m` would import the checkout's package first.
                elapsed, used = timed(command, command_env, cwd=tmp)
                wall[name].append(elapsed)
                cpu[name].append(used)
    python, floor = min(wall["python -c pass"]), min(wall['python -c "import mlflow"'])
    print(f"{args.versions} versions, {args.repeat} runs each: wall time best and median, CPU time best (seconds)\n")
    print(f"{'command':<50} {'best':>6} {'median':>7} {'cpu':>6} {'/ python':>9} {'/ import mlflow':>16}")
    for name, times in wall.items():
        best = min(times)
        print(
            f"{name:<50} {best:>6.2f} {statistics.median(times):>7.2f} {min(cpu[name]):>6.2f} "
            f"{best / python:>8.1f}x {best / floor:>15.2f}x"
        )
    ours = [n for n in wall if n.startswith("anomaly-assets")]
    slowest, slowest_cpu = max(min(wall[n]) for n in ours), max(min(cpu[n]) for n in ours)
    print(
        f"\nslowest model command: best wall time {slowest:.2f} s, best CPU time {slowest_cpu:.2f} s "
        f"(the budget: {BUDGET_SECONDS:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
