"""MLflow as the model registry: ``RegistryOperations`` is everything the project does with it, used
two ways: ``ModelRegistryClient`` (a plain class: what ``anomaly-assets model ...`` builds, without
importing Dagster, scikit-learn or the source drivers, so the commands answer quickly) and the
Dagster resource ``MlflowModelRegistry`` (``resources/model_registry.py``), the same operations
configured by Dagster.

The operations are split at their seams: the connection, names and errors
(``registry_connection.py``), the champion alias with promotion and rollback
(``registry_aliases.py``), registering versions and logging runs (``registry_registration.py``,
``registry_runs.py``); this module adds reading versions back (listing, details, loading a model)
and keeps every name importable from here. Aliases, not stages (MLflow 3): ``challenger`` marks
the newest version, ``champion`` the one scoring uses.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import TYPE_CHECKING, Any

from mlflow.exceptions import MlflowException

from anomaly_assets.resources.registry_connection import (
    CHALLENGER,
    CHAMPION,
    CHAMPION_CHANGE_TAG,
    CHAMPION_HISTORY_TAG,
    EXPERIMENT_NAME,
    MODEL_NAME,
    REQUEST_TIMEOUT_SECONDS,
    UI_URL,
    NoChampionError,
    PromotionRefused,
    RegisteredVersion,
    RegistryError,
)
from anomaly_assets.resources.registry_registration import VersionRegistration

if TYPE_CHECKING:
    from anomaly_assets.core.detector import FleetAnomalyModel

# Callers import the registry's names from here, wherever they are defined.
__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "CHAMPION_CHANGE_TAG",
    "CHAMPION_HISTORY_TAG",
    "EXPERIMENT_NAME",
    "MODEL_NAME",
    "REQUEST_TIMEOUT_SECONDS",
    "UI_URL",
    "ModelRegistryClient",
    "NoChampionError",
    "PromotionRefused",
    "RegisteredVersion",
    "RegistryError",
    "RegistryOperations",
]


class RegistryOperations(VersionRegistration):
    """The registry's operations (the attributes they need: ``RegistryConnection``)."""

    def list_versions(self) -> list[dict[str, Any]]:
        client = self.client()
        try:
            versions = client.search_model_versions(f"name = '{self.model_name}'")
        except MlflowException as error:
            raise self._error(f"failed to list {self.model_name}", error) from None
        aliases_by_version: dict[str, list[str]] = {}
        for alias, version in client.get_registered_model(self.model_name).aliases.items() if versions else []:
            aliases_by_version.setdefault(str(version), []).append(alias)
        rows = []
        for v in sorted(versions, key=lambda v: int(v.version)):
            metrics = client.get_run(v.run_id).data.metrics if v.run_id else {}
            rows.append(
                {
                    "version": str(v.version),
                    "aliases": sorted(aliases_by_version.get(str(v.version), [])),
                    "created": datetime.datetime.fromtimestamp(v.creation_timestamp / 1000, datetime.UTC).isoformat(timespec="seconds"),
                    "training_window": v.tags.get("training_window", ""),
                    "auc_pr": metrics.get("auc_pr"),
                    "auc_roc": metrics.get("auc_roc"),
                    "gate": v.tags.get("promotion_decision", ""),
                    "gate_reasons": v.tags.get("promotion_reasons", ""),
                    "gate_compared_with": v.tags.get("promotion_compared_with", ""),
                    "champion_since": v.tags.get("champion_since", ""),
                    "run_id": v.run_id,
                }
            )
        return rows

    def version_details(self, version: str | None = None) -> dict[str, Any]:
        """One version (default: the champion) as ``list_versions`` shows it, with all its run's
        metrics and its tags, and what a scoring request to it carries: the signature's input
        columns and params (none for a version registered before signatures were logged)."""
        version = str(version) if version else self.alias_version(CHAMPION)
        if version is None:
            raise NoChampionError(f"registered model {self.model_name!r} at {self.where} has no '{CHAMPION}' alias")
        row = next((r for r in self.list_versions() if r["version"] == version), None)
        if row is None:
            raise LookupError(f"{self.model_name} has no version {version} at {self.where}")
        import mlflow.artifacts
        from mlflow.models import Model

        client = self.client()
        try:
            tags = client.get_model_version(self.model_name, version).tags
            location = client.get_model_version_download_uri(self.model_name, version).rstrip("/")
            signature = Model.load(
                mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/MLmodel", tracking_uri=self.tracking_uri)
            ).signature
        except Exception as error:
            raise self._error(f"failed to read {self.model_name} version {version}", error) from None
        inputs = signature.inputs.to_dict() if signature else []
        params = signature.params.to_dict() if signature and signature.params else []
        metrics = client.get_run(row["run_id"]).data.metrics if row["run_id"] else {}
        return {**row, "metrics": metrics, "tags": tags, "inputs": inputs, "params": params, "artifacts": location}

    def latest_version(self) -> str | None:
        try:
            versions = self.client().search_model_versions(f"name = '{self.model_name}'")
        except MlflowException as error:
            raise self._error(f"failed to list {self.model_name}", error) from None
        return str(max(int(v.version) for v in versions)) if versions else None

    def load_version(self, version: str) -> FleetAnomalyModel:
        if version not in self._loaded:
            import mlflow.artifacts

            from anomaly_assets.model_package import fitted_model

            try:
                # The version's artifacts found through this registry's client (a models:/ URI would
                # be resolved against the process-wide registry URI).
                location = self.client().get_model_version_download_uri(self.model_name, str(version))
                self._loaded[version] = fitted_model(
                    mlflow.artifacts.download_artifacts(artifact_uri=location, tracking_uri=self.tracking_uri)
                )
            except Exception as error:
                raise self._error(f"failed to load {self.model_name} version {version}", error) from None
        return self._loaded[version]

    def load_champion(self) -> tuple[str, FleetAnomalyModel]:
        version = self.alias_version(CHAMPION)
        if version is None:
            raise NoChampionError(
                f"registered model {self.model_name!r} at {self.where} has no '{CHAMPION}' alias: "
                "materialize anomaly_detector first (the first trained version becomes champion)"
            )
        return version, self.load_version(version)


@dataclasses.dataclass
class ModelRegistryClient(RegistryOperations):
    """The registry without Dagster (``anomaly-assets model ...``, scripts)."""

    tracking_uri: str
    model_name: str = MODEL_NAME
    experiment_name: str = EXPERIMENT_NAME
    artifact_location: str | None = None
    ui_url: str = UI_URL
    request_timeout_seconds: int = REQUEST_TIMEOUT_SECONDS
    _loaded: dict[str, Any] = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

