"""The model registry as a Dagster resource: ``RegistryOperations`` (``registry_client.py``, the
same code ``anomaly-assets model ...`` runs) with its settings as Dagster config."""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from anomaly_assets.resources.registry_client import (
    EXPERIMENT_NAME,
    MODEL_NAME,
    REQUEST_TIMEOUT_SECONDS,
    UI_URL,
    RegistryOperations,
)


class MlflowModelRegistry(RegistryOperations, dg.ConfigurableResource):
    tracking_uri: str
    model_name: str = MODEL_NAME
    experiment_name: str = EXPERIMENT_NAME
    # Where a new experiment keeps artifacts; None lets the tracking server decide.
    artifact_location: str | None = None
    # Base URL of the MLflow UI for links in Dagster metadata (`make mlflow` serves port 5000).
    ui_url: str = UI_URL
    # An unreachable tracking server fails within about 2 x this (one retry; MLflow's default
    # retries for ~4 minutes). MLFLOW_HTTP_REQUEST_* set in the environment take precedence.
    request_timeout_seconds: int = REQUEST_TIMEOUT_SECONDS
    _loaded: dict = PrivateAttr(default_factory=dict)
