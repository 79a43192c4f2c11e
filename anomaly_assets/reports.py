"""Pictures for people: score distributions, ROC and precision-recall curves, feature
contributions, anomalies over time per cohort. Logged to MLflow and saved next to the results."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display: render to files

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def score_distribution(scores: np.ndarray, threshold: float, labels: np.ndarray | None = None) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(7, 4))
    bins = np.linspace(float(np.min(scores)), float(np.max(scores)), 60)
    if labels is not None and labels.any():
        axis.hist(scores[~labels], bins=bins, alpha=0.7, label="normal rows", density=True)
        axis.hist(scores[labels], bins=bins, alpha=0.7, label="labelled anomalies", density=True)
    else:
        axis.hist(scores, bins=bins, alpha=0.8, label="all rows", density=True)
    axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    axis.set(xlabel="anomaly score", ylabel="density", title="Score distribution (validation slice)")
    axis.legend()
    figure.tight_layout()
    return figure


def roc_and_pr_curves(scores: np.ndarray, labels: np.ndarray) -> plt.Figure:
    figure, (roc_axis, pr_axis) = plt.subplots(1, 2, figsize=(10, 4))
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    roc_axis.plot(fpr, tpr)
    roc_axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
    roc_axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    pr_axis.plot(recall, precision)
    pr_axis.axhline(labels.mean(), color="grey", linestyle=":", label="base rate")
    pr_axis.set(xlabel="recall", ylabel="precision", title="Precision-recall curve")
    pr_axis.legend()
    figure.tight_layout()
    return figure


def feature_contributions(scored: pd.DataFrame, top: int = 15) -> pd.DataFrame:
    """How often each feature explains a flagged row (first, second or third contributor)."""
    flagged = scored.loc[scored["is_anomaly"]]
    if flagged.empty:
        return pd.DataFrame(columns=["feature", "share_of_flagged_rows"])
    counts = pd.concat([flagged[f"top_feature_{i}"] for i in (1, 2, 3)]).value_counts()
    share = (counts / len(flagged)).head(top)
    return share.rename("share_of_flagged_rows").rename_axis("feature").reset_index()


def feature_contribution_chart(contributions: pd.DataFrame) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(7, 0.3 * max(len(contributions), 4) + 1))
    axis.barh(contributions["feature"][::-1], contributions["share_of_flagged_rows"][::-1])
    axis.set(xlabel="share of flagged rows it explains (top 3)", title="Feature contributions")
    figure.tight_layout()
    return figure


def flagged_per_hour(scored: pd.DataFrame, freq: str = "1h") -> pd.DataFrame:
    """Rows and flagged rows per (hour, cohort): summable over chunks of devices."""
    frame = scored.assign(bucket=scored["timestamp"].dt.floor(freq), flagged=scored["is_anomaly"].astype("int64"))
    return frame.groupby(["bucket", "cohort"]).agg(rows=("flagged", "size"), flagged=("flagged", "sum")).reset_index()


def anomalies_over_time(counts: pd.DataFrame) -> plt.Figure:
    """Flagged share per cohort per hour (from ``flagged_per_hour``): a cohort-wide regression
    stands out as one line."""
    counts = counts.groupby(["bucket", "cohort"])[["rows", "flagged"]].sum()
    share = (counts["flagged"] / counts["rows"]).unstack("cohort").fillna(0.0)
    figure, axis = plt.subplots(figsize=(10, 4))
    for cohort in share.columns:
        axis.plot(share.index, share[cohort], label=cohort, linewidth=1)
    axis.set(xlabel="time (UTC)", ylabel="share of rows flagged", title="Anomalies over time per cohort")
    axis.legend(fontsize=6, ncol=2, loc="upper left")
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def close(figures: dict[str, plt.Figure]) -> None:
    for figure in figures.values():
        plt.close(figure)
