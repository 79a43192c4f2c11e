"""The detector's threshold, on scores of rows sorted by device and time: the lowest that keeps
alert events (flagged rows of a device, merged when fewer than ``merge_samples`` samples apart)
within a budget per device-day, or with labels of both classes the best-F1 threshold when that is
within the budget."""

from __future__ import annotations

import numpy as np

from anomaly_assets.core.metrics import alert_events


def choose_threshold(
    scores: np.ndarray,
    labels: np.ndarray | None,
    devices: np.ndarray,
    days: float,
    alert_budget: float,
    merge_samples: int = 12,
) -> float:
    """The threshold on rows sorted by device and time.

    Without labels of both classes: the lowest threshold whose alert events stay within
    ``alert_budget * days`` (``days``: device-days the rows cover); with them, the best-F1
    threshold, raised to that one when it would exceed the budget."""
    scores = np.asarray(scores, dtype=np.float64)
    budget_threshold = _budget_threshold(scores, np.asarray(devices), alert_budget * days, merge_samples)
    if labels is not None and 0 < labels.sum() < len(labels):
        return max(_best_f1_threshold(scores, labels), budget_threshold)
    return budget_threshold


def _budget_threshold(scores: np.ndarray, devices: np.ndarray, allowed: float, merge_samples: int) -> float:
    """The lowest cut between distinct scores with at most ``allowed`` events (events fall as the
    cut rises, nearly monotonically: a bisection over the distinct scores)."""
    if not len(scores):
        return float("inf")
    distinct = np.unique(scores)
    top = float(distinct[-1])
    low, high = 0, len(distinct) - 1  # invariant: cutting at distinct[high] is within budget
    while low < high:
        middle = (low + high) // 2
        if alert_events(scores > distinct[middle], devices, merge_samples) <= allowed:
            high = middle
        else:
            low = middle + 1
    if high == len(distinct) - 1:
        return top  # not even the top score may alert: nothing in the slice is flagged
    return float((distinct[high] + distinct[high + 1]) / 2)


def _best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    true_positives = np.cumsum(sorted_labels)
    flagged = np.arange(1, len(scores) + 1)
    f1 = 2 * true_positives / (flagged + labels.sum())
    # Only cut between distinct scores, so the threshold reproduces the counted flags.
    distinct = np.r_[sorted_scores[1:] < sorted_scores[:-1], True]
    best = int(np.argmax(np.where(distinct, f1, -1.0)))
    upper = sorted_scores[best]
    lower = sorted_scores[best + 1] if best + 1 < len(scores) else upper - 1e-6
    return float((upper + lower) / 2)
