"""MLflow as the model registry: one run and one registered version per trained detector.

``RegistryOperations`` is everything the project does with the registry, in one place, used two
ways: ``ModelRegistryClient`` (a plain class: what ``anomaly-assets model ...`` builds, without
importing Dagster, scikit-learn or the source drivers, so the commands answer quickly) and the
Dagster resource ``MlflowModelRegistry`` (``resources/model_registry.py``), the same operations
configured by Dagster.

Every call goes through an ``MlflowClient`` built with this registry's tracking URI (as registry
URI too), never MLflow's process-wide URI or active run: two registries in one process do not
meet. Aliases, not stages (MLflow 3): ``challenger`` marks the newest version, ``champion`` the one
scoring uses. Tags are set before aliases, so a version that failed mid-registration never
carries an alias.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import urllib.parse
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from anomaly_assets.redaction import redact, url_secrets
from anomaly_assets.resources.mlflow_auth import auth_failure
from anomaly_assets.resources.registry_runs import log_model_package, log_values, started_run

if TYPE_CHECKING:  # pandas and scikit-learn load with a model, not with the registry
    import pandas as pd

    from anomaly_assets.core.detector import FleetAnomalyModel

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


class RegistryOperations:
    """The registry's operations. The class using it provides ``tracking_uri``, ``model_name``,
    ``experiment_name``, ``artifact_location`` (None: the tracking server decides), ``ui_url``,
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

    def experiment_id(self, client: MlflowClient, name: str | None = None, artifact_location: str | None = None) -> str:
        """The id of experiment ``name`` (default: the training experiment), created in the classic runs view."""
        name = name or self.experiment_name
        try:
            experiment = client.get_experiment_by_name(name)
            if experiment is not None:
                if experiment.tags.get(EXPERIMENT_KIND_TAG) != CLASSIC_RUNS:
                    client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, CLASSIC_RUNS)
                return experiment.experiment_id
            return client.create_experiment(
                name, artifact_location=artifact_location or self.artifact_location, tags={EXPERIMENT_KIND_TAG: CLASSIC_RUNS}
            )
        except Exception as error:
            raise self._error("is unreachable or failing", error) from None

    def register(
        self,
        model: FleetAnomalyModel,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        tables: dict[str, pd.DataFrame],
        run_name: str,
        *,
        example_rows: pd.DataFrame,
        figures: dict[str, Any] | None = None,
    ) -> RegisteredVersion:
        """Log a run with params, metrics, tables and figures; log the pyfunc package with its
        signature and input example (one device's latest window of ``example_rows``, telemetry or
        features); register it as a new version; set aliases."""
        client = self.client()
        experiment_id = self.experiment_id(client)
        try:
            with started_run(client, experiment_id, run_name, tags) as run_id:
                log_values(client, run_id, params=params, metrics=metrics, figures=figures, tables=tables)
                logged = log_model_package(client, experiment_id, run_id, model, example_rows)
        except Exception as error:
            raise self._error("failed to log the training run", error) from None
        try:
            try:
                client.create_registered_model(self.model_name)
            except MlflowException as error:
                if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                    raise
            version = client.create_model_version(
                self.model_name, source=self._version_source(logged), run_id=run_id, tags=tags, model_id=logged.model_id
            )
        except MlflowException as error:
            raise self._error(f"failed to register {self.model_name}", error) from None
        try:
            aliases = [CHALLENGER]
            client.set_registered_model_alias(self.model_name, CHALLENGER, version.version)
            if self.alias_version(CHAMPION) is None:  # the first trained version becomes champion
                self.set_champion(str(version.version), reason="first trained version", actor="anomaly_detector")
                aliases.append(CHAMPION)
        except Exception as error:
            # Never leave a half-registered version behind: drop it, so no alias can point at it.
            client.delete_model_version(self.model_name, version.version)
            raise self._error(
                f"failed to set aliases on {self.model_name} version {version.version} (the version was deleted)", error
            ) from None
        return RegisteredVersion(self.model_name, str(version.version), run_id, tuple(aliases), experiment_id)

    def _version_source(self, logged) -> str:
        """A new version's source: ``models:/<logged model id>`` as MLflow's own ``log_model``
        registers it, except on a local store (SQL or files), whose registry would resolve that URI
        through the process-wide tracking URI (a TODO in MLflow's stores): there, the package's
        own location, the same files."""
        remote = urllib.parse.urlparse(self.tracking_uri).scheme in ("http", "https", "databricks")
        return f"models:/{logged.model_id}" if remote else logged.artifact_location

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def log_scoring_run(
        self, partition: str, model_version: str, metrics: dict[str, float], figures: dict[str, Any], tags: dict[str, str]
    ) -> str:
        """One MLflow run per scored partition (experiment ``<experiment>_scoring``); returns its UI URL."""
        client = self.client()
        experiment_id = self.experiment_id(
            client,
            f"{self.experiment_name}_scoring",
            artifact_location=f"{self.artifact_location}/scoring" if self.artifact_location else None,
        )
        run_tags = {**tags, "partition": partition, "model_name": self.model_name, "model_version": model_version}
        try:
            with started_run(client, experiment_id, f"scored_anomalies {partition}", run_tags) as run_id:
                log_values(client, run_id, metrics=metrics, figures=figures)
        except Exception as error:
            raise self._error(f"failed to log the scoring run of {partition}", error) from None
        return self.run_url(experiment_id, run_id)

    def champion_history(self) -> list[dict[str, str]]:
        """Every champion change, oldest first: version, previous, action, reason, actor, at.
        Empty only when the model is not registered yet; any failure to read it raises, so a
        change never overwrites the history with itself alone."""
        try:
            tags = self.client().get_registered_model(self.model_name).tags
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise self._error(f"failed to read the champion history of {self.model_name}", error) from None
        try:
            return json.loads(tags.get(CHAMPION_HISTORY_TAG, "[]"))
        except json.JSONDecodeError as error:
            raise RegistryError(
                f"the {CHAMPION_HISTORY_TAG} tag of {self.model_name} at {self.where} is not valid JSON ({error})"
            ) from None

    def set_champion(self, version: str, reason: str, actor: str, action: str = "promote") -> dict[str, str]:
        client = self.client()
        try:
            client.get_model_version(self.model_name, version)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise self._error(f"failed to read {self.model_name} version {version}", error) from None
            raise LookupError(f"{self.model_name} has no version {version} at {self.where}") from None
        history = self.champion_history()
        entry = {
            "version": str(version),
            "previous": self.alias_version(CHAMPION) or "",
            "action": action,
            "reason": reason,
            "actor": actor,
            "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        history = (history + [entry])[-HISTORY_LIMIT:]
        client.set_registered_model_tag(self.model_name, CHAMPION_HISTORY_TAG, json.dumps(history))
        self._tag_change(client, entry)
        client.set_registered_model_alias(self.model_name, CHAMPION, str(version))
        client.set_model_version_tag(self.model_name, str(version), "champion_since", entry["at"])
        if entry["previous"] and entry["previous"] != entry["version"]:
            # The demoted version is champion no more: its champion_since would mislead.
            try:
                client.delete_model_version_tag(self.model_name, entry["previous"], "champion_since")
            except MlflowException:
                pass  # the previous version was deleted, or never carried the tag
        return entry

    def _tag_change(self, client: MlflowClient, entry: dict[str, str]) -> None:
        tags = client.get_registered_model(self.model_name).tags
        number = 1 + sum(1 for key in tags if key.startswith(CHAMPION_CHANGE_TAG))
        line = (
            f"{entry['at']} {entry['action']} version {entry['previous'] or '-'} -> {entry['version']} "
            f"by {entry['actor']}: {entry['reason']}"
        )
        client.set_registered_model_tag(self.model_name, f"{CHAMPION_CHANGE_TAG}{number:04d}", line[:5000])

    def promote(self, version: str, reason: str, actor: str, force: bool = False) -> dict[str, str] | None:
        """A manual promotion: ``None`` when ``version`` is champion already (nothing changes);
        a version the gate refused needs ``force``, and the refusal says why."""
        version = str(version)
        if self.alias_version(CHAMPION) == version:
            return None
        client = self.client()
        try:
            tags = client.get_model_version(self.model_name, version).tags
        except MlflowException as error:
            raise LookupError(f"{self.model_name} has no version {version} at {self.where}") from error
        if tags.get("promotion_decision") == "refused" and not force:
            raise PromotionRefused(
                f"the promotion gate refused version {version} (compared with version "
                f"{tags.get('promotion_compared_with', '?')} on {tags.get('promotion_partition', '?')}): "
                f"{tags.get('promotion_reasons') or 'no reasons recorded'}; promote it anyway with --force "
                "(run config force: true)"
            )
        if tags.get("promotion_decision") == "refused":
            reason = f"{reason} (forced past the gate's refusal)"
        return self.set_champion(version, reason=reason, actor=actor)

    def rollback(self, reason: str, actor: str) -> dict[str, str]:
        """Move ``champion`` back to the version it pointed at before the current one."""
        stack: list[str] = []
        for entry in self.champion_history():
            if entry["action"] == "rollback":
                stack = stack[:-1]
            elif not stack or stack[-1] != entry["version"]:
                stack.append(entry["version"])
        if len(stack) < 2:
            raise LookupError(f"{self.model_name} has no previous champion to roll back to (history: {stack})")
        return self.set_champion(stack[-2], reason=reason, actor=actor, action="rollback")

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

    def tag_version(self, version: str, tags: dict[str, str]) -> None:
        client = self.client()
        for key, value in tags.items():
            client.set_model_version_tag(self.model_name, str(version), key, str(value)[:5000])

    def partition_version(self, partition: str, run_id: str | None = None) -> str | None:
        """The version a training partition registered: the one its run registered when ``run_id``
        did, else the newest registered for the partition. Never whatever ``challenger`` points at,
        which a concurrent training run of another partition may have moved."""
        try:
            versions = self.client().search_model_versions(
                f"name = '{self.model_name}' and tags.dagster_partition = '{partition}'"
            )
        except MlflowException as error:
            raise self._error(f"failed to find the version of partition {partition}", error) from None
        if run_id is not None:
            own = [v for v in versions if v.tags.get("dagster_run_id") == run_id]
            versions = own or versions
        return str(max(int(v.version) for v in versions)) if versions else None

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

