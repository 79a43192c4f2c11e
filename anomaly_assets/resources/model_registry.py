"""MLflow as the model registry: one run and one registered version per trained detector.

Aliases, not stages (MLflow 3): ``challenger`` marks the newest version, ``champion`` the one
scoring uses. Tags are set before aliases, so a version that failed mid-registration never
carries an alias.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import joblib
import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from pydantic import PrivateAttr

from anomaly_assets.core.detector import FleetAnomalyModel

CHAMPION = "champion"
CHALLENGER = "challenger"
PIP_REQUIREMENTS = ["scikit-learn>=1.9,<1.10", "pandas>=3,<4", "numpy>=2,<3", "joblib"]
# The package's own code travels inside the model, so it loads where anomaly_assets is not installed.
PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


class NoChampionError(LookupError):
    pass


@dataclasses.dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    aliases: tuple[str, ...]


class MlflowModelRegistry(dg.ConfigurableResource):
    tracking_uri: str
    model_name: str = "fleet_anomaly_detector"
    experiment_name: str = "anomaly_assets"
    # Where a new experiment keeps artifacts; None lets the tracking server decide.
    artifact_location: str | None = None
    _loaded: dict[str, FleetAnomalyModel] = PrivateAttr(default_factory=dict)

    def client(self) -> mlflow.MlflowClient:
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _experiment_id(self, client: mlflow.MlflowClient) -> str:
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(self.experiment_name, artifact_location=self.artifact_location)

    def register(
        self,
        model: FleetAnomalyModel,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        tables: dict[str, pd.DataFrame],
        run_name: str,
    ) -> RegisteredVersion:
        """Log a run with params, metrics and tables, register the pyfunc model, set aliases."""
        from anomaly_assets.model_package import MODEL_ARTIFACT, FleetAnomalyPyfunc

        client = self.client()
        experiment_id = self._experiment_id(client)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            with tempfile.TemporaryDirectory() as tmp:
                for name, table in tables.items():
                    path = Path(tmp, f"{name}.csv")
                    table.to_csv(path, index=False)
                    mlflow.log_artifact(str(path), artifact_path="tables")
                model_path = Path(tmp, "model.joblib")
                joblib.dump(model, model_path)
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=FleetAnomalyPyfunc(),
                    artifacts={MODEL_ARTIFACT: str(model_path)},
                    pip_requirements=PIP_REQUIREMENTS,
                    code_paths=[PACKAGE_DIR],
                )
        version = mlflow.register_model(info.model_uri, self.model_name, tags=tags)
        aliases = [CHALLENGER]
        if self.alias_version(CHAMPION) is None:
            aliases.append(CHAMPION)  # the first trained version becomes champion
        for alias in aliases:
            client.set_registered_model_alias(self.model_name, alias, version.version)
        return RegisteredVersion(self.model_name, str(version.version), run.info.run_id, tuple(aliases))

    def alias_version(self, alias: str) -> str | None:
        try:
            return str(self.client().get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException:
            return None

    def load_version(self, version: str) -> FleetAnomalyModel:
        if version not in self._loaded:
            pyfunc = mlflow.pyfunc.load_model(f"models:/{self.model_name}/{version}")
            self._loaded[version] = pyfunc.unwrap_python_model().model
        return self._loaded[version]

    def load_champion(self) -> tuple[str, FleetAnomalyModel]:
        version = self.alias_version(CHAMPION)
        if version is None:
            raise NoChampionError(
                f"registered model {self.model_name!r} at {self.tracking_uri} has no '{CHAMPION}' alias: "
                "materialize anomaly_detector first (the first trained version becomes champion)"
            )
        return version, self.load_version(version)
