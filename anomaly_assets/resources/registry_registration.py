"""Registering versions: one MLflow run and one registered version per trained detector (its
pyfunc package with a signature and an input example), the version linked to its training
partition by tag, and one MLflow run per scored partition. Tags are set before aliases, so a
version that failed mid-registration never carries an alias."""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from anomaly_assets.resources.registry_aliases import ChampionAliases
from anomaly_assets.resources.registry_connection import (
    CHALLENGER,
    CHAMPION,
    CLASSIC_RUNS,
    EXPERIMENT_KIND_TAG,
    RegisteredVersion,
)
from anomaly_assets.resources.registry_runs import log_model_package, log_values, started_run

if TYPE_CHECKING:  # pandas and scikit-learn load with a model, not with the registry
    import pandas as pd

    from anomaly_assets.core.detector import FleetAnomalyModel


class VersionRegistration(ChampionAliases):
    """New versions (the first becomes champion), their partition tags, and the runs that log them."""

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
