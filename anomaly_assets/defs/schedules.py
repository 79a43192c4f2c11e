"""Schedules: score the last complete day every day; retrain (train, register, gate) every week.

Both ask the daily partitions definition which day is the last complete one at the tick, so no
date arithmetic lives here. The daily run is Dagster's own schedule for a partitioned job: it
follows the partitions' cadence (one run a day) at the configured time of day. The retraining
keeps a cron of its own, because Dagster's builder can only schedule a daily-partitioned job
daily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from anomaly_assets.defs.jobs import training_job
from anomaly_assets.defs.partitions import SETTINGS, daily_partitions

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


def daily_scoring_schedule_for(job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """The daily run of ``job`` (the code location passes the scoring job it defines)."""
    return dg.build_schedule_from_partitioned_job(
        job,
        name="daily_scoring_schedule",
        hour_of_day=SETTINGS.scoring_time.hour,
        minute_of_hour=SETTINGS.scoring_time.minute,
        description="Device inventory and raw telemetry through scored anomalies and feature drift for the last "
        "complete day (yesterday, UTC); its incidents and alerts follow by declarative automation.",
    )


def last_complete_day(context: dg.ScheduleEvaluationContext) -> str | None:
    """The newest partition whose day has ended at the tick (yesterday, UTC); None before the first."""
    with dg.partition_loading_context(effective_dt=context.scheduled_execution_time):
        return daily_partitions.get_last_partition_key()


@dg.schedule(job=training_job, cron_schedule=SETTINGS.retraining_cron, execution_timezone="UTC")
def weekly_retraining_schedule(context: dg.ScheduleEvaluationContext):
    """Train on the window ending with the last complete day, register the version and run the promotion gate."""
    partition = last_complete_day(context)
    if partition is None:
        return dg.SkipReason(f"no daily partition has ended yet (the first is {SETTINGS.start_date})")
    return dg.RunRequest(run_key=f"retraining-{partition}", partition_key=partition)
