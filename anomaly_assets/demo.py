"""The demo: materialize the whole graph for a synthetic fleet through Dagster on the embedded
instance, then summarize what happened. ``anomaly-assets demo`` runs it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable

import dagster as dg
import pandas as pd

from anomaly_assets.core.scoring import top_devices

from anomaly_assets.settings import Settings, export_to_environment, prepare_embedded_home

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclasses.dataclass
class DemoReport:
    settings: Settings
    rows_per_asset: dict[str, int]
    validation_metrics: dict[str, float]
    model_version: str
    champion_version: str
    top_devices: pd.DataFrame
    scored_days: list[str]
    seconds: float


def partition_range_tags(first: dt.date, last: dt.date) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }


def run_demo(settings: Settings, days: int, progress: Callable[[str], None] = print) -> DemoReport:
    if days <= settings.training_days:
        raise ValueError(
            f"--days {days} leaves nothing to score after a {settings.training_days}-day training window; "
            f"use at least {settings.training_days + 1}"
        )
    export_to_environment(settings)
    prepare_embedded_home(settings)
    from anomaly_assets.definitions import build_definitions  # after the environment is set

    defs = build_definitions(settings)
    instance = dg.DagsterInstance.get()
    first = settings.start_date
    training_day = first + dt.timedelta(days=settings.training_days - 1)
    last = first + dt.timedelta(days=days - 1)
    started = time.monotonic()
    steps = [
        ("telemetry_job", f"ingest, validate and build features for {first}..{training_day}", partition_range_tags(first, training_day), None),
        ("training_job", f"fit cohort stats and baselines, train and register the detector on {first}..{training_day}", {}, training_day.isoformat()),
        ("scoring_job", f"score {training_day + dt.timedelta(days=1)}..{last} with the champion", partition_range_tags(training_day + dt.timedelta(days=1), last), None),
    ]
    rows: dict[str, int] = {}
    training_metadata: dict = {}
    for index, (job_name, what, tags, partition_key) in enumerate(steps, start=1):
        progress(f"[{index}/{len(steps)}] {what} ({time.monotonic() - started:.0f}s elapsed)")
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, run_config=QUIET, tags=tags, partition_key=partition_key
        )
        for event in result.get_asset_materialization_events():
            materialization = event.materialization
            name = materialization.asset_key.to_user_string()
            count = materialization.metadata.get("dagster/row_count")
            if count is not None:
                rows[name] = rows.get(name, 0) + int(count.value)
            if name == "anomaly_detector":
                training_metadata = {k: v.value for k, v in materialization.metadata.items()}

    resources = defs.resources
    store, registry = resources["results_store"], resources["model_registry"]
    scored_days = [d.strftime("%Y-%m-%d") for d in pd.date_range(training_day + dt.timedelta(days=1), last)]
    events = store.read_frame(
        "SELECT device_id, cohort, severity, top_feature_1, top_feature_2, top_feature_3 "
        "FROM anomaly_events WHERE partition_date >= :first",
        {"first": scored_days[0]},
    )
    top = top_devices(events.assign(is_anomaly=True))
    return DemoReport(
        settings=settings,
        rows_per_asset=rows,
        validation_metrics=dict(training_metadata.get("validation_metrics", {})),
        model_version=str(training_metadata.get("model_version", "")),
        champion_version=registry.alias_version("champion") or "",
        top_devices=top,
        scored_days=scored_days,
        seconds=time.monotonic() - started,
    )
