"""Which executor runs a job's steps, from ANOMALY_ASSETS_EXECUTOR.

Unset, the scoring job runs its steps in one process (each step of its own process would pay a
Python start-up and the code location's imports, seconds per step, against a few seconds of work;
its heavy steps spread their chunks over a worker pool instead) and the other jobs keep
Dagster's default (a process per step). Set, it applies to every job.
"""

from __future__ import annotations

import dagster as dg

from anomaly_assets.settings import Settings


def executor_for(settings: Settings) -> dg.ExecutorDefinition | None:
    """The code location's executor; None keeps Dagster's default (multiprocess on one machine)."""
    if settings.executor == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(
            {"broker": {"env": "ANOMALY_ASSETS_CELERY_BROKER"}, "backend": {"env": "ANOMALY_ASSETS_CELERY_BACKEND"}}
        )
    if settings.executor == "in_process":
        return dg.in_process_executor
    return None


def scoring_executor_for(settings: Settings) -> dg.ExecutorDefinition | None:
    """The scoring job's own executor: in-process unless ANOMALY_ASSETS_EXECUTOR says otherwise
    (None: the code location's executor applies)."""
    return dg.in_process_executor if not settings.executor else None
