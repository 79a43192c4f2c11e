"""Schedules: score yesterday every day; retrain (train, register, gate) every week."""

import datetime as dt

import dagster as dg

from anomaly_assets.defs.jobs import scoring_job, training_job
from anomaly_assets.defs.partitions import SETTINGS


def _yesterday(context: dg.ScheduleEvaluationContext) -> str:
    return (context.scheduled_execution_time - dt.timedelta(days=1)).strftime("%Y-%m-%d")


@dg.schedule(job=scoring_job, cron_schedule=SETTINGS.scoring_cron, execution_timezone="UTC")
def daily_scoring_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Raw telemetry through scored anomalies and feature drift for yesterday's partition."""
    partition = _yesterday(context)
    return dg.RunRequest(run_key=f"scoring-{partition}", partition_key=partition)


@dg.schedule(job=training_job, cron_schedule=SETTINGS.retraining_cron, execution_timezone="UTC")
def weekly_retraining_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Train on the window ending yesterday, register the version and run the promotion gate."""
    partition = _yesterday(context)
    return dg.RunRequest(run_key=f"retraining-{partition}", partition_key=partition)
