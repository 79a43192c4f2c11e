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
- ``alerts_per_device_per_day``: alert events (runs of flagged rows) per device per day.

Overall AUCs pool the test rows of all devices; ``macro`` averages the per-device values.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from anomaly_assets.core.baselines import fit_baselines
from anomaly_assets.core.cohorts import fit_cohort_stats
from anomaly_assets.core.detector import DetectorConfig, choose_threshold, train_detector
from anomaly_assets.core.features import FeatureSpec, build_device_features
from anomaly_assets.core.metrics import classification_metrics, event_f1

RESERVED = ("device_id", "timestamp", "split", "label")
SCORES_COLUMNS = ("device_id", "timestamp", "score", "is_anomaly", "label")
METHODS = ("pipeline", "isolation_forest_raw")


class EvaluationInputError(ValueError):
    """The input file does not have the backtest format: the message says what is wrong."""


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    cohort_columns: tuple[str, ...] = ()
    # "fleet": one model for all devices (as the assets train); "device": one model per device
    # (the SMD protocol: each machine is trained and tested separately).
    model_scope: str = "fleet"
    detector: DetectorConfig = DetectorConfig()
    windows: tuple[str, ...] = ("1h", "6h")
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

    def as_dict(self) -> dict:
        return {
            "rows": self.rows,
            "metrics": len(self.metrics),
            "overall": self.summary,
            "macro": self.macro,
            "per_device": self.per_device.to_dict("records"),
            "seconds": round(self.seconds, 1),
            "notes": [
                "event-level F1 is without point adjustment",
                "threshold 'pipeline': chosen by the pipeline on its validation slice, no test labels",
                "threshold 'best': tuned on the test labels (oracle upper bound)",
                "isolation_forest_raw: scikit-learn IsolationForest (default settings) on the raw metrics, "
                "threshold at the same alert rate on its training rows",
            ],
        }


def prepare_input(
    frame: pd.DataFrame, cohort_columns: Sequence[str] = (), train_share: float = 0.5
) -> tuple[pd.DataFrame, list[str]]:
    """Check and normalize a long-format frame; returns it (with boolean ``is_train``) and the metrics."""
    missing = [c for c in ("device_id", "timestamp") if c not in frame]
    if missing:
        raise EvaluationInputError(f"the input lacks required column(s) {missing}; it has {list(frame.columns)[:20]}")
    absent = [c for c in cohort_columns if c not in frame]
    if absent:
        raise EvaluationInputError(f"cohort column(s) {absent} are not in the input")
    out = frame.copy()
    out["device_id"] = out["device_id"].astype("str")
    timestamps = pd.to_datetime(out["timestamp"], utc=True, errors="coerce")
    if timestamps.isna().any():
        bad = out.loc[timestamps.isna(), "timestamp"].iloc[0]
        raise EvaluationInputError(f"{int(timestamps.isna().sum())} timestamp(s) cannot be parsed, e.g. {bad!r}")
    out["timestamp"] = timestamps.dt.as_unit("ns")
    for column in cohort_columns:
        out[column] = out[column].astype("str")
    metrics = [
        c
        for c in out.columns
        if c not in RESERVED and c not in cohort_columns and pd.api.types.is_numeric_dtype(out[c]) and not pd.api.types.is_bool_dtype(out[c])
    ]
    if not metrics:
        raise EvaluationInputError("the input has no numeric metric column besides device_id/timestamp/split/label")
    out[metrics] = out[metrics].astype(np.float64)
    if "label" in out:
        labels = pd.to_numeric(out["label"], errors="coerce")
        if not labels.dropna().isin([0, 1]).all():
            raise EvaluationInputError("label must be 0 or 1 (or empty on unlabelled training rows)")
        out["label"] = labels
    if "split" in out:
        split = out["split"].astype("str").str.lower()
        unknown = sorted(set(split) - {"train", "test"})
        if unknown:
            raise EvaluationInputError(f"split must be 'train' or 'test', got {unknown[:5]}")
        out["is_train"] = (split == "train").to_numpy()
        out = out.drop(columns="split")
    else:
        first = out.groupby("device_id")["timestamp"].transform("min")
        last = out.groupby("device_id")["timestamp"].transform("max")
        out["is_train"] = (out["timestamp"] <= first + (last - first) * train_share).to_numpy()
    out = out.sort_values(["device_id", "timestamp"], kind="stable", ignore_index=True)
    if out.duplicated(["device_id", "timestamp"]).any():
        raise EvaluationInputError("(device_id, timestamp) must be unique")
    if not (~out["is_train"]).any():
        raise EvaluationInputError("the input has no test rows")
    if "label" not in out or out.loc[~out["is_train"], "label"].isna().all():
        raise EvaluationInputError("the test rows carry no labels: a backtest needs a 'label' column (0/1)")
    return out, metrics


def _pipeline_scores(
    group: pd.DataFrame, metrics: list[str], config: EvaluationConfig
) -> tuple[np.ndarray, np.ndarray, float]:
    """Test-row scores and flags of the assets' pipeline trained on the group's train rows."""
    train = group.loc[group["is_train"]]
    train_labelled = "label" in group and train["label"].notna().all() and len(train)
    label_columns = ("label",) if "label" in group else ()
    spec = FeatureSpec(
        metrics=tuple(metrics), cohort_columns=config.cohort_columns, windows=config.windows, label_columns=label_columns
    )
    # One pass over each device's whole series: test features see the end of training as lookback.
    features = build_device_features(group.drop(columns="is_train"), spec)
    is_train = group["is_train"].to_numpy()
    # Without cohort columns every row's cohort is FLEET, and both fits then emit the FLEET rows
    # twice (per cohort and fleet-wide); keep one copy so lookups by (cohort, metric) are unique.
    cohort_stats = fit_cohort_stats(train, metrics, config.cohort_columns).drop_duplicates(
        ["cohort", "hour", "metric"], ignore_index=True
    )
    baselines = fit_baselines(train, metrics, config.cohort_columns).drop_duplicates(
        ["cohort", "metric"], ignore_index=True
    )
    train_features = features.loc[is_train].reset_index(drop=True)
    if train_labelled:
        train_features = train_features.assign(label=train_features["label"].astype(bool))
    model, _ = train_detector(
        train_features, cohort_stats, baselines, spec, config.detector, label_column="label" if train_labelled else None
    )
    scored = model.score(features.loc[~is_train].reset_index(drop=True))
    return scored["score"].to_numpy(), scored["is_anomaly"].to_numpy(dtype=bool), float(model.threshold)


def _raw_forest_scores(
    group: pd.DataFrame, metrics: list[str], config: EvaluationConfig
) -> tuple[np.ndarray, np.ndarray, float]:
    """A plain IsolationForest on the raw metrics (NaN -> training median)."""
    train = group.loc[group["is_train"], metrics].to_numpy(dtype=np.float64)
    test = group.loc[~group["is_train"], metrics].to_numpy(dtype=np.float64)
    medians = np.nan_to_num(np.nanmedian(train, axis=0), nan=0.0)
    train = np.where(np.isnan(train), medians, train)
    test = np.where(np.isnan(test), medians, test)
    forest = IsolationForest(n_estimators=config.baseline_estimators, random_state=config.random_state, n_jobs=1)
    forest.fit(train)
    threshold = float(np.quantile(-forest.score_samples(train), 1.0 - config.detector.target_alert_rate))
    scores = -forest.score_samples(test)
    return scores, scores > threshold, threshold


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


def _alerts_per_device_per_day(flags: np.ndarray, devices: np.ndarray, timestamps: pd.Series) -> float:
    starts = flags & ~np.r_[False, flags[:-1] & (devices[1:] == devices[:-1])]
    device_days = 0.0
    for device in np.unique(devices):
        ts = timestamps[devices == device]
        device_days += max((ts.max() - ts.min()) / pd.Timedelta(days=1), 1 / 1440)
    return float(starts.sum() / device_days) if device_days else 0.0


def score_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    flags: np.ndarray,
    devices: np.ndarray,
    timestamps: pd.Series,
    candidates: int = 200,
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
        "alerts_per_device_per_day": _alerts_per_device_per_day(np.asarray(flags, dtype=bool), devices, timestamps),
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
    groups = [data] if config.model_scope == "fleet" else [g for _, g in data.groupby("device_id", sort=True)]
    test = data.loc[~data["is_train"]].reset_index(drop=True)
    results = {m: np.full(len(test), np.nan) for m in METHODS}
    flags = {m: np.zeros(len(test), dtype=bool) for m in METHODS}
    offset = 0
    for group in groups:
        group = group.reset_index(drop=True)
        n_test = int((~group["is_train"]).sum())
        name = "fleet" if config.model_scope == "fleet" else str(group["device_id"].iloc[0])
        try:
            pipeline_scores, pipeline_flags, _ = _pipeline_scores(group, metrics, config)
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
        rows={"train": int(data["is_train"].sum()), "test": len(test), "devices": int(data["device_id"].nunique())},
        seconds=time.perf_counter() - began,
    )


def read_long(path: str) -> pd.DataFrame:
    """A long-format CSV or parquet file (by extension)."""
    if str(path).endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={"device_id": str})


def format_report(report: EvaluationReport) -> str:
    columns = ("auc_roc", "auc_pr", "event_f1", "event_f1_best", "alerts_per_device_per_day")
    names = ("AUC-ROC", "AUC-PR", "event F1", "ev F1 best", "alerts/dev/day")
    head = f"{'':<30}" + "".join(f"{c:>15}" for c in names)
    lines = [
        f"Backtest: {report.rows['devices']} device(s), {report.rows['train']:,} train rows, "
        f"{report.rows['test']:,} test rows, {len(report.metrics)} metrics, {report.seconds:.1f}s",
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
