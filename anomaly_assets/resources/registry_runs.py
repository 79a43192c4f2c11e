"""What an MLflow run of the project logs, through a given ``MlflowClient`` (never MLflow's
active run or process-wide tracking URI): values, tables, figures, and the model package as an
MLflow 3 logged model linked to its run."""

from __future__ import annotations

import contextlib
import datetime
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import LoggedModel

    from anomaly_assets.core.detector import FleetAnomalyModel

PARAMS_PER_REQUEST = 100  # MLflow's log_batch limit


@contextlib.contextmanager
def started_run(client: MlflowClient, experiment_id: str, run_name: str, tags: dict[str, str]) -> Iterator[str]:
    """A run (its id) that ends FINISHED, or FAILED when the block raises. Like MLflow's fluent
    runs it carries the user, source and git commit tags besides ``tags``."""
    from mlflow.tracking.context.registry import resolve_tags

    run_id = client.create_run(experiment_id, run_name=run_name, tags=resolve_tags(tags)).info.run_id
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status)


def log_values(
    client: MlflowClient,
    run_id: str,
    params: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    figures: dict[str, Any] | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
) -> None:
    """Params (text, cut at 6,000 characters), metrics, figures under ``figures/`` and tables as
    CSV under ``tables/``."""
    from mlflow.entities import Metric, Param

    values = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
    for first in range(0, len(values), PARAMS_PER_REQUEST):
        client.log_batch(run_id, params=values[first : first + PARAMS_PER_REQUEST])
    now = int(datetime.datetime.now(datetime.UTC).timestamp() * 1000)
    if metrics:
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    for name, figure in (figures or {}).items():
        client.log_figure(run_id, figure, f"figures/{name}.png")
    if tables:
        with tempfile.TemporaryDirectory() as tmp:
            for name, table in tables.items():
                path = Path(tmp, f"{name}.csv")
                table.to_csv(path, index=False)
                client.log_artifact(run_id, str(path), artifact_path="tables")


def log_model_package(
    client: MlflowClient, experiment_id: str, run_id: str, model: FleetAnomalyModel, example_rows: pd.DataFrame
) -> LoggedModel:
    """The pyfunc package of ``model`` (``anomaly_assets.model_package``; its input example is one
    device's latest window of ``example_rows``) as a logged model of ``run_id``, READY."""
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model

    from anomaly_assets.model_package import latest_window, save_package

    logged = client.create_logged_model(experiment_id, name="model", source_run_id=run_id)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    try:
        example, score_from = latest_window(example_rows, model.spec)
        # The metadata ``log_model`` writes: the package names its logged model and run.
        metadata = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id, model_id=logged.model_id)
        with tempfile.TemporaryDirectory() as tmp:
            package = Path(tmp, "model")
            save_package(package, model, example, score_from, mlflow_model=metadata)
            client.log_model_artifacts(logged.model_id, str(package))
    except BaseException:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    return client.finalize_logged_model(logged.model_id, "READY")
