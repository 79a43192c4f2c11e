"""Detection quality metrics on labelled rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC-ROC, AUC-PR (average precision) and point precision/recall/F1 at ``threshold``."""
    labels = np.asarray(labels, dtype=bool)
    flagged = np.asarray(scores) > threshold
    tp = float(np.sum(flagged & labels))
    precision = tp / flagged.sum() if flagged.any() else 0.0
    recall = tp / labels.sum() if labels.any() else 0.0
    metrics = {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }
    if 0 < labels.sum() < len(labels):
        metrics["auc_roc"] = float(roc_auc_score(labels, scores))
        metrics["auc_pr"] = float(average_precision_score(labels, scores))
    return metrics


def auc_by_anomaly_type(anomaly_type: pd.Series, scores: np.ndarray, normal: str = "normal") -> dict[str, float]:
    """AUC-ROC of each fault type's rows against the normal rows."""
    types = anomaly_type.to_numpy()
    is_normal = types == normal
    result = {}
    for kind in sorted(set(types) - {normal}):
        mask = is_normal | (types == kind)
        result[kind] = float(roc_auc_score(types[mask] == kind, np.asarray(scores)[mask]))
    return result


def _events(flags: np.ndarray, devices: np.ndarray) -> np.ndarray:
    """Event id per row (-1 outside events): a run of consecutive flagged rows of one device.

    Rows must be sorted by device, then time.
    """
    flags = np.asarray(flags, dtype=bool)
    starts = flags & ~np.r_[False, flags[:-1] & (devices[1:] == devices[:-1])]
    ids = np.cumsum(starts) - 1
    return np.where(flags, ids, -1)


def event_f1(labels: np.ndarray, predicted: np.ndarray, devices: np.ndarray) -> dict[str, float]:
    """Event-level precision, recall and F1 without point adjustment.

    A true event (a run of labelled rows of one device) is detected when any of its rows is
    flagged; a predicted event (a run of flagged rows) is correct when any of its rows is
    labelled. Rows must be sorted by device, then time.
    """
    devices = np.asarray(devices)
    true_ids = _events(labels, devices)
    predicted_ids = _events(predicted, devices)
    overlap = (true_ids >= 0) & (predicted_ids >= 0)
    n_true = int(true_ids.max() + 1) if (true_ids >= 0).any() else 0
    n_predicted = int(predicted_ids.max() + 1) if (predicted_ids >= 0).any() else 0
    detected = len(np.unique(true_ids[overlap]))
    correct = len(np.unique(predicted_ids[overlap]))
    recall = detected / n_true if n_true else 0.0
    precision = correct / n_predicted if n_predicted else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"event_precision": precision, "event_recall": recall, "event_f1": f1, "true_events": float(n_true)}


def alerts_per_1000_devices_per_day(predicted: np.ndarray, devices: np.ndarray, timestamps: pd.Series) -> float:
    """Alert events (runs of flagged rows) per 1,000 devices per day."""
    order = np.lexsort((np.asarray(timestamps.astype("int64")), np.asarray(devices)))
    ids = _events(np.asarray(predicted)[order], np.asarray(devices)[order])
    alerts = int(ids.max() + 1) if (ids >= 0).any() else 0
    days = max(timestamps.dt.floor("D").nunique(), 1)
    n_devices = max(len(np.unique(devices)), 1)
    return 1000.0 * alerts / n_devices / days


def population_stability_index(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of ``current`` against ``reference`` on the reference's quantile bins."""
    reference, current = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        return 0.0 if np.allclose(current, reference.mean()) else float("inf")
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(reference, edges)[0] / len(reference)
    actual = np.histogram(current, edges)[0] / max(len(current), 1)
    expected, actual = np.clip(expected, 1e-6, None), np.clip(actual, 1e-6, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def alert_events(flags: np.ndarray, devices: np.ndarray, merge_samples: int = 0) -> int:
    """Alert events: runs of flagged rows of one device, a run continuing over gaps of fewer than
    ``merge_samples`` unflagged rows (an operator sees one alert, not a flicker of them).
    Rows must be sorted by device, then time."""
    positions = np.flatnonzero(np.asarray(flags, dtype=bool))
    if not len(positions):
        return 0
    devices = np.asarray(devices)[positions]
    new_device = np.r_[True, devices[1:] != devices[:-1]]
    far = np.r_[True, np.diff(positions) > max(int(merge_samples), 1)]
    return int((new_device | far).sum())


def device_days(devices: pd.Series, timestamps: pd.Series) -> float:
    """Device-days that rows cover: per device, its row count times its median sampling interval."""
    nanos = pd.DatetimeIndex(timestamps).as_unit("ns").asi8  # whatever unit the column has
    frame = pd.DataFrame({"device": np.asarray(devices), "t": nanos})
    frame = frame.sort_values(["device", "t"], kind="stable")
    gaps = frame.groupby("device", sort=False)["t"].diff()
    interval = gaps.groupby(frame["device"], sort=False).median()
    counts = frame.groupby("device", sort=False).size()
    interval = interval.reindex(counts.index).fillna(interval.median() if interval.notna().any() else 0.0)
    return float((counts * interval).sum() / 86_400e9)
