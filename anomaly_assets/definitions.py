"""The code location: ``dagster dev -m anomaly_assets.definitions`` or the workspace.yaml."""

from __future__ import annotations

import dagster as dg

from anomaly_assets.defs import jobs
from anomaly_assets.defs.features import assets as feature_assets
from anomaly_assets.defs import schedules
from anomaly_assets.defs.ingestion import assets as ingestion_assets
from anomaly_assets.defs.monitoring import assets as monitoring_assets
from anomaly_assets.defs.monitoring.sensors import drift_retraining_sensor
from anomaly_assets.defs.registry import assets as registry_assets
from anomaly_assets.defs.scoring import assets as scoring_assets
from anomaly_assets.defs.training import assets as training_assets
from anomaly_assets.resources import build_resources
from anomaly_assets.settings import Settings

ASSET_MODULES = (ingestion_assets, feature_assets, training_assets, registry_assets, scoring_assets, monitoring_assets)


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    return dg.Definitions(
        assets=dg.load_assets_from_modules(list(ASSET_MODULES)),
        asset_checks=dg.load_asset_checks_from_modules(list(ASSET_MODULES)),
        jobs=[
            jobs.telemetry_job,
            jobs.training_job,
            jobs.scoring_job,
            registry_assets.promote_model_job,
            registry_assets.rollback_model_job,
        ],
        schedules=[schedules.daily_scoring_schedule, schedules.weekly_retraining_schedule],
        sensors=[drift_retraining_sensor],
        resources=build_resources(settings),
    )


defs = build_definitions()
