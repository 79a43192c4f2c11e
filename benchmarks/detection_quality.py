"""The README's "Detection quality" table: `anomaly-assets evaluate` on the development sets with
the default configuration, the pipeline and each ensemble member alone, scored by the project's
quality instrument (../shared/eval: TSB-AD 1.5 VUS-PR per device).

    export EVAL_HOME=~/.cache/anomaly-eval      # where ../shared/eval/setup.sh put its venv and data
    .venv/bin/python benchmarks/detection_quality.py [smd_dev skab_dev] [--markdown out.md]

Needs ``bash ../shared/eval/setup.sh`` and ``$EVAL_HOME/venv/bin/python ../shared/eval/convert.py
smd_dev skab_dev`` first. Every run uses the same defaults: no per-data-set switch exists.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HOME = Path(os.environ.get("EVAL_HOME", Path.home() / ".cache" / "anomaly-eval"))
EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval"
RUNS = {
    "pipeline": "forest,reconstruction,robust_z",
    "forest alone": "forest",
    "reconstruction alone": "reconstruction",
    "robust z alone": "robust_z",
}


def instrument(scores: Path, dataset: str) -> dict[str, float]:
    """Means over devices from score.py's summary line: VUS-PR, and the oracle event F1 (best
    threshold on the test labels, score.py's composite F1)."""
    result = subprocess.run(
        [str(HOME / "venv" / "bin" / "python"), str(EVAL / "score.py"), str(scores), "--windows", str(HOME / "data" / f"{dataset}.windows.json")],
        capture_output=True,
        text=True,
        check=True,
    )
    header = [line for line in result.stdout.splitlines() if line.strip().startswith("VUS-PR")][-1].split()
    values = [line for line in result.stdout.splitlines() if line.startswith("mean over")][-1].split()[4:]
    summary = dict(zip(header, map(float, values), strict=True))
    return {"VUS-PR": summary["VUS-PR"], "event F1 (oracle)": summary["Event-F1"]}


def run(dataset: str, name: str, members: str, rescore: bool = False) -> dict:
    out = HOME / "out" / f"pipeline_{dataset}_{members.replace(',', '-')}"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "anomaly_assets.cli", "evaluate", "--input", str(HOME / "data" / f"{dataset}.csv.gz"),
        "--cohort-cols", "cohort", "--model-scope", "device", "--members", members,
        "--scores-out", f"{out}.csv", "--json",
    ]  # fmt: skip
    if rescore and Path(f"{out}.json").exists():
        report = json.loads(Path(f"{out}.json").read_text())
    else:
        report = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        Path(f"{out}.json").write_text(json.dumps(report))
    macro = report["macro"]["pipeline"]
    row = {
        "dataset": dataset,
        "detector": name,
        **instrument(Path(f"{out}.csv"), dataset),
        "AUC-PR": macro["auc_pr"],
        "event F1 at own threshold": macro["event_f1"],
        "alerts/device/day": macro["alerts_per_device_per_day"],
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="*", default=["smd_dev", "skab_dev"])
    parser.add_argument("--markdown", help="also write the table here")
    parser.add_argument("--rescore", action="store_true", help="score the runs already in $EVAL_HOME/out again")
    args = parser.parse_args()
    rows = [run(dataset, name, members, args.rescore) for dataset in args.datasets for name, members in RUNS.items()]
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
