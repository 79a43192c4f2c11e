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
