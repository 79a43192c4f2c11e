"""The code location: ``dagster dev -m anomaly_assets.definitions`` or the workspace.yaml."""

from __future__ import annotations

import dagster as dg

from anomaly_assets.defs import jobs
from anomaly_assets.defs.features import assets as feature_assets
from anomaly_assets.defs import schedules
from anomaly_assets.defs.executors import executor_for, scoring_executor_for
from anomaly_assets.defs.alerting import assets as alerting_assets
from anomaly_assets.defs.ingestion import assets as ingestion_assets
from anomaly_assets.defs.inventory import assets as inventory_assets
from anomaly_assets.defs.monitoring import assets as monitoring_assets
from anomaly_assets.defs.monitoring.sensors import drift_retraining_sensor
from anomaly_assets.defs.registry import assets as registry_assets
from anomaly_assets.defs.registry import champion
from anomaly_assets.defs.retention import jobs as retention
from anomaly_assets.defs.scoring import assets as scoring_assets
from anomaly_assets.defs.scoring import device_ranges
from anomaly_assets.defs.training import assets as training_assets
from anomaly_assets.resources import build_resources
from anomaly_assets.settings import Settings

ASSET_MODULES = (ingestion_assets, inventory_assets, feature_assets, training_assets, registry_assets, champion, scoring_assets, monitoring_assets, alerting_assets)


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    scoring_job = jobs.scoring_job_for(scoring_executor_for(settings))  # the daily schedule launches this very job
    return dg.Definitions(
        assets=dg.load_assets_from_modules(list(ASSET_MODULES)),
        asset_checks=dg.load_asset_checks_from_modules(list(ASSET_MODULES)),
        jobs=[
            jobs.telemetry_job,
            jobs.training_job,
            scoring_job,
            registry_assets.promote_model_job,
            registry_assets.rollback_model_job,
            alerting_assets.alerting_job,
            retention.retention_job,
            device_ranges.device_range_scoring_job,
        ],
        schedules=[schedules.daily_scoring_schedule_for(scoring_job), schedules.weekly_retraining_schedule, retention.weekly_retention_schedule],
        sensors=[drift_retraining_sensor, alerting_assets.alerting_automation_sensor, champion.champion_observation_sensor],
        resources={**build_resources(settings), device_ranges.STAGING: device_ranges.staging_io_manager(settings)},
        executor=executor_for(settings),
    )


defs = build_definitions()
