"""The MLflow pyfunc package of a ``FleetAnomalyModel``: everything scoring needs in one artifact.

``mlflow.pyfunc.load_model("models:/<name>@champion").predict(raw_telemetry)`` builds the
features with the stored spec and scores them, exactly as the ``scored_anomalies`` asset does.
"""

from __future__ import annotations

import joblib
import mlflow.pyfunc
import pandas as pd

from anomaly_assets.core.detector import FleetAnomalyModel
from anomaly_assets.core.features import build_device_features

MODEL_ARTIFACT = "fleet_anomaly_model"


class FleetAnomalyPyfunc(mlflow.pyfunc.PythonModel):
    def __init__(self) -> None:
        self.model: FleetAnomalyModel | None = None

    def load_context(self, context) -> None:
        self.model = joblib.load(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Raw telemetry (device_id, timestamp, cohort columns, metrics) in, one scored row per row out.

        Rolling windows reach back one day: to score day D exactly as ``scored_anomalies`` does,
        pass days D-1 and D and keep the output rows of day D.
        """
        assert self.model is not None, "load_context was not called"
        return self.model.score(build_device_features(model_input, self.model.spec))
