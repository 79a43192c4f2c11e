"""Backtest on labelled data: the assets' pipeline (features, cohort stats, baselines, detector)
run on a long-format file, scored on its test rows, next to a plain IsolationForest on the raw
metrics measured in the same run.

Input (long format): ``device_id``, ``timestamp``, optional ``split`` (``train``/``test``; without
it the earliest 50% of each device's time range trains), optional ``label`` (0/1), optional
cohort columns; every other numeric column is a metric.

Metrics, per device and overall (test rows only):

- ``auc_roc``, ``auc_pr`` (average precision): threshold free;
- event-level precision / recall / F1 *without point adjustment* (``core.metrics.event_f1``) at
  the threshold the pipeline chose on its own validation slice (no test labels), and at the best
  threshold on the test labels (an oracle upper bound, stated as such);
- ``alerts_per_device_per_day``: alert events (flagged rows of a device, merged when fewer than
  ``event_merge_samples`` samples apart) per device per day.

The file is taken as the assets take telemetry: exact duplicate rows keep one copy, rows that
share a (device_id, timestamp) with different values are set aside (both counted in the report).
Rolling windows are 12 and 72 samples at the file's sampling interval (1 hour and 6 hours of
5-minute telemetry, 12 and 72 seconds at 1 Hz). The training rows are cut into a fitting slice and
a later validation slice (``core.detector.training_slices``); cohort stats, baselines and every
member are fitted on the first, the threshold is chosen on the second, and the test rows are
scored. With ``model_scope="device"`` a device without training rows is fitted on its cohort's.

Overall AUCs pool the test rows of all devices; ``macro`` averages the per-device values.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from anomaly_assets.core.backtest_input import EvaluationInputError, prepare_input, read_long
from anomaly_assets.core.baselines import fit_baselines
from anomaly_assets.core.cohorts import cohort_keys, fit_cohort_stats
from anomaly_assets.core.detector import DetectorConfig, fit_slice, train_detector
from anomaly_assets.core.thresholds import choose_threshold
from anomaly_assets.core.features import FeatureSpec, build_device_features, sampling_interval, windows_for_interval
from anomaly_assets.core.metrics import alert_events, classification_metrics, device_days, event_f1

SCORES_COLUMNS = ("device_id", "timestamp", "score", "is_anomaly", "label")
METHODS = ("pipeline", "isolation_forest_raw")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    cohort_columns: tuple[str, ...] = ()
    # "fleet": one model for all devices (as the assets train); "device": one model per device
    # (the SMD protocol: each machine is trained and tested separately).
    model_scope: str = "fleet"
    # The file's test rows are the held-back slice: the training rows are cut into fit and
    # validation only.
    detector: DetectorConfig = DetectorConfig(holdout_days=0, holdout_share=0.0)
    windows: tuple[str, ...] | None = None  # None: WINDOW_SAMPLES samples at the file's sampling interval
    train_share: float = 0.5  # without a split column: the earliest share of each device's range trains
    best_threshold_candidates: int = 200
    baseline_estimators: int = 100  # scikit-learn's default forest for the plain baseline
    random_state: int = 0


@dataclasses.dataclass
class EvaluationReport:
    summary: dict[str, dict[str, float]]  # method -> overall metrics
    macro: dict[str, dict[str, float]]  # method -> mean of per-device metrics
    per_device: pd.DataFrame  # one row per device and method
    scores: pd.DataFrame  # SCORES_COLUMNS for the test rows (the pipeline's scores)
    metrics: tuple[str, ...]
    rows: dict[str, int]
    seconds: float
    windows: tuple[str, ...] = ()
    members: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {
            "rows": self.rows,
            "metrics": len(self.metrics),
            "windows": list(self.windows),
            "members": list(self.members),
            "overall": self.summary,
            "macro": self.macro,
            "per_device": self.per_device.to_dict("records"),
            "seconds": round(self.seconds, 1),
            "notes": [
                "event-level F1 is without point adjustment",
                "threshold 'pipeline': chosen by the pipeline on its validation slice, no test labels",
                "threshold 'best': tuned on the test labels (oracle upper bound)",
                "isolation_forest_raw: scikit-learn IsolationForest (default settings) on the raw metrics, "
                "threshold by the same alert budget on its training rows",
                "duplicate_rows: exact copies of a row, one kept; conflicting_rows: rows sharing (device_id, "
                "timestamp) with different values, all set aside (the telemetry contract's rule)",
            ],
        }


def _pipeline_scores(
    group: pd.DataFrame, metrics: list[str], config: EvaluationConfig, windows: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Test-row scores and flags of the assets' pipeline trained on the group's train rows."""
    is_train = group["is_train"].to_numpy()
    train_labelled = "label" in group and group.loc[is_train, "label"].notna().all()
    label_columns = ("label",) if "label" in group else ()
    spec = FeatureSpec(metrics=tuple(metrics), cohort_columns=config.cohort_columns, windows=windows, label_columns=label_columns)
    # One pass over each device's whole series: test features see the end of training as lookback.
    features = build_device_features(group.drop(columns="is_train"), spec)
    train_features = features.loc[is_train].reset_index(drop=True)
    if train_labelled:
        train_features = train_features.assign(label=train_features["label"].astype(bool))
    # Cohort statistics and baselines see the fitting slice only, as the detector does.
    fit_rows = fit_slice(train_features, config.detector)
    # Without cohort columns every row's cohort is FLEET, and both fits then emit the FLEET rows
    # twice (per cohort and fleet-wide); keep one copy so lookups by (cohort, metric) are unique.
    cohort_stats = fit_cohort_stats(fit_rows, metrics, config.cohort_columns).drop_duplicates(
        ["cohort", "hour", "metric"], ignore_index=True
    )
    baselines = fit_baselines(fit_rows, metrics, config.cohort_columns).drop_duplicates(["cohort", "metric"], ignore_index=True)
    model, _ = train_detector(
        train_features, cohort_stats, baselines, spec, config.detector, label_column="label" if train_labelled else None
    )
    scored = model.score(features.loc[~is_train].reset_index(drop=True))
    return scored["score"].to_numpy(), scored["is_anomaly"].to_numpy(dtype=bool), float(model.threshold)


def _raw_forest_scores(
    group: pd.DataFrame, metrics: list[str], config: EvaluationConfig
) -> tuple[np.ndarray, np.ndarray, float]:
    """A plain IsolationForest on the raw metrics (NaN -> training median)."""
    is_train = group["is_train"].to_numpy()
    train = group.loc[is_train, metrics].to_numpy(dtype=np.float64)
    test = group.loc[~is_train, metrics].to_numpy(dtype=np.float64)
    medians = np.nan_to_num(np.nanmedian(train, axis=0), nan=0.0)
    train = np.where(np.isnan(train), medians, train)
    test = np.where(np.isnan(test), medians, test)
    forest = IsolationForest(n_estimators=config.baseline_estimators, random_state=config.random_state, n_jobs=1)
    forest.fit(train)
    rows = group.loc[is_train]
    threshold = choose_threshold(
        -forest.score_samples(train),
        None,
        rows["device_id"].to_numpy(),
        device_days(rows["device_id"], rows["timestamp"]),
        config.detector.alert_budget,
        config.detector.event_merge_samples,
    )
    scores = -forest.score_samples(test)
    return scores, scores > threshold, threshold


def _groups(data: pd.DataFrame, config: EvaluationConfig) -> list[tuple[str, pd.DataFrame]]:
    """The rows each model trains and scores on. Per device, a device without train rows of its
    own is fitted on its cohort's train rows (its own test rows are scored)."""
    if config.model_scope == "fleet":
        return [("fleet", data)]
    cohort = cohort_keys(data, config.cohort_columns)
    trains = data.loc[data["is_train"]]
    groups = []
    for device, rows in data.groupby("device_id", sort=True):
        if rows["is_train"].any():
            groups.append((str(device), rows))
            continue
        peers = trains.loc[(cohort.loc[trains.index] == cohort.loc[rows.index[0]]).to_numpy()]
        if peers.empty:
            raise EvaluationInputError(f"{device}: no train rows of its own nor of its cohort to fit on")
        groups.append((str(device), pd.concat([peers, rows.loc[~rows["is_train"]]])))
    return groups


def _best_event_f1(labels: np.ndarray, scores: np.ndarray, devices: np.ndarray, candidates: int) -> dict[str, float]:
    finite = scores[np.isfinite(scores)]
    if not len(finite) or not labels.any():
        return {"event_f1_best": 0.0, "best_threshold": float("nan")}
    quantiles = np.unique(np.quantile(finite, np.linspace(0.5, 0.9995, candidates)))
    best = (-1.0, float("nan"), {})
    for threshold in quantiles:
        result = event_f1(labels, scores > threshold, devices)
        if result["event_f1"] > best[0]:
            best = (result["event_f1"], float(threshold), result)
    return {
        "event_f1_best": best[0],
        "event_precision_best": best[2].get("event_precision", 0.0),
        "event_recall_best": best[2].get("event_recall", 0.0),
        "best_threshold": best[1],
    }


def _alerts_per_device_per_day(flags: np.ndarray, devices: np.ndarray, timestamps: pd.Series, merge_samples: int) -> float:
    days = device_days(pd.Series(devices), timestamps)
    return float(alert_events(flags, devices, merge_samples) / days) if days else 0.0


def score_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    flags: np.ndarray,
    devices: np.ndarray,
    timestamps: pd.Series,
    candidates: int = 200,
    merge_samples: int = DetectorConfig.event_merge_samples,
) -> dict[str, float]:
    """The backtest metrics of one method on rows sorted by device, then time."""
    labels = np.asarray(labels, dtype=bool)
    point = classification_metrics(labels, scores, np.inf)
    at_pipeline = event_f1(labels, flags, devices)
    return {
        "auc_roc": point.get("auc_roc", float("nan")),
        "auc_pr": point.get("auc_pr", float("nan")),
        "event_f1": at_pipeline["event_f1"],
        "event_precision": at_pipeline["event_precision"],
        "event_recall": at_pipeline["event_recall"],
        **_best_event_f1(labels, scores, devices, candidates),
        "alerts_per_device_per_day": _alerts_per_device_per_day(np.asarray(flags, dtype=bool), devices, timestamps, merge_samples),
        "true_events": at_pipeline["true_events"],
        "label_rate": float(labels.mean()) if len(labels) else 0.0,
    }


def evaluate(
    frame: pd.DataFrame,
    config: EvaluationConfig = EvaluationConfig(),
    progress: Callable[[str], None] = lambda _m: None,
) -> EvaluationReport:
    """Run the backtest (see the module docstring) and return the report."""
    if config.model_scope not in ("fleet", "device"):
        raise EvaluationInputError(f"model_scope must be 'fleet' or 'device', got {config.model_scope!r}")
    began = time.perf_counter()
    data, metrics = prepare_input(frame, config.cohort_columns, config.train_share)
    try:
        windows = config.windows or windows_for_interval(sampling_interval(data))
    except ValueError as error:
        raise EvaluationInputError(str(error)) from None
    test = data.loc[~data["is_train"]].reset_index(drop=True)
    results = {m: np.full(len(test), np.nan) for m in METHODS}
    flags = {m: np.zeros(len(test), dtype=bool) for m in METHODS}
    offset = 0
    for name, group in _groups(data, config):
        group = group.reset_index(drop=True)
        n_test = int((~group["is_train"]).sum())
        try:
            pipeline_scores, pipeline_flags, _ = _pipeline_scores(group, metrics, config, windows)
        except ValueError as error:
            raise EvaluationInputError(f"{name}: the pipeline cannot train: {error}") from None
        raw_scores, raw_flags, _ = _raw_forest_scores(group, metrics, config)
        window = slice(offset, offset + n_test)
        results["pipeline"][window], flags["pipeline"][window] = pipeline_scores, pipeline_flags
        results["isolation_forest_raw"][window], flags["isolation_forest_raw"][window] = raw_scores, raw_flags
        offset += n_test
        progress(f"{name}: scored {n_test} test rows")

    labelled = test["label"].notna().to_numpy()
    devices = test["device_id"].to_numpy()
    summary, macro, rows = {}, {}, []

    def metrics_on(method: str, mask: np.ndarray) -> dict:
        return score_metrics(
            test.loc[mask, "label"].to_numpy(dtype=bool),
            results[method][mask],
            flags[method][mask],
            devices[mask],
            test.loc[mask, "timestamp"].reset_index(drop=True),
            config.best_threshold_candidates,
            config.detector.event_merge_samples,
        )

    for method in METHODS:
        summary[method] = metrics_on(method, labelled)
        for device in np.unique(devices):
            rows.append({"device_id": device, "method": method, **metrics_on(method, labelled & (devices == device))})
        per_method = pd.DataFrame([r for r in rows if r["method"] == method])
        macro[method] = {
            k: float(per_method[k].mean())
            for k in ("auc_roc", "auc_pr", "event_f1", "event_f1_best", "alerts_per_device_per_day")
        }
    scores = pd.DataFrame(
        {
            "device_id": test["device_id"],
            "timestamp": test["timestamp"],
            "score": results["pipeline"],
            "is_anomaly": flags["pipeline"],
            "label": test["label"].astype("Int64"),
        }
    )
    return EvaluationReport(
        summary=summary,
        macro=macro,
        per_device=pd.DataFrame(rows),
        scores=scores,
        metrics=tuple(metrics),
        rows={
            "train": int(data["is_train"].sum()),
            "test": len(test),
            "devices": int(data["device_id"].nunique()),
            "duplicate_rows": int(data.attrs.get("duplicate_rows", 0)),
            "conflicting_rows": int(data.attrs.get("conflicting_rows", 0)),
        },
        seconds=time.perf_counter() - began,
        windows=tuple(windows),
        members=tuple(config.detector.members),
    )


def format_report(report: EvaluationReport) -> str:
    columns = ("auc_roc", "auc_pr", "event_f1", "event_f1_best", "alerts_per_device_per_day")
    names = ("AUC-ROC", "AUC-PR", "event F1", "ev F1 best", "alerts/dev/day")
    head = f"{'':<30}" + "".join(f"{c:>15}" for c in names)
    lines = [
        f"Backtest: {report.rows['devices']} device(s), {report.rows['train']:,} train rows, "
        f"{report.rows['test']:,} test rows, {len(report.metrics)} metrics, {report.seconds:.1f}s",
        f"Rolling windows {', '.join(report.windows)}; ensemble members {', '.join(report.members)}; set aside: "
        f"{report.rows.get('duplicate_rows', 0):,} exact duplicate row(s) (one copy kept), "
        f"{report.rows.get('conflicting_rows', 0):,} conflicting row(s) for one (device_id, timestamp)",
        "",
        head,
    ]
    for scope, table in (("pooled", report.summary), ("mean", report.macro)):
        for method in METHODS:
            lines.append(f"{scope:<8}{method:<22}" + "".join(f"{table[method][c]:>15.4f}" for c in columns))
    lines += ["", "Per device:", f"{'device':<16}{'method':<22}" + "".join(f"{c:>15}" for c in names)]
    for row in report.per_device.sort_values(["device_id", "method"], ascending=[True, False]).to_dict("records"):
        lines.append(f"{str(row['device_id'])[:15]:<16}{row['method']:<22}" + "".join(f"{row[c]:>15.4f}" for c in columns))
    lines += [
        "",
        "event F1: event level, no point adjustment. 'event F1' at the pipeline's own threshold (no test labels);",
        "'ev F1 best' at the best threshold on the test labels (oracle). isolation_forest_raw: plain",
        "IsolationForest on the raw metrics, same run.",
    ]
    return "\n".join(lines)


__all__ = [
    "EvaluationConfig",
    "EvaluationInputError",
    "EvaluationReport",
    "choose_threshold",
    "evaluate",
    "format_report",
    "prepare_input",
    "read_long",
    "score_metrics",
]
