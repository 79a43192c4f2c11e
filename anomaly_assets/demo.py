"""The demo: materialize the whole graph for a synthetic fleet through Dagster on the embedded
instance (telemetry, training, scoring, incidents and alert deliveries), then summarize what
happened. ``anomaly-assets demo`` runs it."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import numpy as np
import pandas as pd

from anomaly_assets.core.scoring import top_devices
from anomaly_assets.explorer import links
from anomaly_assets.settings import Settings, export_to_environment, prepare_embedded_home

EXPLORER = "http://127.0.0.1:8050"  # where `anomaly-assets explore` serves by default
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
CHANNELS_ENV = "ANOMALY_ASSETS_ALERT_CHANNELS"


@dataclasses.dataclass
class DemoReport:
    settings: Settings
    rows_per_asset: dict[str, int]
    validation_metrics: dict[str, float]
    held_back_quality: dict[str, float]
    model_version: str
    champion_version: str
    top_devices: pd.DataFrame
    scored_days: list[str]
    regression: dict | None  # the firmware regression's cohort incident
    alerts: dict
    seconds: float


def partition_range_tags(first: dt.date, last: dt.date) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }


class AlertSink:
    """A local webhook the demo's alert channel posts to, so alert deliveries run for real."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.received.append(json.loads(body or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:  # keep the demo's output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def __enter__(self) -> AlertSink:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_demo(settings: Settings, days: int, progress: Callable[[str], None] = print) -> DemoReport:
    if days <= settings.training_days:
        raise ValueError(
            f"--days {days} leaves nothing to score after a {settings.training_days}-day training window; "
            f"use at least {settings.training_days + 1}"
        )
    export_to_environment(settings)
    prepare_embedded_home(settings)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        sink = None
        if not os.environ.get(CHANNELS_ENV):  # the user's own channels win; otherwise a local sink
            sink = stack.enter_context(AlertSink())
            stack.enter_context(_environment(CHANNELS_ENV, json.dumps(
                {"channels": [{"name": "demo-webhook", "type": "webhook", "url": sink.url, "min_severity": "high"}]}
            )))  # fmt: skip
        rows, training_metadata, alert_metadata, defs = _materialize(settings, days, progress)
    first = settings.start_date
    training_day = first + dt.timedelta(days=settings.training_days - 1)
    last = first + dt.timedelta(days=days - 1)
    resources = defs.resources
    store, registry = resources["results_store"], resources["model_registry"]
    scored_days = [d.strftime("%Y-%m-%d") for d in pd.date_range(training_day + dt.timedelta(days=1), last)]
    events = store.read_frame(
        "SELECT device_id, cohort, severity, top_feature_1, top_feature_2, top_feature_3 "
        "FROM anomaly_events WHERE partition_date >= :first",
        {"first": scored_days[0]},
    )
    labelled = _scored_with_labels(settings, scored_days)
    top = _with_injected_faults(top_devices(events.assign(is_anomaly=True)), labelled)
    return DemoReport(
        settings=settings,
        rows_per_asset=rows,
        validation_metrics=dict(training_metadata.get("validation_metrics", {})),
        held_back_quality=held_back_quality(labelled),
        model_version=str(training_metadata.get("model_version", "")),
        champion_version=registry.alias_version("champion") or "",
        top_devices=top,
        scored_days=scored_days,
        regression=_regression_incident(resources["telemetry_source"], store),
        alerts={
            "channel": "local webhook (started by the demo)" if sink else f"${CHANNELS_ENV}",
            "delivered": int(alert_metadata.get("delivered", 0)),
            "digested": int(alert_metadata.get("digested", 0)),
            "suppressed_by_cohort_incident": int(alert_metadata.get("suppressed_by_cohort_incident", 0)),
            "failed": int(alert_metadata.get("failed", 0)),
            "received_by_sink": len(sink.received) if sink else None,
            "status": str(alert_metadata.get("status", "")),
        },
        seconds=time.monotonic() - started,
    )


@contextlib.contextmanager
def _environment(name: str, value: str):
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _materialize(settings: Settings, days: int, progress: Callable[[str], None]):
    from anomaly_assets.definitions import build_definitions  # after the environment is set

    defs = build_definitions(settings)
    instance = dg.DagsterInstance.get()
    first = settings.start_date
    training_day = first + dt.timedelta(days=settings.training_days - 1)
    scored = (training_day + dt.timedelta(days=1), first + dt.timedelta(days=days - 1))
    steps = [
        ("telemetry_job", f"ingest, validate and featurize {first}..{training_day}", partition_range_tags(first, training_day), None),
        ("training_job", f"train and register the detector on {first}..{training_day}", {}, training_day.isoformat()),
        ("scoring_job", f"score {scored[0]}..{scored[1]} with the champion", partition_range_tags(*scored), None),
        ("alerting_job", f"group incidents and deliver alerts for {scored[0]}..{scored[1]}", partition_range_tags(*scored), None),
    ]
    rows: dict[str, int] = {}
    training_metadata: dict = {}
    alert_metadata: dict = {}
    for index, (job_name, what, tags, partition_key) in enumerate(steps, start=1):
        progress(f"[{index}/{len(steps)}] {what}")
        # MLflow prints ("Successfully registered model ...", "Created version '1' ..."): keep its
        # chatter out of the summary, and show it only when the step fails.
        chatter = io.StringIO()
        try:
            with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                result = defs.resolve_job_def(job_name).execute_in_process(
                    instance=instance, run_config=QUIET, tags=tags, partition_key=partition_key
                )
        except BaseException:
            print(chatter.getvalue()[-5000:], file=sys.stderr)
            raise
        for event in result.get_asset_materialization_events():
            materialization = event.materialization
            name = materialization.asset_key.to_user_string()
            count = materialization.metadata.get("dagster/row_count")
            if count is not None:
                rows[name] = rows.get(name, 0) + int(count.value)
            if name == "anomaly_detector":
                training_metadata = {k: v.value for k, v in materialization.metadata.items()}
            if name == "alert_deliveries":
                alert_metadata = {k: v.value for k, v in materialization.metadata.items()}
    return rows, training_metadata, alert_metadata, defs


def _scored_with_labels(settings: Settings, days: list[str]) -> pd.DataFrame:
    """The scored days' rows with the synthetic fleet's fault labels (never seen by training)."""
    import pyarrow.parquet as pq

    frames = []
    for day in days:
        scored = pq.read_table(
            settings.parquet_dir / "scored_anomalies" / f"{day}.parquet", columns=["device_id", "timestamp", "score", "is_anomaly"]
        ).to_pandas()
        labels = pq.read_table(
            settings.parquet_dir / "device_features" / f"{day}.parquet",
            columns=["device_id", "timestamp", "is_injected_anomaly", "anomaly_type"],
        ).to_pandas()
        frames.append(scored.merge(labels, on=["device_id", "timestamp"], how="left"))
    rows = pd.concat(frames, ignore_index=True).sort_values(["device_id", "timestamp"], ignore_index=True)
    rows["is_injected_anomaly"] = rows["is_injected_anomaly"].fillna(False).astype(bool)
    return rows


def held_back_quality(rows: pd.DataFrame) -> dict[str, float]:
    """Row and event quality of the champion on the scored days, against the injected faults."""
    from anomaly_assets.core.metrics import classification_metrics, event_f1

    labels = rows["is_injected_anomaly"].to_numpy(dtype=bool)
    flagged = rows["is_anomaly"].to_numpy(dtype=bool)
    # Scores above any flagged row's lowest score are flagged: the threshold in score units.
    threshold = float(rows.loc[flagged, "score"].min()) - 1e-12 if flagged.any() else float(np.inf)
    quality = {"rows": len(rows), "labelled_rows": int(labels.sum()), "flagged_rows": int(flagged.sum())}
    quality.update(classification_metrics(labels, rows["score"].to_numpy(), threshold))
    events = event_f1(labels, flagged, rows["device_id"].to_numpy())
    quality.update({k: events[k] for k in ("event_precision", "event_recall", "event_f1")})
    faults = rows.loc[labels].groupby(["device_id", rows.loc[labels, "timestamp"].dt.strftime("%Y-%m-%d")])["is_anomaly"].any()
    quality["faults_injected"] = len(faults)
    quality["faults_caught"] = int(faults.sum())
    return quality


def _with_injected_faults(top: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Adds, per top device, the faults the synthetic fleet injected on the scored days."""
    from anomaly_assets.core.feature_words import describe_feature

    injected = rows.loc[rows["is_injected_anomaly"]].groupby("device_id")["anomaly_type"].agg(lambda t: ", ".join(sorted(set(t))))
    out = top.copy()
    out["injected_fault"] = out["device_id"].map(injected).fillna("none")
    # The main contributing feature in words (the Dagster metadata and the explorer show all three).
    out["top_feature"] = out["top_features"].map(lambda text: describe_feature(str(text).split(",")[0].strip()))
    return out


def _regression_incident(source, store) -> dict | None:
    """The cohort incident opened for the synthetic firmware regression, if scoring reached it."""
    from anomaly_assets.core import generator

    if not hasattr(source, "fleet_config"):
        return None
    config = source.fleet_config()
    day = config.cohort_regression_date
    if day is None:
        return None
    cohort = "|".join(generator.regressed_cohort(config))
    found = store.read_frame(
        "SELECT incident_id, cohort, started_at, ended_at, devices, cohort_devices, peak_share, severity_level, "
        "top_features FROM incidents WHERE kind = 'cohort' AND cohort = :cohort AND last_partition >= :day "
        "ORDER BY started_at",
        {"cohort": cohort, "day": day.isoformat()},
    )
    return {"day": day.isoformat(), "cohort": cohort, "incidents": found.to_dict("records")}


def _number(value) -> str:
    """Integers as integers (MLflow metadata keeps counts as floats), other numbers to 4 places."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return str(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{float(value):.4f}"


def demo_payload(report: DemoReport) -> dict:
    return {
        "home": str(report.settings.home),
        "rows_per_asset": report.rows_per_asset,
        "validation_metrics": report.validation_metrics,
        "held_back_quality": report.held_back_quality,
        "model_version": report.model_version,
        "champion_version": report.champion_version,
        "scored_days": report.scored_days,
        "top_devices": report.top_devices.to_dict("records"),
        "firmware_regression": report.regression,
        "alerts": report.alerts,
        "commands": commands(report.settings),
        "seconds": round(report.seconds, 1),
    }


def commands(settings: Settings) -> dict[str, str]:
    env = (
        f"ANOMALY_ASSETS_HOME={settings.home} ANOMALY_ASSETS_FLEET_DEVICES={settings.fleet_devices} "
        f"ANOMALY_ASSETS_FLEET_SEED={settings.fleet_seed} ANOMALY_ASSETS_TRAINING_DAYS={settings.training_days}"
        + (f" ANOMALY_ASSETS_FLEET_SHIFT_OFFSET_DAYS={settings.fleet_shift_offset_days}" if settings.fleet_shift_offset_days is not None else "")
    )
    return {
        "dagster": f"{env} DAGSTER_HOME={settings.dagster_home} .venv/bin/dagster dev -w workspace.yaml",
        "mlflow": f".venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri} --port 5000",
        "explorer": f"ANOMALY_ASSETS_HOME={settings.home} .venv/bin/anomaly-assets explore",
        # MLflow's scoring server starts uvicorn by name: the venv's bin must be on PATH.
        "serve": f"PATH=.venv/bin:$PATH MLFLOW_TRACKING_URI={settings.mlflow_tracking_uri} mlflow models serve "
        "-m models:/fleet_anomaly_detector@champion --env-manager local --port 5001",
    }


def format_demo_report(report: DemoReport) -> str:
    from tabulate import tabulate

    settings = report.settings
    lines = [f"\nDone in {report.seconds:.0f} s. State lives in {settings.home}\n", "Rows per asset (all partitions of this demo):"]
    lines += [f"  {name:<22} {count:>12,}" for name, count in report.rows_per_asset.items()]
    lines.append(f"\nDetector version {report.model_version} (champion: version {report.champion_version})")
    lines.append("  on its validation day (where the threshold was chosen):")
    lines += [f"    {name:<22} {_number(value):>12}" for name, value in report.validation_metrics.items()]
    quality = report.held_back_quality
    lines.append(f"  on the held-back scored days {report.scored_days[0]}..{report.scored_days[-1]}, against the injected faults:")
    lines += [f"    {name:<22} {_number(value):>12}" for name, value in quality.items()]
    lines.append(f"\nTop anomalous devices on {report.scored_days[0]}..{report.scored_days[-1]}:")
    if len(report.top_devices):
        table = report.top_devices[["device_id", "cohort", "anomalies", "max_severity", "injected_fault", "top_feature"]]
        lines.append(tabulate(table, headers="keys", showindex=False, floatfmt=".1f", intfmt=","))
    else:
        lines.append("  (none flagged)")
    regression = report.regression
    if regression is not None:
        lines.append(f"\nFirmware regression injected on {regression['day']} into cohort {regression['cohort']}:")
        if regression["day"] not in report.scored_days:
            lines.append("  not among the scored days (use --days to reach it)")
        elif not regression["incidents"]:
            lines.append("  no cohort incident was opened for it")
        for incident in regression["incidents"]:
            lines.append(
                f"  cohort incident {incident['incident_id']}: {incident['devices']} of {incident['cohort_devices']} devices "
                f"flagged (peak share {float(incident['peak_share'] or 0):.0%}), {incident['severity_level']}, "
                f"from {str(incident['started_at'])[:16]} to {str(incident['ended_at'] or 'still open')[:16]}"
            )
        if regression["incidents"]:
            widest = max(regression["incidents"], key=lambda i: i["devices"])
            lines.append(f"  its devices, in the explorer: {links.incident_page(EXPLORER, widest['incident_id'])}")
    alerts = report.alerts
    received = "" if alerts["received_by_sink"] is None else f", {alerts['received_by_sink']} messages received"
    lines.append(
        f"\nAlerts ({alerts['channel']}, severity high and above): {alerts['delivered']} delivered, "
        f"{alerts['digested']} in digests, {alerts['suppressed_by_cohort_incident']} covered by a cohort incident, "
        f"{alerts['failed']} failed{received}"
    )
    cmd = commands(settings)
    lines += [
        "\nLook at it:",
        f"  anomaly explorer (incidents, devices, days)   make explore   -> {EXPLORER}",
        f"     (or: {cmd['explorer']})",
        "  Dagster UI                                    make dev       -> http://127.0.0.1:3000",
        f"     (or: {cmd['dagster']})",
        "  MLflow UI                                     make mlflow    -> http://127.0.0.1:5000",
        f"     (or: {cmd['mlflow']})",
        "  online scoring, MLflow's server on champion   make serve     -> http://127.0.0.1:5001/invocations",
        f"     (or: {cmd['serve']})",
    ]
    return "\n".join(lines)
