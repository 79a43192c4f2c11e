"""The fitted fleet anomaly model: an ensemble scored row by row.

``FleetAnomalyModel`` holds everything scoring needs (feature spec, cohort stats, baselines,
imputation values, the IsolationForest and its compiled copy, the per-device norms, the
reconstruction, the fusion and the threshold), so a registered model version scores raw
features with no other state. Training lives in :mod:`anomaly_assets.core.detector`.

Scoring in three steps, which the benchmark times separately:

1. ``model_inputs``: the forest's matrix (device features, cohort z-scores, baseline
   exceedances, NaN imputed) and the device matrix (:mod:`anomaly_assets.core.ensemble`);
2. ``raw_scores``: each member's score, fused into one (higher = more anomalous);
3. ``score_from``: severity, flag and the top features behind the score.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from anomaly_assets.core.baselines import baseline_exceedance, baseline_tables
from anomaly_assets.core.cohorts import cohort_index, cohort_keys, cohort_z_scores, cohort_z_tables, row_cohorts, row_hours
from anomaly_assets.core.drift import DriftReference
from anomaly_assets.core.ensemble import (
    MEMBERS,
    DeviceNorms,
    Reconstruction,
    ScoreFusion,
    device_column_names,
    is_rolling_mean,
    level_columns,
    robust_z_scores,
)
from anomaly_assets.core.fast_forest import CompiledForest
from anomaly_assets.core.features import FeatureSpec
from anomaly_assets.core.kernels import model_matrix_from_sources, top_k_abs_z

SCORED_COLUMNS = (
    "device_id",
    "timestamp",
    "cohort",
    "score",
    "severity",
    "is_anomaly",
    "top_feature_1",
    "top_feature_2",
    "top_feature_3",
)


@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """What the members read: the forest's matrix and the device-standardized matrix."""

    forest: np.ndarray
    device: np.ndarray

    def __len__(self) -> int:
        return len(self.forest)


@dataclasses.dataclass
class FleetAnomalyModel:
    spec: FeatureSpec
    cohort_stats: pd.DataFrame
    baselines: pd.DataFrame
    feature_columns: list[str]
    medians: np.ndarray
    scales: np.ndarray
    forest: IsolationForest
    threshold: float
    score_reference: float  # median validation score: severity 0 below it, 50 at the threshold
    training_summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    drift_reference: DriftReference | None = None  # the training distribution feature_drift compares with
    # The forest flattened for fast scoring; equal to ``forest.score_samples`` bit for bit.
    compiled_forest: CompiledForest | None = None
    # The ensemble (a model without them, pickled before the ensemble, scores with its forest).
    members: tuple[str, ...] = ("forest",)
    device_columns: list[str] = dataclasses.field(default_factory=list)
    device_norms: DeviceNorms | None = None
    reconstruction: Reconstruction | None = None
    fusion: ScoreFusion | None = None

    def monitoring_frame(self, device_features: pd.DataFrame) -> pd.DataFrame:
        """The columns drift is measured on: the raw metrics and the forest's features."""
        frame = _model_frame(device_features, self.spec, self.cohort_stats, self.baselines)
        return frame[_monitored(self.spec, self.feature_columns)]

    def monitoring_values(self, device_features: pd.DataFrame, cohorts: tuple[np.ndarray, pd.Series] | None = None) -> np.ndarray:
        """``monitoring_frame``'s values (NaN kept), built as the forest's matrix is, sharing the
        cohorts scoring computed: scoring and drift of a chunk read its features once."""
        columns = _monitored(self.spec, self.feature_columns)
        return self._matrix(device_features, columns, np.full(len(columns), np.nan), cohorts or self.cohorts(device_features))

    @property
    def monitored_columns(self) -> list[str]:
        return _monitored(self.spec, self.feature_columns)

    def cohorts(self, device_features: pd.DataFrame) -> tuple[np.ndarray, pd.Series]:
        """Each row's cohort (``cohort_index``): computed once, it serves ``model_inputs`` and
        ``score_from``, which otherwise each compute it."""
        return cohort_index(device_features, self.spec.cohort_columns)

    def model_matrix(
        self, device_features: pd.DataFrame, cohorts: tuple[np.ndarray, pd.Series] | None = None
    ) -> np.ndarray:
        """The forest's input: device features plus cohort features, NaN imputed with medians."""
        return self._matrix(device_features, list(self.feature_columns), self.medians, cohorts)

    def device_raw(self, device_features: pd.DataFrame, cohorts: tuple[np.ndarray, pd.Series] | None = None) -> np.ndarray:
        """The device matrix's source columns, NaN kept (before device standardization). A short
        rolling mean ``{metric}__mean_{window}`` is the value less its deviation from that mean."""
        columns = list(self.device_columns)
        means = [j for j, c in enumerate(columns) if is_rolling_mean(c)]
        if not means:
            return self._matrix(device_features, columns, np.full(len(columns), np.nan), cohorts)
        parts = {j: columns[j].rpartition("__") for j in means}
        for j, (metric, _, name) in parts.items():
            columns[j] = f"{metric}__dev_{name[len('mean_'):]}"
        extra = [metric for metric, _, _ in parts.values()]
        raw = self._matrix(device_features, columns + extra, np.full(len(columns) + len(extra), np.nan), cohorts)
        for k, j in enumerate(means):
            raw[:, j] = raw[:, len(columns) + k] - raw[:, j]
        return np.ascontiguousarray(raw[:, : len(columns)])

    def model_inputs(self, device_features: pd.DataFrame, cohorts: tuple[np.ndarray, pd.Series] | None = None) -> ModelInputs:
        # The forest's matrix is built by the compiled loop even when drift has its columns
        # already: selecting and imputing them from drift's matrix measured slower.
        cohorts = cohorts or self.cohorts(device_features)
        forest = self.model_matrix(device_features, cohorts)
        if self.device_norms is None:
            return ModelInputs(forest, np.zeros((len(forest), 0)))
        rows = self.device_norms.table_rows(device_features["device_id"], *cohorts)
        device = self.device_norms.standardize(self.device_raw(device_features, cohorts), rows)
        return ModelInputs(forest, device)

    def _matrix(
        self, device_features: pd.DataFrame, columns: list[str], fill: np.ndarray, cohorts: tuple | None
    ) -> np.ndarray:
        # Built directly, row-major, with only the wanted columns: the same values as selecting
        # them from ``_model_frame`` and filling NaN, without building the frame.
        spec = self.spec
        metrics = list(spec.metrics)
        device_columns = spec.device_feature_columns()
        derived = {f"{m}__cohort_z": (1, i) for i, m in enumerate(metrics)}
        derived.update({f"{m}__baseline_exceed": (2, i) for i, m in enumerate(metrics)})
        frame_columns = [*device_columns, *derived]
        if len(set(frame_columns)) != len(frame_columns) or not set(columns) <= set(frame_columns):
            matrix = _model_frame(device_features, spec, self.cohort_stats, self.baselines)
            values = matrix[columns].to_numpy(dtype=np.float64)
            return np.ascontiguousarray(np.where(np.isnan(values), fill[None, :], values))
        kinds, sources = np.zeros(len(columns), dtype=np.int64), np.zeros(len(columns), dtype=np.int64)
        source_columns: dict[str, int] = {}
        for j, column in enumerate(columns):
            kind, source = derived.get(column, (0, None))
            if kind == 0:
                source = source_columns.setdefault(column, len(source_columns))
            kinds[j], sources[j] = kind, source
        used_metrics = sorted({int(sources[j]) for j in range(len(columns)) if kinds[j] != 0})
        metric_src = np.zeros(len(metrics), dtype=np.int64)
        for i in used_metrics:
            metric_src[i] = source_columns.setdefault(metrics[i], len(source_columns))
        src = device_features[list(source_columns)].to_numpy(dtype=np.float64)
        n = len(device_features)
        z_cohort = b_cohort = hour = np.zeros(n, dtype=np.int64)
        mean = std = np.zeros((1, 24, len(metrics)))
        low = high = width = np.zeros((1, len(metrics)))
        index = (cohorts or self.cohorts(device_features)) if (kinds != 0).any() else None
        if (kinds == 1).any():
            z_names, mean, std = _model_table(cohort_z_tables, self.cohort_stats, metrics)
            z_cohort = row_cohorts(device_features, z_names, spec.cohort_columns, index)
            hour = row_hours(device_features)
        if (kinds == 2).any():
            b_names, low, high, width = _model_table(baseline_tables, self.baselines, metrics)
            b_cohort = row_cohorts(device_features, b_names, spec.cohort_columns, index)
        return model_matrix_from_sources(
            src, kinds, sources, metric_src, z_cohort, hour, mean, std, b_cohort, low, high, width, fill
        )

    def forest_scores(self, matrix: np.ndarray) -> np.ndarray:
        """Higher is more anomalous: the negated IsolationForest ``score_samples`` in (0, 1]."""
        if self.compiled_forest is not None:
            return -self.compiled_forest.score_samples(matrix)
        return -self.forest.score_samples(matrix)

    def member_scores(self, inputs: ModelInputs) -> np.ndarray:
        """One column per member in ``self.members`` order (each alone: higher = more anomalous)."""
        columns = self._member_columns(inputs)
        return np.column_stack(columns) if columns else np.zeros((len(inputs), 0))

    def _member_columns(self, inputs: ModelInputs) -> list[np.ndarray]:
        unknown = sorted(set(self.members) - set(MEMBERS))
        if unknown:
            raise ValueError(f"unknown ensemble member(s) {unknown}; known: {MEMBERS}")
        found: dict[str, np.ndarray] = {}
        if "forest" in self.members:
            found["forest"] = self.forest_scores(inputs.forest)
        if "reconstruction" in self.members:
            level = level_columns(self.device_columns) if "robust_z" in self.members else np.zeros(0, dtype=np.int64)
            found["reconstruction"], largest = self.reconstruction.scores_and_largest_z(inputs.device, level)
            if "robust_z" in self.members:
                found["robust_z"] = largest
        elif "robust_z" in self.members:
            found["robust_z"] = robust_z_scores(inputs.device, level_columns(self.device_columns))
        return [found[m] for m in self.members]

    def raw_scores(self, inputs: ModelInputs | np.ndarray) -> np.ndarray:
        """The fused score (higher = more anomalous). A bare matrix is the forest's input alone."""
        if isinstance(inputs, np.ndarray):
            inputs = ModelInputs(inputs, np.zeros((len(inputs), 0)))
        if self.fusion is None:
            return self.forest_scores(inputs.forest)
        return self.fusion.fuse_columns(self._member_columns(inputs))

    def severity(self, scores: np.ndarray) -> np.ndarray:
        span = max(self.threshold - self.score_reference, 1e-9)
        below = 50.0 * np.clip((scores - self.score_reference) / span, 0.0, 1.0)
        # The fused score is a mean of normal quantiles, compressed at the top: one unit above the
        # threshold is already rare, so severity rises over half the span below it.
        above = 50.0 + 50.0 * (1.0 - np.exp(-(scores - self.threshold) / (span / 2.0)))
        return np.round(np.where(scores > self.threshold, above, below), 2)

    @property
    def explanation_columns(self) -> list[str]:
        """Names of the features explanations choose from: the forest's, then the device z's."""
        return [*self.feature_columns, *device_column_names(self.device_columns)]

    def top_features(self, inputs: ModelInputs | np.ndarray, k: int = 3) -> np.ndarray:
        """Names of the k features furthest from typical, in robust z units: the forest's features
        against their training median, the device columns against the device's own history
        (ties go to the feature listed first)."""
        top = self._top(inputs, k)
        return np.asarray(self.explanation_columns, dtype=object)[top]

    def _top(self, inputs: ModelInputs | np.ndarray, k: int) -> np.ndarray:
        if isinstance(inputs, np.ndarray) or inputs.device.shape[1] == 0:
            matrix = inputs if isinstance(inputs, np.ndarray) else inputs.forest
            return top_k_abs_z(matrix, self.medians, self.scales, k)
        width = inputs.device.shape[1]
        return top_k_abs_z(
            np.hstack([inputs.forest, inputs.device]),
            np.r_[self.medians, np.zeros(width)],
            np.r_[self.scales, np.ones(width)],
            k,
        )

    def score(self, device_features: pd.DataFrame) -> pd.DataFrame:
        """One row per input row with SCORED_COLUMNS (model name and version are added by the caller)."""
        cohorts = self.cohorts(device_features)
        inputs = self.model_inputs(device_features, cohorts)
        return self.score_from(device_features, inputs, self.raw_scores(inputs), cohorts)

    def score_from(
        self,
        device_features: pd.DataFrame,
        inputs: ModelInputs | np.ndarray,
        scores: np.ndarray,
        cohorts: tuple[np.ndarray, pd.Series] | None = None,
    ) -> pd.DataFrame:
        """The scored frame from already computed model inputs and raw scores (and cohorts)."""
        # String columns are taken from their few distinct values (one array per name list), not
        # inferred from per-row Python strings: the same values and dtypes, far fewer objects.
        top = self._top(inputs, 3)
        names = np.asarray(self.explanation_columns if not isinstance(inputs, np.ndarray) else self.feature_columns, dtype=object)
        if len(top):  # the string array pandas would infer from these names (none for no rows)
            names = pd.Series(names).array
        index, keys = cohorts or self.cohorts(device_features)
        if keys.isna().any() or not len(keys):
            cohort = keys.to_numpy()[index] if len(keys) else cohort_keys(device_features, self.spec.cohort_columns).to_numpy()
        else:
            cohort = keys.array.take(index)
        return pd.DataFrame(
            {
                "device_id": device_features["device_id"].reset_index(drop=True),
                # The Series itself: to_numpy() of a tz-aware column is an object array of Timestamps.
                "timestamp": device_features["timestamp"].reset_index(drop=True),
                "cohort": cohort,
                "score": scores,
                "severity": self.severity(scores),
                "is_anomaly": scores > self.threshold,
                "top_feature_1": names.take(top[:, 0]),
                "top_feature_2": names.take(top[:, 1]) if top.shape[1] > 1 else None,
                "top_feature_3": names.take(top[:, 2]) if top.shape[1] > 2 else None,
            }
        )


_TABLES: dict[tuple[Any, int, tuple[str, ...]], tuple[weakref.ref, Any]] = {}


def _model_table(build: Any, frame: pd.DataFrame, metrics: list[str]) -> Any:
    """``build(frame, metrics)`` for a model's cohort stats or baselines, built once per frame
    rather than once per scored chunk (~7 ms each time). A model's fitted frames are not changed
    after training; the entry is dropped once the frame itself is gone."""
    key = (build, id(frame), tuple(metrics))
    found = _TABLES.get(key)
    if found is not None and found[0]() is frame:
        return found[1]
    for stale in [k for k, (ref, _) in _TABLES.items() if ref() is None]:
        del _TABLES[stale]
    value = build(frame, metrics)
    _TABLES[key] = (weakref.ref(frame), value)
    return value


def _model_frame(
    device_features: pd.DataFrame, spec: FeatureSpec, cohort_stats: pd.DataFrame, baselines: pd.DataFrame
) -> pd.DataFrame:
    return pd.concat(
        [
            device_features[spec.device_feature_columns()],
            cohort_z_scores(device_features, cohort_stats, spec.metrics, spec.cohort_columns),
            baseline_exceedance(device_features, baselines, spec.metrics, spec.cohort_columns),
        ],
        axis=1,
    )


def _monitored(spec: FeatureSpec, feature_columns: list[str]) -> list[str]:
    return list(dict.fromkeys([*spec.metrics, *feature_columns]))
