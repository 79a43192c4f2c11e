"""champion_model: which registered version is behind the ``champion`` alias, in the asset graph.

The alias lives in MLflow, so the asset is an observable source: its data version is the champion's
version number. ``scored_anomalies`` and ``feature_drift`` depend on it, so after a promotion or a
rollback the UI marks the partitions scored by the previous champion stale, and each
materialization's lineage records the version it used.

Every change is picked up the same way, whoever made it (the promotion gate, ``anomaly-assets model
promote|rollback``, the promote/rollback jobs, or someone in the MLflow UI):
``champion_observation_sensor`` reads the alias each tick and records an observation when it
differs from the last one. "Observe" on the asset in the UI does the same on demand. The gate and
the promote/rollback jobs also record the change in their own run, at once, and the gate records
the first champion too: a partition scored before any observation would name no version, and turn
stale at the first one even when that is the version it was scored with.
"""

from __future__ import annotations

import dagster as dg

from anomaly_assets.resources import MlflowModelRegistry
from anomaly_assets.resources.registry_client import CHAMPION
from anomaly_assets.version import code_version

CHAMPION_MODEL = dg.AssetKey("champion_model")
NO_CHAMPION = "none"
DATA_VERSION_TAG = "dagster/data_version"  # what Dagster reads an observation's data version from


def _observation(model_registry: MlflowModelRegistry) -> tuple[str, dict]:
    version = model_registry.alias_version(CHAMPION) or NO_CHAMPION
    metadata = {"model_name": model_registry.model_name, "champion_version": version}
    return version, metadata


def champion_observed(model_registry: MlflowModelRegistry, change: dict) -> dg.AssetObservation:
    """The observation a champion change made inside a run records at once (the sensor would
    see it within a minute)."""
    return dg.AssetObservation(
        asset_key=CHAMPION_MODEL,
        metadata={
            "model_name": model_registry.model_name,
            "champion_version": change["version"],
            "previous_champion_version": change.get("previous") or NO_CHAMPION,
            "action": change.get("action", ""),
            "reason": change.get("reason", ""),
        },
        tags={DATA_VERSION_TAG: str(change["version"])},
    )


def recorded_champion(instance: dg.DagsterInstance) -> str | None:
    """The champion version the graph last recorded (its newest observation's data version)."""
    records = instance.fetch_observations(CHAMPION_MODEL, limit=1).records
    if not records or records[0].asset_observation is None:
        return None
    return records[0].asset_observation.tags.get(DATA_VERSION_TAG)


@dg.observable_source_asset(
    key=CHAMPION_MODEL,
    group_name="registry",
    kinds={"mlflow"},
    owners=["team:fleet-analytics"],
    description=f"The registered version behind the '{CHAMPION}' alias (data version = version number). "
    "Scoring and drift depend on it: a promotion or rollback marks what the previous champion scored stale.",
)
def champion_model(model_registry: MlflowModelRegistry) -> dg.ObserveResult:
    version, metadata = _observation(model_registry)
    return dg.ObserveResult(data_version=dg.DataVersion(version), metadata=metadata)


@dg.sensor(
    minimum_interval_seconds=60,
    description="Records an observation of champion_model whenever the 'champion' alias points at another "
    "version, whoever moved it (gate, CLI, jobs, MLflow UI).",
)
def champion_observation_sensor(context: dg.SensorEvaluationContext, model_registry: MlflowModelRegistry):
    version, metadata = _observation(model_registry)
    if version == context.cursor:
        return dg.SensorResult(skip_reason=f"champion still version {version}", cursor=context.cursor)
    observation = dg.AssetObservation(
        asset_key=CHAMPION_MODEL,
        metadata={**metadata, "previous_champion_version": context.cursor or NO_CHAMPION, "code_version": code_version()},
        tags={DATA_VERSION_TAG: version},
    )
    return dg.SensorResult(asset_events=[observation], cursor=version)
