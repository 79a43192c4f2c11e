"""What every registry operation stands on: the names, the errors, and ``RegistryConnection``, an
``MlflowClient`` built with the registry's own tracking URI (as registry URI too), never MLflow's
process-wide URI or active run, so two registries in one process do not meet."""

from __future__ import annotations

import dataclasses
import os

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from anomaly_assets.redaction import redact, url_secrets
from anomaly_assets.resources.mlflow_auth import auth_failure

MODEL_NAME = "fleet_anomaly_detector"
EXPERIMENT_NAME = "anomaly_assets"
UI_URL = "http://127.0.0.1:5000"  # the MLflow UI `make mlflow` serves
REQUEST_TIMEOUT_SECONDS = 10
CHAMPION = "champion"
CHALLENGER = "challenger"
CHAMPION_HISTORY_TAG = "champion_history"  # MLflow keeps no alias history; the project does
HISTORY_LIMIT = 40
# The same history for people: one registered-model tag per change, a line each on the MLflow page.
CHAMPION_CHANGE_TAG = "champion_change_"
# MLflow 3 opens an experiment without this tag in its GenAI ("Traces") view; ours are classic runs.
EXPERIMENT_KIND_TAG, CLASSIC_RUNS = "mlflow.experimentKind", "custom_model_development"


class NoChampionError(LookupError):
    pass


class RegistryError(RuntimeError):
    """MLflow could not be reached or failed; the message names the tracking URI."""


class PromotionRefused(ValueError):
    """A manual promotion the gate refused, asked for without ``force``."""


@dataclasses.dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    aliases: tuple[str, ...]
    experiment_id: str


class RegistryConnection:
    """The class using it provides ``tracking_uri``, ``model_name``, ``experiment_name``,
    ``artifact_location`` (None: the tracking server decides), ``ui_url``,
    ``request_timeout_seconds`` and ``_loaded`` (a dict: models loaded by this registry)."""

    @property
    def where(self) -> str:
        """The tracking URI as messages show it (credentials masked)."""
        return redact(self.tracking_uri)

    def client(self) -> MlflowClient:
        # An unreachable tracking server fails within about 2 x the timeout (one retry; MLflow's
        # default retries for ~4 minutes). MLflow reads these per process: MLFLOW_HTTP_REQUEST_*
        # set in the environment, or by the first registry, take precedence.
        for variable, value in (
            ("MLFLOW_HTTP_REQUEST_TIMEOUT", self.request_timeout_seconds),
            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 1),
            ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 1),
        ):
            os.environ.setdefault(variable, str(value))
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def alias_version(self, alias: str) -> str | None:
        """The version behind ``alias``; None only when the alias (or the model) does not exist.
        Any other failure raises: an outage must never look like "no champion yet"."""
        try:
            return str(self.client().get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException as error:
            missing_model = error.error_code == "RESOURCE_DOES_NOT_EXIST"
            missing_alias = error.error_code == "INVALID_PARAMETER_VALUE" and f"alias {alias} not found" in str(error)
            if missing_model or missing_alias:
                return None
            raise self._error(f"failed to read the '{alias}' alias of {self.model_name}", error) from None

    def _error(self, what: str, error: BaseException) -> RegistryError:
        """A RegistryError naming the (redacted) tracking URI and MLflow's first line."""
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if refused := auth_failure(error, self.where):
            return RegistryError(f"{refused} ({what})")
        return RegistryError(redact(f"MLflow at {self.where}: {what}: {detail}", url_secrets(self.tracking_uri)))
