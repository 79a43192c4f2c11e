"""Training the fleet anomaly detector: an ensemble fitted on one slice of the training window,
its threshold chosen on a later slice, its quality measured on a slice after that.

Slices (``training_slices``): with more calendar days than ``validation_days + holdout_days``,
the last ``holdout_days`` days are held back and the ``validation_days`` before them choose the
threshold (the daily asset graph); a shorter history is cut per device by shares of its own
time range (``validation_share``, ``holdout_share``), so a run of 20 minutes at 1 Hz trains too.

Members (``core.ensemble``): the IsolationForest on the current features, a PCA reconstruction
of the device-standardized lag window and the largest device robust z; their scores are fused
without labels. The threshold keeps alert events (flagged rows of a device, merged when fewer
than ``event_merge_samples`` samples apart) within ``alert_budget`` events per device per day on
the validation slice; with labels there, it is the best-F1 threshold when that is within budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from anomaly_assets.core.drift import fit_drift_reference
from anomaly_assets.core.ensemble import (
    MEMBERS,
    DeviceNorms,
    DeviceSpreads,
    Reconstruction,
    ScoreFusion,
    device_source_columns,
)
from anomaly_assets.core.fast_forest import CompiledForest
from anomaly_assets.core.features import FeatureSpec
from anomaly_assets.core.metrics import alert_events, classification_metrics, device_days, event_f1
from anomaly_assets.core.thresholds import choose_threshold
from anomaly_assets.core.model import SCORED_COLUMNS, FleetAnomalyModel, ModelInputs, _model_frame, _monitored
from anomaly_assets.core.training_window import SamplePlan, TrainingWindow, slice_masks

__all__ = [
    "SCORED_COLUMNS",
    "DetectorConfig",
    "FleetAnomalyModel",
    "ModelInputs",
    "TrainedDetector",
    "TrainingWindow",
    "fit_chunks",
    "fit_slice",
    "fitting_sample",
    "train_detector",
    "train_window",
    "training_slices",
]


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    # 100 trees (scikit-learn's default): on the synthetic fleet (2 fleets x 3 seeds) AUC-ROC was
    # 0.003 and AUC-PR 0.007 below 200 trees, well inside the 0.02 spread between random seeds,
    # for half the scoring and training time.
    n_estimators: int = 100
    # Deeper trees (2048 samples) separate level shifts and dropouts far better than the
    # scikit-learn default of 256 on this feature set (AUC measured on the synthetic fleet).
    max_samples: int = 2048
    # Which model features the forest sees: per-metric suffixes (``{metric}__{suffix}``; {short}
    # is the spec's shortest window) and row-level features. Fewer, sharper features beat all of
    # them: IsolationForest picks split features at random, so redundant columns dilute the rest.
    feature_suffixes: tuple[str, ...] = ("cohort_z", "baseline_exceed", "dev_{short}", "std_{short}")
    row_features: tuple[str, ...] = ("missing_metrics", "gap_minutes")
    members: tuple[str, ...] = MEMBERS
    validation_days: int = 1
    holdout_days: int = 1
    validation_share: float = 0.2  # histories of too few days: shares of each device's time range
    holdout_share: float = 0.2
    # Alert events per device per day the threshold allows on the validation slice: one event per
    # device every 20 days, so a 200-device fleet sees about 10 a day.
    alert_budget: float = 0.05
    event_merge_samples: int = 12
    # Which device columns are tail-calibrated (core.ensemble.TailCalibration): "none", "all" or
    # "discrete" (those that are mostly one value, and every column of a metric that is: counts of
    # rare events). "discrete" measured best on SMD, SKAB and the synthetic fleet alike, see
    # README "Detection quality".
    tail_calibration: str = "discrete"
    reconstruction_variance: float = 0.9
    # Bound on the fitting rows the forest, device norms' cohort and fleet lines, baselines and
    # the drift reference are fitted on: above it, a sample stratified by cohort and day
    # (core.training_window). Per-device norms and cohort stats always see every fitting row.
    sample_rows: int = 500_000
    fit_sample_rows: int = 200_000  # bound on the sample rows the reconstruction and fusion are fitted on
    # Devices whose validation and held-out rows choose the threshold and measure quality; a
    # uniform sample of devices above it.
    evaluation_devices: int = 5_000
    random_state: int = 0

    def resolved_suffixes(self, spec: FeatureSpec) -> tuple[str, ...]:
        return tuple(s.format(short=spec.windows[0]) for s in self.feature_suffixes)


def training_slices(
    features: pd.DataFrame, config: DetectorConfig = DetectorConfig()
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(fit, validation, holdout) of a window in memory: each strictly later than the one before,
    per device (``core.training_window.slice_masks``)."""
    if features.empty:
        raise ValueError("the training window holds no rows")
    days = np.sort(features["timestamp"].dt.floor("D").unique())
    in_fit, in_validation, in_holdout = slice_masks(features, days, config)
    _require_slices(in_fit.any(), in_validation.any(), f"{len(features)} rows, {len(days)} day(s)")
    return features.loc[in_fit], features.loc[in_validation], features.loc[in_holdout]


def _require_slices(fit: bool, validation: bool, window: str) -> None:
    if not fit or not validation:
        raise ValueError(f"the training window ({window}) leaves no rows to fit on or none to choose the threshold on")


def fit_slice(features: pd.DataFrame, config: DetectorConfig = DetectorConfig()) -> pd.DataFrame:
    """The rows cohort stats, baselines and detectors are fitted on."""
    return training_slices(features, config)[0]


def fit_chunks(
    window: TrainingWindow, config: DetectorConfig = DetectorConfig(), columns: Sequence[str] | None = None
) -> Iterator[pd.DataFrame]:
    """Each chunk's fitting rows (only ``columns``, which must include the device id and
    timestamp, when given), sorted by device and time (``cohort_stats`` adds them up)."""
    found = False
    for chunk in window.chunks(columns, window.slice_days(config)[0]):
        in_fit, _, _ = slice_masks(chunk, window.days, config)
        found = found or bool(in_fit.any())
        yield chunk.loc[in_fit]
    if not found:
        raise ValueError("the training window leaves no rows to fit on")


def fitting_sample(
    window: TrainingWindow,
    cohort_columns: Sequence[str],
    config: DetectorConfig = DetectorConfig(),
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The fitting rows the detectors and baselines are fitted on (only ``columns`` when given):
    all of them up to ``config.sample_rows``, else a sample stratified by cohort and day
    (``SamplePlan``)."""
    plan = SamplePlan.build(window, cohort_columns, config)
    parts = [plan.take(rows, cohort_columns) for rows in fit_chunks(window, config, columns)]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)


def _sample(n: int, limit: int, seed: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


@dataclasses.dataclass
class TrainedDetector:
    model: FleetAnomalyModel
    metrics: dict[str, float]
    report_rows: pd.DataFrame  # held-out (else validation) rows of evaluated devices, for figures
    plan: SamplePlan


def train_detector(
    device_features: pd.DataFrame,
    cohort_stats: pd.DataFrame,
    baselines: pd.DataFrame,
    spec: FeatureSpec,
    config: DetectorConfig = DetectorConfig(),
    label_column: str | None = "is_injected_anomaly",
) -> tuple[FleetAnomalyModel, dict[str, float]]:
    """``train_window`` on a window in memory; returns the model and its metrics."""
    if device_features.empty:
        raise ValueError("the training window holds no rows")
    trained = train_window(TrainingWindow.of_frame(device_features), cohort_stats, baselines, spec, config, label_column)
    return trained.model, trained.metrics


def train_window(
    window: TrainingWindow,
    cohort_stats: pd.DataFrame,
    baselines: pd.DataFrame,
    spec: FeatureSpec,
    config: DetectorConfig = DetectorConfig(),
    label_column: str | None = "is_injected_anomaly",
    report_rows: int = 100_000,
) -> TrainedDetector:
    """Fit on the fitting slice, pick the threshold on the validation slice, measure on the holdout,
    reading the window a chunk of whole devices at a time.

    ``cohort_stats`` and ``baselines`` must have been fitted on the window's fitting slice. Peak
    memory depends on ``config.sample_rows``, ``config.evaluation_devices`` and the chunk size,
    not on the fleet or the window's length. Metrics: ``threshold_slice_*`` on the validation
    slice, the plain names (``auc_pr``, ``f1``, ...) on the holdout slice when there is one.
    """
    unknown = sorted(set(config.members) - set(MEMBERS))
    if unknown or not config.members:
        raise ValueError(f"members must be a non-empty subset of {MEMBERS}, got {config.members}")
    if config.tail_calibration not in ("none", "all", "discrete"):
        raise ValueError(f"tail_calibration must be 'none', 'all' or 'discrete', got {config.tail_calibration!r}")
    plan = SamplePlan.build(window, spec.cohort_columns, config)
    model = FleetAnomalyModel(
        spec=spec,
        cohort_stats=cohort_stats,
        baselines=baselines,
        feature_columns=[],
        medians=np.zeros(0),
        scales=np.zeros(0),
        forest=None,
        threshold=np.inf,
        score_reference=0.0,
        members=tuple(config.members),
        device_columns=device_source_columns(spec.metrics, spec.windows[:1]),
    )
    # Pass 1: every device's norms from all its fitting rows (exact), and the fitting sample.
    sample_parts, spreads, fit_times = [], [], []
    for rows in fit_chunks(window, config):
        if len(rows):
            spreads.append(DeviceSpreads.of(model.device_raw(rows), rows["device_id"]))
            sample_parts.append(plan.take(rows, spec.cohort_columns))
            fit_times += [rows["timestamp"].min(), rows["timestamp"].max()]
    sample = pd.concat(sample_parts, ignore_index=True) if len(sample_parts) > 1 else sample_parts[0].reset_index(drop=True)
    del sample_parts
    _fit_members(model, sample, DeviceSpreads.concat(spreads), config)
    del spreads

    # Pass 2: the evaluated devices' validation and held-out rows, scored a chunk at a time.
    validation, holdout = _EvaluationRows(report_rows), _EvaluationRows(report_rows)
    for chunk in window.chunks(None, window.slice_days(config)[1]):
        chunk = chunk.loc[plan.evaluated(chunk["device_id"])]
        _, in_validation, in_holdout = slice_masks(chunk, window.days, config)
        for rows, into in ((chunk.loc[in_validation], validation), (chunk.loc[in_holdout], holdout)):
            if len(rows):
                into.add(rows, model.raw_scores(model.model_inputs(rows)), label_column)
    _require_slices(len(sample) > 0, validation.count > 0, f"{plan.fit_rows} fitting rows, {len(window.days)} day(s)")
    val = validation.frame()
    model.threshold = choose_threshold(
        val["score"].to_numpy(),
        validation.labels(),
        val["device_id"].to_numpy(),
        device_days(val["device_id"], val["timestamp"]),
        config.alert_budget,
        config.event_merge_samples,
    )
    model.score_reference = float(np.median(val["score"].to_numpy()))
    metrics = {
        "fit_rows": float(plan.fit_rows),
        "sample_rows": float(len(sample)),
        "validation_rows": float(validation.count),
        "holdout_rows": float(holdout.count),
        "evaluated_devices": float(val["device_id"].nunique()),
        "threshold": float(model.threshold),
        **{f"threshold_slice_{k}": v for k, v in _quality(model, val, val["score"].to_numpy(), validation.labels(), config).items()},
    }
    if holdout.count:
        held = holdout.frame()
        metrics.update(_quality(model, held, held["score"].to_numpy(), holdout.labels(), config))
    model.training_summary = {
        "fit_start": str(min(fit_times)),
        "fit_end": str(max(fit_times)),
        "validation_start": str(val["timestamp"].min()),
        "validation_end": str(val["timestamp"].max()),
        "holdout_start": str(holdout.first) if holdout.count else None,
        "holdout_end": str(holdout.last) if holdout.count else None,
        "members": list(config.members),
        **metrics,
    }
    shown = holdout if holdout.count else validation
    return TrainedDetector(model, metrics, shown.report(), plan)


def _fit_members(model: FleetAnomalyModel, sample: pd.DataFrame, per_device: DeviceSpreads, config: DetectorConfig) -> None:
    """The forest, the device norms, the reconstruction and the fusion from the fitting sample
    (sorted by device and time); the device norms' device lines from ``per_device``."""
    spec = model.spec
    fit_frame = _model_frame(sample, spec, model.cohort_stats, model.baselines)
    suffixes = config.resolved_suffixes(spec)
    feature_columns = [c for c in fit_frame.columns if c in config.row_features or c.rpartition("__")[2] in suffixes]
    if not feature_columns:
        raise ValueError(f"no model features match {suffixes} / {config.row_features}")
    fit_values = fit_frame[feature_columns].to_numpy(dtype=np.float64)
    model.feature_columns = feature_columns
    model.medians = np.nan_to_num(np.nanmedian(fit_values, axis=0), nan=0.0)
    model.scales = _robust_scales(fit_values)
    model.forest = IsolationForest(
        n_estimators=config.n_estimators,
        max_samples=min(config.max_samples, len(fit_values)),
        random_state=config.random_state,
        n_jobs=1,
    ).fit(np.where(np.isnan(fit_values), model.medians[None, :], fit_values))
    model.compiled_forest = CompiledForest.from_sklearn(model.forest)
    model.drift_reference = fit_drift_reference(fit_frame, _monitored(spec, feature_columns), seed=config.random_state)
    del fit_frame, fit_values
    # The reconstruction and fusion from a bounded share of the sample.
    cohorts = model.cohorts(sample)
    raw = model.device_raw(sample, cohorts)
    sparse = set(sparse_metrics(sample, spec.metrics))
    model.device_norms = DeviceNorms.from_device_spreads(
        per_device,
        raw,
        cohorts[1].take(cohorts[0]).reset_index(drop=True),
        discrete=np.array([c.partition("__")[0] in sparse for c in model.device_columns], dtype=bool),
        # A metric going missing is a fault however often it happens: never weighed as a count.
        continuous=np.array([c == "missing_metrics" for c in model.device_columns], dtype=bool),
    )
    rows = model.device_norms.table_rows(sample["device_id"], *cohorts)
    device = model.device_norms.standardize(raw, rows)
    del raw
    fit_rows = _sample(len(sample), config.fit_sample_rows, config.random_state)
    if config.tail_calibration != "none":
        columns = model.device_norms.discrete if config.tail_calibration == "discrete" else None
        device = model.device_norms.calibrate(device, columns, fit_rows)
    model.reconstruction = Reconstruction.fit(device, config.reconstruction_variance, config.fit_sample_rows, config.random_state)
    inputs = ModelInputs(model.model_matrix(sample.iloc[fit_rows], None), device[fit_rows])
    model.fusion = ScoreFusion.fit(model.member_scores(inputs))


class _EvaluationRows:
    """Scores of one slice's evaluated rows with their device, time and label, chunk by chunk,
    and the first ``report_rows`` of its rows whole (for the training figures)."""

    def __init__(self, report_rows: int):
        self.parts: list[pd.DataFrame] = []
        self.report_rows = report_rows
        self._report: list[pd.DataFrame] = []
        self._reported = 0
        self.count = 0
        self.first = self.last = None
        self._labelled = True

    def add(self, rows: pd.DataFrame, scores: np.ndarray, label_column: str | None) -> None:
        labels = _labels(rows, label_column)
        self._labelled = self._labelled and labels is not None
        self.parts.append(
            pd.DataFrame(
                {
                    "device_id": rows["device_id"].to_numpy(),
                    "timestamp": rows["timestamp"].reset_index(drop=True),
                    "score": scores,
                    "label": labels if labels is not None else np.zeros(len(rows), bool),
                }
            )
        )
        self.count += len(rows)
        if self._reported < self.report_rows:
            self._report.append(rows.head(self.report_rows - self._reported))
            self._reported += len(self._report[-1])
        first, last = rows["timestamp"].min(), rows["timestamp"].max()
        self.first = first if self.first is None else min(self.first, first)
        self.last = last if self.last is None else max(self.last, last)

    def frame(self) -> pd.DataFrame:
        frame = pd.concat(self.parts, ignore_index=True) if len(self.parts) > 1 else self.parts[0]
        self.parts = [frame]
        return frame

    def report(self) -> pd.DataFrame:
        return pd.concat(self._report, ignore_index=True) if len(self._report) > 1 else self._report[0].reset_index(drop=True)

    def labels(self) -> np.ndarray | None:
        return self.frame()["label"].to_numpy(dtype=bool) if self._labelled else None


def sparse_metrics(frame: pd.DataFrame, metrics) -> list[str]:
    """Metrics that are mostly one value (median absolute deviation 0), such as counts of rare
    events: every column derived from them is measured on the fleet's scale and tail-calibrated."""
    found = []
    for metric in metrics:
        values = frame[metric].to_numpy(dtype=np.float64)
        values = values[~np.isnan(values)]
        if len(values) and np.median(np.abs(values - np.median(values))) == 0:
            found.append(metric)
    return found


def _labels(frame: pd.DataFrame, label_column: str | None) -> np.ndarray | None:
    if not label_column or label_column not in frame or frame[label_column].isna().any():
        return None
    return frame[label_column].to_numpy(dtype=bool)


def _quality(
    model: FleetAnomalyModel, rows: pd.DataFrame, scores: np.ndarray, labels: np.ndarray | None, config: DetectorConfig
) -> dict[str, float]:
    """Alert volume and (with labels of both classes) detection quality of sorted rows."""
    flags = scores > model.threshold
    devices = rows["device_id"].to_numpy()
    events = alert_events(flags, devices, config.event_merge_samples)
    days = device_days(rows["device_id"], rows["timestamp"])
    quality = {
        "alert_rate": float(np.mean(flags)) if len(flags) else 0.0,
        "alerts_per_device_per_day": float(events / days) if days else 0.0,
    }
    if labels is not None and 0 < labels.sum() < len(labels):
        quality.update(classification_metrics(labels, scores, model.threshold))
        quality.update({k: v for k, v in event_f1(labels, flags, devices).items() if k != "true_events"})
    return quality


def _robust_scales(values: np.ndarray) -> np.ndarray:
    q25, q75 = np.nanpercentile(values, [25, 75], axis=0)
    scales = (q75 - q25) / 1.349
    std = np.nanstd(values, axis=0)
    scales = np.where(scales > 1e-9, scales, std)
    return np.where(scales > 1e-9, scales, 1.0)
