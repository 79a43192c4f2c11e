"""How fast `anomaly-assets model ...` answers when nothing needs to load (issue 19: within 3 s).

Builds a local SQLite MLflow store the way training leaves it (N versions, each with a run
carrying its validation metrics and the training tags; gate decisions with reasons; a champion
history), then times, as separate processes in the same run:

- the references: `python -c pass` (the interpreter), `python -c "import mlflow"` (the floor of
  anything that uses the MLflow client) and `mlflow --version`;
- `anomaly-assets model list`, `model list --json`, `model show` (the champion), and a
  `model promote` / `model rollback` pair.

Each command runs R times, in interleaved rounds; the best and the median wall time are printed,
with ratios against the references of the same run. ``--baseline-src DIR`` also times `model list`
from another checkout's ``anomaly_assets`` (for example the previous commit's, from `git archive`).

    .venv/bin/python benchmarks/bench_model_cli.py                     # 5 versions, 5 repeats
    .venv/bin/python benchmarks/bench_model_cli.py --versions 30 --repeat 7
    git archive HEAD~1 anomaly_assets | tar -x -C /tmp/before
    .venv/bin/python benchmarks/bench_model_cli.py --baseline-src /tmp/before
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    from anomaly_assets.settings import Settings

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=5, help="registered versions in the store (default 5)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--baseline-src", help="a folder holding another version's anomaly_assets package")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp, "home")
        build_store(home, args.versions)
        env = {**os.environ, "ANOMALY_ASSETS_HOME": str(home)}
        env.pop("ANOMALY_ASSETS_ENV", None)
        cli = [str(BIN / "anomaly-assets"), "model"]
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            'python -c "import mlflow"': [sys.executable, "-c", "import mlflow"],
            "mlflow --version": [str(BIN / "mlflow"), "--version"],
            "anomaly-assets model list": [*cli, "list"],
            "anomaly-assets model list --json": [*cli, "list", "--json"],
            "anomaly-assets model show": [*cli, "show"],
            "anomaly-assets model promote --version 2 --force": [*cli, "promote", "--version", "2", "--force"],
            "anomaly-assets model rollback": [*cli, "rollback"],
        }
        if args.baseline_src:
            commands[f"model list from {args.baseline_src}"] = [sys.executable, "-m", "anomaly_assets.cli", "model", "list"]
        wall: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        # Interleaved rounds, so a busy moment on a shared machine weighs on every command alike.
        for _ in range(args.repeat):
            for name, command in commands.items():
                baseline = args.baseline_src and name.startswith("model list from")
                # Run outside the checkout: `python -m` would import the checkout's package first.
                elapsed, used = timed(command, {**env, "PYTHONPATH": args.baseline_src} if baseline else env, cwd=tmp)
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
    slowest = max(min(t) for n, t in wall.items() if n.startswith("anomaly-assets"))
    verdict = "within" if slowest <= BUDGET_SECONDS else "over"
    print(f"\nslowest model command (best run): {slowest:.2f} s, {verdict} the {BUDGET_SECONDS:.0f} s budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
