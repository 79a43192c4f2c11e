"""The MLflow pyfunc package of a ``FleetAnomalyModel``: what scoring needs, and nothing else.

A package holds the fitted model (one joblib artifact), the project modules scoring imports (the
``core`` modules the model's classes live in, not the Dagster wiring, the explorer or the CLI),
pip requirements, a signature, and an input example: one device's latest window of telemetry. It
scores raw telemetry exactly as ``scored_anomalies`` does:

- in Python: ``mlflow.pyfunc.load_model("models:/fleet_anomaly_detector@champion").predict(rows)``;
- online, with MLflow's own scoring server:
  ``mlflow models serve -m models:/fleet_anomaly_detector@champion --env-manager local``, then
  ``POST /invocations`` with ``{"dataframe_split": ..., "params": {"score_from": ...}}``.

Rolling windows reach back ``spec.lookback`` (the longest window, 6 h): a row scores as in the
batch when the request holds its device's rows for that long before it. ``params.score_from``
makes earlier rows lookback only (used for the windows, left out of the answer).
"""

from __future__ import annotations

import ast
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import mlflow.pyfunc
import pandas as pd

from anomaly_assets.core.features import FeatureSpec, build_device_features

if TYPE_CHECKING:
    from anomaly_assets.core.detector import FleetAnomalyModel

MODEL_ARTIFACT = "fleet_anomaly_model"
PIP_REQUIREMENTS = ["scikit-learn>=1.9,<1.10", "pandas>=3,<4", "numpy>=2,<3", "scipy", "joblib", "numba>=0.68,<0.69"]
SCORE_FROM = "score_from"  # the request parameter: rows before it are lookback only
# The input example: one device's rows over the lookback and then this much scored time.
EXAMPLE_SCORED_SPAN = pd.Timedelta("1h")
PACKAGE_ROOT = Path(__file__).resolve().parent  # anomaly_assets/
# The package's entry point, as MLflow's "models from code" wants it: code rather than a pickled object.
ENTRY_POINT = """from mlflow.models import set_model

from anomaly_assets.model_package import FleetAnomalyPyfunc

set_model(FleetAnomalyPyfunc())
"""


def serving_columns(spec: FeatureSpec) -> list[str]:
    """What a scoring request carries per row: the device, the time, its cohort attributes, the raw metrics."""
    return ["device_id", "timestamp", *spec.cohort_columns, *spec.metrics]


def latest_window(telemetry: pd.DataFrame, spec: FeatureSpec, scored_span: pd.Timedelta = EXAMPLE_SCORED_SPAN) -> tuple[pd.DataFrame, str]:
    """One device's latest window as scoring takes it, and its ``score_from``: the first device's
    rows from ``spec.lookback`` before its last ``scored_span`` to its last row. ``telemetry`` may
    be raw telemetry or device features (both carry the serving columns)."""
    missing = [c for c in serving_columns(spec) if c not in telemetry]
    if missing:
        raise KeyError(f"the rows for the input example lack the serving columns {missing}")
    device = telemetry["device_id"].min()
    rows = telemetry.loc[telemetry["device_id"] == device, serving_columns(spec)].sort_values("timestamp", kind="stable")
    score_from = rows["timestamp"].max() - scored_span
    window = rows.loc[rows["timestamp"] > score_from - spec.lookback].reset_index(drop=True)
    return window, pd.Timestamp(score_from).isoformat()


class FleetAnomalyPyfunc(mlflow.pyfunc.PythonModel):
    def __init__(self, model: FleetAnomalyModel | None = None) -> None:
        # Registered packages hold None here: the model is the joblib artifact, read by load_context.
        self.model = model

    def load_context(self, context) -> None:
        self.model = joblib.load(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Raw telemetry (``serving_columns``) in, one scored row per row at or after
        ``params["score_from"]`` out (every row without it).

        To score day D exactly as ``scored_anomalies`` does, pass days D-1 and D with
        ``score_from`` = D; to score a device's latest rows online, pass them with at least the
        lookback (6 h) of its rows before them.
        """
        assert self.model is not None, "load_context was not called"
        spec = self.model.spec
        keep_from = _score_from((params or {}).get(SCORE_FROM))
        return self.model.score(build_device_features(_telemetry(model_input, spec), spec, keep_from=keep_from))


def fitted_model(package: Path) -> FleetAnomalyModel:
    """The fitted model of a package folder. Read directly: MLflow's loader would also put the
    package's code folder first on ``sys.path`` for the rest of the process, so a process started
    from it later (a multiprocessing worker) would import the project from that partial copy."""
    from mlflow.models import Model

    artifact = Model.load(str(package)).flavors["python_function"]["artifacts"][MODEL_ARTIFACT]["path"]
    return joblib.load(Path(package, artifact))


def _score_from(value: Any) -> pd.Timestamp | None:
    if value is None or value == "":
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ValueError(f"params.{SCORE_FROM} must be a timestamp such as 2026-11-09T12:00:00Z, got {value!r}") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _telemetry(rows: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The request's rows with UTC timestamps and float metrics, as the batch path has them; a
    missing or malformed column is named."""
    rows = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    missing = [c for c in serving_columns(spec) if c not in rows]
    if missing:
        raise ValueError(f"scoring input lacks the columns {missing}; each row needs {serving_columns(spec)}")
    out = rows.copy(deep=False)
    stamps = out["timestamp"]
    if not pd.api.types.is_datetime64_any_dtype(stamps):  # JSON text: offsets honoured, none means UTC
        try:
            stamps = pd.to_datetime(stamps, format="ISO8601", utc=True)
        except (TypeError, ValueError) as error:
            raise ValueError(f"scoring input column 'timestamp' holds a value that is not a timestamp ({error})") from None
    out["timestamp"] = stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
    for metric in spec.metrics:
        try:
            out[metric] = pd.to_numeric(out[metric]).astype("float64")
        except (TypeError, ValueError) as error:
            raise ValueError(f"scoring input column {metric!r} is not numeric ({error})") from None
    return out


def save_package(path: Path, model: FleetAnomalyModel, example: pd.DataFrame, score_from: str, mlflow_model=None) -> None:
    """Write the pyfunc package of ``model`` to ``path`` (a folder that must not exist yet): the
    signature is that of ``example`` and the scores the model gives it, so a package whose example
    does not score is never written."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    params = {SCORE_FROM: score_from}
    inferred = infer_signature(example, FleetAnomalyPyfunc(model).predict(None, example, params), params={SCORE_FROM: ""})
    # MLflow's datetime type takes naive times only; ours are UTC with an offset (a frame's
    # tz-aware column, or ISO text in JSON), so the column is left to predict to read.
    inputs = Schema([ColSpec(AnyType(), c.name) if c.name == "timestamp" else c for c in inferred.inputs.inputs])
    signature = ModelSignature(inputs, inferred.outputs, inferred.params)
    with tempfile.TemporaryDirectory() as tmp:
        model_file = Path(tmp, "model.joblib")
        joblib.dump(model, model_file)
        code = Path(tmp, "code", PACKAGE_ROOT.name)
        for source in scoring_sources([__name__, type(model).__module__]):
            target = code / source.relative_to(PACKAGE_ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        entry = Path(tmp, "fleet_anomaly_model.py")
        entry.write_text(ENTRY_POINT)
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=str(entry),
            artifacts={MODEL_ARTIFACT: str(model_file)},
            code_paths=[str(code)],
            signature=signature,
            input_example=(example, params),
            pip_requirements=PIP_REQUIREMENTS,
            mlflow_model=mlflow_model,
        )


def scoring_sources(modules: Iterable[str]) -> list[Path]:
    """The files of the project's modules that importing ``modules`` can load (their imports,
    transitively, lazy ones included, and their packages' ``__init__``): the code a package needs."""
    seen: dict[str, Path] = {}
    pending = list(modules)
    while pending:
        name = pending.pop()
        parts = name.split(".")
        if parts[0] != PACKAGE_ROOT.name or name in seen:
            continue
        for depth in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__
            pending.append(".".join(parts[:depth]))
        path = _module_file(parts[1:])
        if path is None:  # a name imported from a module (``from a.b import name``), not a module
            continue
        seen[name] = path
        pending.extend(_imported_modules(path, name))
    return sorted(set(seen.values()))


def _module_file(parts: list[str]) -> Path | None:
    base = PACKAGE_ROOT.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str) -> list[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # ``from a import b`` may import the module a.b: both are candidates.
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return names
