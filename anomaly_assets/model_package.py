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
        """Raw telemetry (device_id, timestamp, cohort columns, metrics) in, scored rows out.

        Rows before ``params["score_from"]`` (an ISO timestamp), if given, only feed the
        rolling windows (the lookback) and are not returned.
        """
        assert self.model is not None, "load_context was not called"
        keep_from = pd.Timestamp(params["score_from"]) if params and params.get("score_from") else None
        features = build_device_features(model_input, self.model.spec, keep_from=keep_from)
        return self.model.score(features)
