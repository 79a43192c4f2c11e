"""Cohort statistics: per (cohort, hour of day, metric) mean and spread, fitted on the training
window and applied at scoring time from the stored values as cohort z-scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

FLEET = "__fleet__"  # the fallback cohort for devices whose cohort the training window never saw
COHORT_STATS_COLUMNS = ("cohort", "hour", "metric", "mean", "std", "count")


def cohort_keys(frame: pd.DataFrame, cohort_columns: Sequence[str]) -> pd.Series:
    """One string per row naming its cohort, e.g. ``Zebra|TC52|13``."""
    if not cohort_columns:
        return pd.Series(FLEET, index=frame.index, dtype="str")
    key = frame[cohort_columns[0]].astype("str")
    for column in cohort_columns[1:]:
        key = key + "|" + frame[column].astype("str")
    return key


def _long_stats(frame: pd.DataFrame, metrics: Sequence[str], by: list[str]) -> pd.DataFrame:
    grouped = frame.groupby(by, sort=True, observed=True)[list(metrics)]
    stats = pd.concat({"mean": grouped.mean(), "std": grouped.std(), "count": grouped.count()}, axis=1)
    stats.columns.names = ["stat", "metric"]
    return stats.stack("metric", future_stack=True).reset_index()


def fit_cohort_stats(
    telemetry: pd.DataFrame, metrics: Sequence[str], cohort_columns: Sequence[str]
) -> pd.DataFrame:
    """Long frame with COHORT_STATS_COLUMNS, including the fleet-wide rows under ``FLEET``."""
    if telemetry.empty:
        raise ValueError("cannot fit cohort stats on an empty training window")
    frame = pd.DataFrame(
        {
            "cohort": cohort_keys(telemetry, cohort_columns),
            "hour": telemetry["timestamp"].dt.hour.astype(np.int64),
            **{m: telemetry[m] for m in metrics},
        }
    )
    fleet = _long_stats(frame.assign(cohort=FLEET), metrics, ["cohort", "hour"])
    # Without cohort columns every row is in the fleet cohort: its stats appear once.
    per_cohort = [_long_stats(frame, metrics, ["cohort", "hour"])] if cohort_columns else []
    stats = pd.concat([*per_cohort, fleet], ignore_index=True)
    return stats[list(COHORT_STATS_COLUMNS)]


def cohort_z_scores(
    features: pd.DataFrame, stats: pd.DataFrame, metrics: Sequence[str], cohort_columns: Sequence[str]
) -> pd.DataFrame:
    """``{metric}__cohort_z`` for every row: distance from its cohort's mean at that hour."""
    cohorts = sorted(set(stats["cohort"]) - {FLEET}) + [FLEET]
    mean = np.full((len(cohorts), 24, len(metrics)), np.nan)
    std = np.full_like(mean, np.nan)
    c_idx = pd.Categorical(stats["cohort"], categories=cohorts).codes
    m_idx = pd.Categorical(stats["metric"], categories=list(metrics)).codes
    known = m_idx >= 0
    mean[c_idx[known], stats["hour"].to_numpy()[known], m_idx[known]] = stats["mean"].to_numpy()[known]
    std[c_idx[known], stats["hour"].to_numpy()[known], m_idx[known]] = stats["std"].to_numpy()[known]
    fleet = len(cohorts) - 1
    # Sparse cohort-hours fall back to the fleet's value; a floor keeps flat cohorts finite.
    mean = np.where(np.isnan(mean), mean[fleet][None], mean)
    std = np.where(np.isnan(std), std[fleet][None], std)
    std = np.maximum(std, np.maximum(0.05 * np.nanmean(std[fleet], axis=0), 1e-6)[None, None, :])

    row_cohort = pd.Categorical(cohort_keys(features, cohort_columns), categories=cohorts).codes
    row_cohort = np.where(row_cohort < 0, fleet, row_cohort)
    row_hour = features["timestamp"].dt.hour.to_numpy()
    values = features[list(metrics)].to_numpy(dtype=np.float64)
    z = (values - mean[row_cohort, row_hour]) / std[row_cohort, row_hour]
    return pd.DataFrame(z, columns=[f"{m}__cohort_z" for m in metrics], index=features.index)
