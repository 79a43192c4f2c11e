"""The ``anomaly-assets`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from anomaly_assets.settings import Settings


def _demo(args: argparse.Namespace) -> int:
    from anomaly_assets.demo import run_demo

    base = Settings.from_env()
    settings = Settings(
        home=Path(args.home).absolute() if args.home else base.home,
        start_date=base.start_date,
        training_days=args.train_days,
        fleet_devices=args.devices,
        fleet_seed=args.seed,
    )
    quiet = args.json
    for noisy in ("mlflow", "alembic", "dagster"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    report = run_demo(settings, args.days, progress=(lambda _m: None) if quiet else lambda m: print(m, flush=True))
    if args.json:
        print(
            json.dumps(
                {
                    "home": str(settings.home),
                    "rows_per_asset": report.rows_per_asset,
                    "validation_metrics": report.validation_metrics,
                    "model_version": report.model_version,
                    "champion_version": report.champion_version,
                    "scored_days": report.scored_days,
                    "top_devices": report.top_devices.to_dict("records"),
                    "seconds": round(report.seconds, 1),
                },
                indent=2,
                default=str,
            )
        )
        return 0
    home = settings.home
    print(f"\nDone in {report.seconds:.0f}s. State lives in {home}\n")
    print("Rows per asset (all partitions of this demo):")
    for name, count in report.rows_per_asset.items():
        print(f"  {name:<22} {count:>10,}")
    print(f"\nDetector version {report.model_version} (champion: version {report.champion_version}), validation slice:")
    for name, value in report.validation_metrics.items():
        print(f"  {name:<22} {value}")
    print(f"\nTop anomalous devices on {report.scored_days[0]}..{report.scored_days[-1]}:")
    print(report.top_devices.to_string(index=False) if len(report.top_devices) else "  (none flagged)")
    env = (
        f"ANOMALY_ASSETS_HOME={home} ANOMALY_ASSETS_FLEET_DEVICES={settings.fleet_devices} "
        f"ANOMALY_ASSETS_FLEET_SEED={settings.fleet_seed} ANOMALY_ASSETS_TRAINING_DAYS={settings.training_days}"
    )
    print("\nOpen the Dagster UI on these stores:   make dev")
    print(f"   (or: {env} DAGSTER_HOME={settings.dagster_home} .venv/bin/dagster dev -w workspace.yaml)")
    print("Open the MLflow UI:                    make mlflow")
    print(f"   (or: .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri} --port 5000)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomaly-assets", description="Dagster-orchestrated anomaly detection for device-fleet telemetry."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="materialize the whole asset graph for a synthetic fleet and summarize it",
        description="Ingest, validate and featurize a synthetic fleet, train and register a detector in "
        "MLflow, score the following days with the champion, and print what was found.",
    )
    demo.add_argument("--devices", type=int, default=200, help="devices in the synthetic fleet (default 200)")
    demo.add_argument("--days", type=int, default=10, help="days to materialize, training window included (default 10)")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the fleet (default 7)")
    demo.add_argument("--train-days", type=int, default=7, help="days in the training window (default 7)")
    demo.add_argument("--home", help="state directory (default $ANOMALY_ASSETS_HOME or .anomaly_home)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, LookupError, FileNotFoundError) as error:
        print(f"anomaly-assets {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
