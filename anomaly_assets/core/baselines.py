"""Per-cohort percentile baselines, fitted on the training window and applied at scoring time
as a signed exceedance: how far a value lies beyond its cohort's [p01, p99] band."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from anomaly_assets.core.cohorts import FLEET, cohort_keys, row_cohorts

QUANTILES = {"p01": 0.01, "p50": 0.5, "p99": 0.99}
BASELINE_COLUMNS = ("cohort", "metric", *QUANTILES, "count")


def fit_baselines(telemetry: pd.DataFrame, metrics: Sequence[str], cohort_columns: Sequence[str]) -> pd.DataFrame:
    if telemetry.empty:
        raise ValueError("cannot fit baselines on an empty training window")
    frame = telemetry[list(metrics)].assign(cohort=cohort_keys(telemetry, cohort_columns))
    parts = []
    # Without cohort columns every row is in the fleet cohort: its baselines appear once.
    for cohort_frame in (frame, frame.assign(cohort=FLEET)) if cohort_columns else (frame,):
        grouped = cohort_frame.groupby("cohort", sort=True)[list(metrics)]
        q = grouped.quantile(list(QUANTILES.values()))
        q.index = q.index.set_levels(list(QUANTILES), level=1)
        long = q.stack(future_stack=True).unstack(1).reset_index()
        long = long.rename(columns={"level_1": "metric"})
        counts = grouped.count().stack(future_stack=True).rename("count").reset_index()
        counts = counts.rename(columns={"level_1": "metric"})
        parts.append(long.merge(counts, on=["cohort", "metric"]))
    return pd.concat(parts, ignore_index=True)[list(BASELINE_COLUMNS)]


def baseline_tables(
    baselines: pd.DataFrame, metrics: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Cohort names (the fleet last) and the (cohort, metric) band: low, high and width."""
    cohorts = sorted(set(baselines["cohort"]) - {FLEET}) + [FLEET]
    table = baselines.set_index(["cohort", "metric"])
    index = pd.MultiIndex.from_product([cohorts, list(metrics)])
    low = table["p01"].reindex(index).to_numpy().reshape(len(cohorts), len(metrics))
    high = table["p99"].reindex(index).to_numpy().reshape(len(cohorts), len(metrics))
    fleet = len(cohorts) - 1
    low = np.where(np.isnan(low), low[fleet][None], low)
    high = np.where(np.isnan(high), high[fleet][None], high)
    width = np.maximum(high - low, np.maximum(1e-3 * np.abs(high), 1e-6))
    return cohorts, low, high, width


def exceedance(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: np.ndarray) -> np.ndarray:
    """0 inside [lo, hi], else the signed distance beyond it in units of ``w`` (elementwise)."""
    return np.where(values > hi, (values - hi) / w, np.where(values < lo, (values - lo) / w, 0.0))


def baseline_exceedance(
    features: pd.DataFrame, baselines: pd.DataFrame, metrics: Sequence[str], cohort_columns: Sequence[str]
) -> pd.DataFrame:
    """``{metric}__baseline_exceed``: 0 inside [p01, p99], else the distance in band widths."""
    cohorts, low, high, width = baseline_tables(baselines, metrics)
    row_cohort = row_cohorts(features, cohorts, cohort_columns)
    values = features[list(metrics)].to_numpy(dtype=np.float64)
    lo, hi, w = low[row_cohort], high[row_cohort], width[row_cohort]
    exceed = exceedance(values, lo, hi, w)
    return pd.DataFrame(exceed, columns=[f"{m}__baseline_exceed" for m in metrics], index=features.index)
