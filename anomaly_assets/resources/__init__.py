"""Resources, and ``build_resources``: the one place that picks them for an environment.

Names are imported on first use, so a process that needs one resource module (the benchmark's
coordinator writing the results database, say) does not load MLflow and every source driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AlertRouter": "alert_router",
    "ChunkWorkers": "chunk_workers",
    "MlflowModelRegistry": "model_registry",
    "ModelRegistryClient": "registry_client",
    "PartitionedParquetIOManager": "parquet_io",
    "ResultsStore": "results_resource",
    "SyntheticFleetSource": "telemetry_source",
    "TelemetrySource": "telemetry_source",
    "SqlTelemetrySource": "sources",
    "OdbcTelemetrySource": "sources",
    "FileTelemetrySource": "sources",
    "InventorySource": "sources",
    "build_inventory_source": "sources",
    "build_telemetry_source": "sources",
    "build_resources": "environment",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from anomaly_assets.resources.alert_router import AlertRouter
    from anomaly_assets.resources.chunk_workers import ChunkWorkers
    from anomaly_assets.resources.environment import build_resources
    from anomaly_assets.resources.model_registry import MlflowModelRegistry
    from anomaly_assets.resources.registry_client import ModelRegistryClient
    from anomaly_assets.resources.parquet_io import PartitionedParquetIOManager
    from anomaly_assets.resources.results_resource import ResultsStore
    from anomaly_assets.resources.sources import (
        FileTelemetrySource,
        InventorySource,
        OdbcTelemetrySource,
        SqlTelemetrySource,
        build_inventory_source,
        build_telemetry_source,
    )
    from anomaly_assets.resources.telemetry_source import SyntheticFleetSource, TelemetrySource


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
