"""The one place that picks resources for an environment (see ``anomaly_assets.settings``)."""

from __future__ import annotations

import dagster as dg

from anomaly_assets.resources.alert_router import AlertRouter
from anomaly_assets.resources.chunk_workers import ChunkWorkers
from anomaly_assets.resources.model_registry import MlflowModelRegistry
from anomaly_assets.resources.parquet_io import PartitionedParquetIOManager
from anomaly_assets.resources.results_store import ResultsStore
from anomaly_assets.resources.sources import build_inventory_source, build_telemetry_source
from anomaly_assets.resources.telemetry_source import SyntheticFleetSource
from anomaly_assets.settings import Settings


def build_resources(settings: Settings) -> dict[str, object]:
    # ANOMALY_ASSETS_SOURCE=synthetic (default) | sql | odbc | files; secrets via dg.EnvVar.
    telemetry_source = build_telemetry_source(settings) if settings.source != "synthetic" else SyntheticFleetSource(
        n_devices=settings.fleet_devices,
        seed=settings.fleet_seed,
        start_date=settings.start_date.isoformat(),
        fleet_shift_offset_days=settings.fleet_shift_offset_days,
    )
    inventory_source = build_inventory_source(settings)  # ANOMALY_ASSETS_INVENTORY_URL (optional)
    if settings.environment == "production":
        return {
            "telemetry_source": telemetry_source,
            "inventory_source": inventory_source,
            "results_store": ResultsStore(url=dg.EnvVar("ANOMALY_ASSETS_RESULTS_URL")),
            "model_registry": MlflowModelRegistry(
                tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"), request_timeout_seconds=settings.mlflow_timeout_seconds
            ),
            "io_manager": PartitionedParquetIOManager(
                base_path=dg.EnvVar("ANOMALY_ASSETS_STORAGE_PATH"), devices_per_chunk=settings.devices_per_chunk
            ),
            "alert_router": AlertRouter.from_env(),  # ANOMALY_ASSETS_ALERT_CHANNELS, DAGSTER_UI_URL
            "chunk_workers": ChunkWorkers(devices_per_chunk=settings.devices_per_chunk),  # ANOMALY_ASSETS_CHUNK_WORKERS
        }
    for directory in (settings.home, settings.mlflow_dir, settings.parquet_dir):
        directory.mkdir(parents=True, exist_ok=True)
    return {
        "telemetry_source": telemetry_source,
        "inventory_source": inventory_source,
        "results_store": ResultsStore(url=settings.results_url),
        "model_registry": MlflowModelRegistry(
            tracking_uri=settings.mlflow_tracking_uri,
            artifact_location=settings.mlflow_artifact_location,
            request_timeout_seconds=settings.mlflow_timeout_seconds,
        ),
        "io_manager": PartitionedParquetIOManager(
            base_path=str(settings.parquet_dir), devices_per_chunk=settings.devices_per_chunk
        ),
        "alert_router": AlertRouter.from_env(),  # ANOMALY_ASSETS_ALERT_CHANNELS, DAGSTER_UI_URL
        "chunk_workers": ChunkWorkers(devices_per_chunk=settings.devices_per_chunk),  # ANOMALY_ASSETS_CHUNK_WORKERS
    }
