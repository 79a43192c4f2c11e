"""The ``anomaly-assets`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from anomaly_assets.settings import Settings


def _demo(args: argparse.Namespace) -> int:
    from anomaly_assets.demo import demo_payload, format_demo_report, run_demo

    base = Settings.from_env()
    settings = Settings(
        home=Path(args.home).absolute() if args.home else base.home,
        start_date=base.start_date,
        training_days=args.train_days,
        fleet_devices=args.devices,
        fleet_seed=args.seed,
        fleet_shift_offset_days=args.fleet_shift_day,
        devices_per_chunk=base.devices_per_chunk,
    )
    for noisy in ("mlflow", "alembic", "dagster"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # One line per step, whole, on stderr; the one duration is the total at the end.
    progress = (lambda _m: None) if args.json else lambda m: print(m, file=sys.stderr, flush=True)
    report = run_demo(settings, args.days, progress=progress)
    if args.json:
        print(json.dumps(demo_payload(report), indent=2, default=str))
        return 0
    print(format_demo_report(report))
    return 0


def _registry():
    """The registry build_resources picks for this environment, as the plain client: `model`
    commands load the MLflow client and nothing of Dagster, scikit-learn or the source drivers."""
    from anomaly_assets.resources.registry_client import ModelRegistryClient

    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    settings = Settings.from_env()
    timeout = settings.mlflow_timeout_seconds
    if settings.environment == "production":
        uri = os.environ.get("MLFLOW_TRACKING_URI", "")
        if not uri:
            raise ValueError("ANOMALY_ASSETS_ENV=production reads the MLflow server from MLFLOW_TRACKING_URI, which is not set")
        return ModelRegistryClient(tracking_uri=uri, request_timeout_seconds=timeout)
    return ModelRegistryClient(
        tracking_uri=settings.mlflow_tracking_uri,
        artifact_location=settings.mlflow_artifact_location,
        request_timeout_seconds=timeout,
    )


def _print(args: argparse.Namespace, payload, text: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if args.json else text)


def _model_list(args: argparse.Namespace) -> int:
    registry = _registry()
    versions = registry.list_versions()
    history = registry.champion_history()
    lines = [f"{registry.model_name} at {registry.where}"]
    for v in versions:
        auc = "" if v["auc_pr"] is None else f"  auc_pr={v['auc_pr']:.4f}"
        lines.append(
            f"  version {v['version']:>3}  {','.join(v['aliases']) or '-':<20} window {v['training_window'] or '-'}{auc}"
            + (f"  gate={v['gate']}" if v["gate"] else "")
        )
        if v["gate"]:
            against = f" against version {v['gate_compared_with']}" if v["gate_compared_with"] else ""
            for reason in filter(None, (r.strip() for r in v["gate_reasons"].split(";"))):
                lines.append(f"               gate{against}: {reason}")
    if not versions:
        lines.append("  (no versions: materialize anomaly_detector first)")
    if history:
        lines.append("champion history (newest last):")
        for entry in history[-5:]:
            lines.append(
                f"  {entry['at']}  {entry['action']:<8} version {entry['previous'] or '-'} -> {entry['version']}"
                f"  by {entry['actor']}: {entry['reason']}"
            )
    _print(args, {"model": registry.model_name, "versions": versions, "champion_history": history}, "\n".join(lines))
    return 0


def _model_show(args: argparse.Namespace) -> int:
    registry = _registry()
    v = registry.version_details(None if args.version is None else str(args.version))
    metrics = "  ".join(f"{k}={int(x) if float(x).is_integer() else round(x, 4)}" for k, x in sorted(v["metrics"].items()))
    lines = [
        f"{registry.model_name} version {v['version']} ({', '.join(v['aliases']) or 'no alias'}) at {registry.where}",
        f"  created {v['created']}, training window {v['training_window'] or '-'}, run {v['run_id'] or '-'}",
        f"  metrics: {metrics or '-'}",
    ]
    if v["gate"]:
        against = f" against version {v['gate_compared_with']}" if v["gate_compared_with"] else ""
        lines.append(f"  gate {v['gate']}{against}: {v['gate_reasons'] or 'no reasons recorded'}")
    if v["inputs"]:
        lines.append("  a scoring request's rows carry: " + ", ".join(f"{c['name']} ({c['type']})" for c in v["inputs"]))
        lines += [f"  param {p['name']} ({p['type']}, default {p['default']!r})" for p in v["params"]]
        lines.append(
            f"  serve it: mlflow models serve -m models:/{registry.model_name}/{v['version']} --env-manager local"
        )
    else:
        lines.append("  no signature (registered before versions carried one): retrain to serve it")
    _print(args, v, "\n".join(lines))
    return 0


def _results_store():
    """The results database of this environment (ANOMALY_ASSETS_RESULTS_URL in production), without
    Dagster: `model promote|rollback` write the audit trail and stay quick."""
    from anomaly_assets.resources.results_store import ResultsDatabase, production_results_url

    settings = Settings.from_env()
    if settings.environment == "production":
        return ResultsDatabase(url=production_results_url())
    settings.home.mkdir(parents=True, exist_ok=True)
    return ResultsDatabase(url=settings.results_url)


def _model_promote(args: argparse.Namespace) -> int:
    from anomaly_assets import audit
    from anomaly_assets.core.audit import cli_actor

    version, actor = str(args.version), cli_actor()
    entry = _registry().promote(version, reason=args.reason, actor=actor.label(), force=args.force)
    if entry is None:
        _print(args, {"version": version, "changed": False}, f"version {version} is champion already: nothing changed")
        return 0
    audit.record_champion_change(_results_store(), actor, entry)
    _print(args, {**entry, "changed": True}, f"champion: version {entry['previous'] or '-'} -> {entry['version']}")
    return 0


def _model_rollback(args: argparse.Namespace) -> int:
    from anomaly_assets import audit
    from anomaly_assets.core.audit import cli_actor

    actor = cli_actor()
    entry = _registry().rollback(reason=args.reason, actor=actor.label())
    audit.record_champion_change(_results_store(), actor, entry)
    _print(args, entry, f"champion rolled back: version {entry['previous']} -> {entry['version']}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from anomaly_assets import audit
    from anomaly_assets.core.audit import format_entries

    rows = audit.entries(_results_store(), action=args.action, limit=args.limit)
    _print(args, rows, format_entries(rows))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from anomaly_assets.resources.results_store import schema_revision, upgrade_schema

    store = _results_store()
    engine = sa.create_engine(store.url)
    before = schema_revision(engine)
    upgrade_schema(engine)
    after = schema_revision(engine)
    engine.dispose()
    where = sa.make_url(store.url).render_as_string(hide_password=True)
    print(f"results database {where}: " + (f"migrated {before or 'empty'} -> {after}" if before != after else f"at {after} already"))
    return 0


def _explore(args: argparse.Namespace) -> int:
    from anomaly_assets.explorer.serve import serve

    return serve(host=args.host, port=args.port, threads=args.threads)


def _bench(args: argparse.Namespace) -> int:
    from anomaly_assets.benchmark import format_report, run_benchmark

    report = run_benchmark(
        devices=args.devices,
        chunk_devices=args.chunk_devices,
        reference_devices=args.reference_devices,
        train_devices=args.train_devices,
        workers=args.workers,
        training_devices=args.training_devices,
        training_days=args.training_days,
        asset_path=args.asset_path,
        progress=(lambda _m: None) if args.json else lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from anomaly_assets.core.evaluation import EvaluationConfig, evaluate, format_report, read_long
    from anomaly_assets.core.smd import read_smd

    cohorts = tuple(c.strip() for c in (args.cohort_cols or "").split(",") if c.strip())
    machines = [m.strip() for m in (args.machines or "").split(",") if m.strip()]
    if machines and args.format != "smd":
        raise ValueError("--machines applies to --format smd only")
    if args.format == "smd":
        frame = read_smd(args.input, machines or None)
    else:
        if not Path(args.input).is_file():
            raise FileNotFoundError(f"--input {args.input} is not a file")
        frame = read_long(args.input)
    scope = args.model_scope or ("device" if args.format == "smd" else "fleet")
    quiet = args.json
    detector = EvaluationConfig().detector
    members = tuple(m.strip() for m in (args.members or "").split(",") if m.strip()) or detector.members
    unknown = sorted(set(members) - set(detector.members))
    if unknown:
        raise ValueError(f"--members: unknown member(s) {unknown}; known: {','.join(detector.members)}")
    if args.alert_budget is not None:
        detector = dataclasses.replace(detector, alert_budget=args.alert_budget)
    report = evaluate(
        frame,
        EvaluationConfig(cohort_columns=cohorts, model_scope=scope, detector=dataclasses.replace(detector, members=members)),
        progress=(lambda _m: None) if quiet else lambda m: print(m, file=sys.stderr, flush=True),
    )
    if args.scores_out:
        out = Path(args.scores_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix in (".parquet", ".pq"):
            report.scores.to_parquet(out, index=False)
        else:
            report.scores.to_csv(out, index=False)
    payload = {**report.as_dict(), "model_scope": scope, "scores_out": args.scores_out}
    _print(args, payload, format_report(report) + (f"\nTest-row scores written to {args.scores_out}" if args.scores_out else ""))
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
    demo.add_argument(
        "--fleet-shift-day",
        type=int,
        help="inject a fleet-wide firmware shift from this day on (0 = first day), to exercise drift monitoring",
    )
    demo.add_argument("--home", help="state directory (default $ANOMALY_ASSETS_HOME or .anomaly_home)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.set_defaults(handler=_demo)

    bench = commands.add_parser(
        "bench",
        help="time the partition path end to end against a naive reference, measured in the same run",
        description="Generate one day for N devices (plus the previous day for the rolling lookback), then "
        "validate, build features, apply cohort z-scores and baselines, score and persist, chunk by chunk; "
        "time a naive pandas/scikit-learn/to_sql pipeline on the same rows and print the ratios.",
    )
    bench.add_argument("--devices", type=int, default=10_000, help="devices in the scored day (default 10,000)")
    bench.add_argument("--chunk-devices", type=int, default=500, help="devices per chunk (default 500)")
    bench.add_argument(
        "--reference-devices", type=int, default=2_500, help="devices the naive reference runs on (default 2,500)"
    )
    bench.add_argument(
        "--train-devices", type=int, default=1_000, help="devices the fast path's model is fitted on, 7 days (default 1,000)"
    )
    bench.add_argument(
        "--training-devices",
        type=int,
        default=1_000,
        help="devices in the window training_job trains on through the assets (default 1,000; 0 skips)",
    )
    bench.add_argument("--training-days", type=int, default=7, help="days in that training window (default 7)")
    bench.add_argument(
        "--asset-path",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run scoring_job through the Dagster assets for the same day, for the ratio (default: yes)",
    )
    bench.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default: 2, or 1 on one core)"
    )
    bench.add_argument("--json", action="store_true", help="print the measurements as JSON")
    bench.set_defaults(handler=_bench)

    evaluate = commands.add_parser(
        "evaluate",
        help="backtest the pipeline on a labelled file, next to a plain IsolationForest on the raw metrics",
        description="Run the assets' pipeline (features at the file's sampling interval, cohort stats, baselines, "
        "the detector ensemble) on a labelled "
        "long-format file (device_id, timestamp, optional split train/test, label 0/1, optional cohort "
        "columns; every other numeric column is a metric) and report per device and overall AUC-ROC, AUC-PR, "
        "event-level F1 without point adjustment (at the pipeline's threshold and at the best threshold) and "
        "alerts per device per day, side by side with a plain IsolationForest on the raw metrics.",
    )
    evaluate.add_argument("--input", required=True, help="long-format CSV/parquet file, or the SMD folder with --format smd")
    evaluate.add_argument(
        "--format", choices=("long", "smd"), default="long", help="input layout (default long; smd: Server Machine Dataset)"
    )
    evaluate.add_argument("--cohort-cols", help="comma-separated cohort columns (default: none, one fleet cohort)")
    evaluate.add_argument("--machines", help="with --format smd: comma-separated machines (default: all with data)")
    evaluate.add_argument(
        "--model-scope",
        choices=("fleet", "device"),
        help="one model for all devices (fleet, default for long) or one per device (device, default for smd)",
    )
    evaluate.add_argument("--scores-out", help="write device_id, timestamp, score, is_anomaly, label of the test rows (CSV or .parquet)")
    evaluate.add_argument(
        "--members",
        help="comma-separated ensemble members to fuse (default all: forest,reconstruction,robust_z); one name "
        "measures that member alone",
    )
    evaluate.add_argument(
        "--alert-budget", type=float, help="alert events per device per day the threshold allows (default 0.1)"
    )
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    evaluate.set_defaults(handler=_evaluate)

    model = commands.add_parser(
        "model", help="list, show, promote and roll back detector versions in the MLflow registry",
        description="Manage the registered detector: the 'champion' alias is what scoring uses.",
    )
    actions = model.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="versions with aliases, training window, metrics, gate decision and reasons")
    listing.add_argument("--json", action="store_true", help="print as JSON")
    listing.set_defaults(handler=_model_list)
    show = actions.add_parser(
        "show",
        help="one version: aliases, metrics, gate decision, and the columns a scoring request carries",
        description="One version (default: the champion): aliases, training window, its run's metrics, the "
        "gate's decision and reasons, and its signature (the columns and params a scoring request carries).",
    )
    show.add_argument("--version", type=int, help="the model version (default: the champion)")
    show.add_argument("--json", action="store_true", help="print as JSON (with the version's tags)")
    show.set_defaults(handler=_model_show)
    promote = actions.add_parser(
        "promote",
        help="point 'champion' at a version",
        description="Point 'champion' at a version. A version the promotion gate refused needs --force; "
        "promoting the current champion changes nothing.",
    )
    promote.add_argument("--version", required=True, type=int, help="the model version to make champion")
    promote.add_argument("--reason", default="manual promotion", help="recorded in the champion history")
    promote.add_argument("--force", action="store_true", help="promote a version the promotion gate refused")
    promote.add_argument("--json", action="store_true", help="print as JSON")
    promote.set_defaults(handler=_model_promote)
    rollback = actions.add_parser("rollback", help="move 'champion' back to the previous champion")
    rollback.add_argument("--reason", default="manual rollback", help="recorded in the champion history")
    rollback.add_argument("--json", action="store_true", help="print as JSON")
    rollback.set_defaults(handler=_model_rollback)

    audit = commands.add_parser(
        "audit",
        help="who changed the champion, ran retention or changed the alert channels, when and why",
        description="The audit trail in the results database, oldest first: every champion change (gate, "
        "first version, CLI, promote/rollback jobs), every retention run that was not a dry run, every "
        "change of the alert channels configuration.",
    )
    audit.add_argument("--action", help="only actions starting with this, e.g. champion, retention.run, alert_channels")
    audit.add_argument("--limit", type=int, default=200, help="the newest N entries (default 200)")
    audit.add_argument("--json", action="store_true", help="print as JSON")
    audit.set_defaults(handler=_audit)

    migrate = commands.add_parser(
        "migrate",
        help="bring the results database to the newest schema (run it as the database's owner role)",
        description="Apply the results database's Alembic migrations. In production the services connect "
        "with roles that may not create or alter tables: run this with ANOMALY_ASSETS_RESULTS_URL naming "
        "the owner role (docker-compose's `migrate` service does) before starting them.",
    )
    migrate.set_defaults(handler=_migrate)

    explore = commands.add_parser(
        "explore",
        help="serve the anomaly explorer: incidents, devices, days and the quarantine in a browser",
        description="A read-only web app over the results database (and the partition files for a device's "
        "metrics) of this environment (ANOMALY_ASSETS_HOME, or ANOMALY_ASSETS_ENV=production). "
        "Set ANOMALY_ASSETS_EXPLORER_TOKEN to require a bearer token.",
    )
    explore.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    explore.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    explore.add_argument("--threads", type=int, default=4, help="worker threads (default 4)")
    explore.set_defaults(handler=_explore)
    return parser


def main(argv: list[str] | None = None) -> int:
    # MLflow configures its loggers when imported: quiet them before that, for readable output.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, LookupError, FileNotFoundError, RuntimeError) as error:
        print(f"anomaly-assets {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # an MLflow call outside the registry's own error handling
        from anomaly_assets.redaction import redact
        from anomaly_assets.resources.mlflow_auth import auth_failure

        refused = auth_failure(error, redact(os.environ.get("MLFLOW_TRACKING_URI", "the tracking server")))
        if refused is None:
            raise
        print(f"anomaly-assets {args.command}: error: {refused}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
