"""Cohort statistics: per (cohort, hour of day, metric) mean and spread, fitted on the training
window and applied at scoring time from the stored values as cohort z-scores."""

from __future__ import annotations

import dataclasses
import warnings
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


def cohort_index(frame: pd.DataFrame, cohort_columns: Sequence[str]) -> tuple[np.ndarray, pd.Series]:
    """Per row, the position of its cohort in ``keys``, and ``keys``: the distinct values of
    ``cohort_keys(frame, cohort_columns)``, so that ``keys.take(index)`` equals ``cohort_keys``.

    The cohort columns are factorized and their codes combined, so strings are built once per
    distinct cohort rather than once per row.
    """
    n = len(frame)
    if not cohort_columns or n == 0:
        return np.zeros(n, dtype=np.int64), cohort_keys(frame.iloc[:1] if n else frame, cohort_columns).reset_index(drop=True)
    if not all(_factorizes_like_str(frame[c].dtype) for c in cohort_columns):
        index, keys = pd.factorize(cohort_keys(frame, cohort_columns), use_na_sentinel=False)
        return index.astype(np.int64, copy=False), pd.Series(keys, dtype="str")
    combined = None
    for column in cohort_columns:
        codes, uniques = pd.factorize(frame[column], use_na_sentinel=False)
        codes = codes.astype(np.int64, copy=False)
        if combined is None:
            combined, size = codes, len(uniques)
        elif size * max(len(uniques), 1) < 2**62:
            combined, size = combined * len(uniques) + codes, size * len(uniques)
        else:
            combined = pd.factorize(combined, use_na_sentinel=False)[0].astype(np.int64) * len(uniques) + codes
            size = (int(combined.max()) + 1) if n else 1
    index, _ = pd.factorize(combined, use_na_sentinel=False)
    index = index.astype(np.int64, copy=False)
    representative = np.empty(int(index.max()) + 1, dtype=np.int64)
    representative[index] = np.arange(n)  # any row of each cohort: its cohort columns are equal
    keys = cohort_keys(frame.iloc[representative], cohort_columns).reset_index(drop=True)
    return index, keys


def _factorizes_like_str(dtype) -> bool:
    """Equal under factorize means equal after ``astype("str")`` (not so for floats: 0.0 and -0.0)."""
    return isinstance(dtype, pd.StringDtype) or dtype == object or isinstance(dtype, pd.CategoricalDtype) and (
        dtype.categories.dtype == object or isinstance(dtype.categories.dtype, pd.StringDtype)
    )


# A daily profile needs a few days of history to be learnt: with less, every hour shares one value.
DAILY_PROFILE_MIN_SPAN = pd.Timedelta(days=2)


def fit_cohort_stats(
    telemetry: pd.DataFrame, metrics: Sequence[str], cohort_columns: Sequence[str]
) -> pd.DataFrame:
    """Long frame with COHORT_STATS_COLUMNS, including the fleet-wide rows under ``FLEET``.

    Per hour of day when the rows span at least ``DAILY_PROFILE_MIN_SPAN``; otherwise (a run of
    minutes at 1 Hz) the hours carry the same all-day values, since an hour seen once (or not at
    all) says nothing about that hour on other days."""
    accumulator = CohortStatsAccumulator(metrics, cohort_columns)
    accumulator.add(telemetry)
    return accumulator.result()


class CohortStatsAccumulator:
    """``fit_cohort_stats`` over rows fed a chunk at a time, in memory of one chunk plus the
    (cohort, hour) table. Exact: per cell the count, mean and sum of squared deviations, merged
    across chunks with Chan's pairwise formula (the same values as one pass, to rounding)."""

    def __init__(self, metrics: Sequence[str], cohort_columns: Sequence[str]):
        self.metrics = list(metrics)
        self.cohort_columns = list(cohort_columns)
        self._moments: _Moments | None = None  # per (cohort, hour) cell and metric
        self._first: pd.Timestamp | None = None
        self._last: pd.Timestamp | None = None

    def add(self, rows: pd.DataFrame) -> None:
        if rows.empty:
            return
        first, last = rows["timestamp"].min(), rows["timestamp"].max()
        self._first = first if self._first is None else min(self._first, first)
        self._last = last if self._last is None else max(self._last, last)
        cohort, keys = cohort_index(rows, self.cohort_columns)  # names built per cohort, not per row
        frame = pd.DataFrame(
            {
                "cohort": cohort,
                "hour": row_hours(rows).astype(np.int64),
                **{m: rows[m].to_numpy(dtype=np.float64, na_value=np.nan) for m in self.metrics},
            }
        )
        grouped = frame.groupby(["cohort", "hour"], sort=True, observed=True)[self.metrics]
        count = grouped.count()
        cells = count.index
        named = pd.MultiIndex.from_arrays(
            [keys.to_numpy()[cells.get_level_values(0)], cells.get_level_values(1)], names=["cohort", "hour"]
        )
        chunk = _Moments(*(part.set_axis(named) for part in (count, grouped.mean(), grouped.var(ddof=0) * count)))
        self._moments = chunk if self._moments is None else self._moments.merge(chunk)

    def result(self) -> pd.DataFrame:
        if self._moments is None:
            raise ValueError("cannot fit cohort stats on an empty training window")
        daily = self._last - self._first >= DAILY_PROFILE_MIN_SPAN
        cells = self._moments if daily else self._moments.collapse_hours()
        fleet = cells.collapse_cohorts()
        # Without cohort columns every row is in the fleet cohort: its stats appear once.
        stats = pd.concat([*([cells.long()] if self.cohort_columns else []), fleet.long()], ignore_index=True)
        if not daily:
            stats = pd.concat([stats.assign(hour=hour) for hour in range(24)], ignore_index=True)
        return stats[list(COHORT_STATS_COLUMNS)]


@dataclasses.dataclass
class _Moments:
    """Per cell (rows: a (cohort, hour) index) and metric (columns): count, mean and the sum of
    squared deviations from the mean."""

    count: pd.DataFrame
    mean: pd.DataFrame
    m2: pd.DataFrame

    def merge(self, other: _Moments) -> _Moments:
        index = self.count.index.union(other.count.index)
        n_a, n_b = (m.count.reindex(index).fillna(0).to_numpy(np.float64) for m in (self, other))
        mean_a, mean_b = (m.mean.reindex(index).fillna(0).to_numpy() for m in (self, other))
        m2_a, m2_b = (m.m2.reindex(index).fillna(0).to_numpy() for m in (self, other))
        n = n_a + n_b
        with np.errstate(invalid="ignore", divide="ignore"):
            weight = np.where(n > 0, n_b / n, 0.0)
        delta = mean_b - mean_a
        columns = self.count.columns
        return _Moments(
            pd.DataFrame(n.astype(np.int64), index=index, columns=columns),
            pd.DataFrame(mean_a + delta * weight, index=index, columns=columns),
            pd.DataFrame(m2_a + m2_b + delta**2 * n_a * weight, index=index, columns=columns),
        )

    def _collapse(self, level: str, value) -> _Moments:
        """Every cell sharing the other level merged into one, with ``level`` set to ``value``."""
        keep = "cohort" if level == "hour" else "hour"
        result = None
        for _, group in self.count.groupby(level=level, sort=True):
            part = _Moments(*(frame.loc[group.index].droplevel(level) for frame in (self.count, self.mean, self.m2)))
            result = part if result is None else result.merge(part)
        index = pd.MultiIndex.from_arrays(
            [result.count.index, [value] * len(result.count)] if keep == "cohort" else [[value] * len(result.count), result.count.index],
            names=["cohort", "hour"],
        )
        return _Moments(*(frame.set_axis(index) for frame in (result.count, result.mean, result.m2)))

    def collapse_hours(self) -> _Moments:
        return self._collapse("hour", 0)

    def collapse_cohorts(self) -> _Moments:
        return self._collapse("cohort", FLEET)

    def long(self) -> pd.DataFrame:
        """One row per (cohort, hour, metric), cells sorted: mean, std (n - 1) and count."""
        order = self.count.sort_index().index
        count = self.count.loc[order]
        mean = self.mean.loc[order].where(count > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(self.m2.loc[order] / (count - 1)).where(count > 1)
        stats = pd.concat({"mean": mean, "std": std, "count": count.astype(np.int64)}, axis=1)
        stats.columns.names = ["stat", "metric"]
        return stats.stack("metric", future_stack=True).reset_index()


def cohort_z_tables(stats: pd.DataFrame, metrics: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Cohort names (the fleet last) and the (cohort, hour, metric) mean and floored std."""
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
    # An hour the fleet never showed: the fleet's value over the hours it did.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.where(np.isnan(mean), np.nanmean(mean[fleet], axis=0)[None, None, :], mean)
        std = np.where(np.isnan(std), np.nanmean(std[fleet], axis=0)[None, None, :], std)
    # A cohort-hour that saw no event of a rare count (reboots) has std 0: floored at 5% of the
    # fleet's, one reboot there would weigh twenty times one elsewhere. Such a degenerate cell
    # takes half the fleet's std at that hour.
    floor = np.maximum(0.05 * np.nanmean(std[fleet], axis=0), 1e-6)[None, None, :]
    std = np.where(std <= floor, np.maximum(floor, 0.5 * std[fleet][None]), std)
    return cohorts, mean, std


def row_cohorts(
    features: pd.DataFrame, cohorts: list[str], cohort_columns: Sequence[str], index: tuple | None = None
) -> np.ndarray:
    """Each row's position in ``cohorts`` (the last one, the fleet, for unseen cohorts).
    ``index`` is ``cohort_index(features, cohort_columns)`` when the caller already has it."""
    row_index, keys = cohort_index(features, cohort_columns) if index is None else index
    known = pd.Categorical(keys, categories=cohorts).codes.astype(np.int64)
    known = np.where(known < 0, len(cohorts) - 1, known)
    return known[row_index]


def row_hours(features: pd.DataFrame) -> np.ndarray:
    """The hour of day of each row's timestamp (in the timestamp's own time zone)."""
    timestamp = features["timestamp"]
    if isinstance(timestamp.dtype, pd.DatetimeTZDtype) and str(timestamp.dtype.tz) == "UTC":
        nanos = timestamp.array.as_unit("ns").asi8  # UTC wall clock: integer arithmetic, no NaT here
        if not timestamp.isna().any():
            return (nanos // 3_600_000_000_000) % 24
    return timestamp.dt.hour.to_numpy()


def cohort_z_scores(
    features: pd.DataFrame, stats: pd.DataFrame, metrics: Sequence[str], cohort_columns: Sequence[str]
) -> pd.DataFrame:
    """``{metric}__cohort_z`` for every row: distance from its cohort's mean at that hour."""
    cohorts, mean, std = cohort_z_tables(stats, metrics)
    row_cohort = row_cohorts(features, cohorts, cohort_columns)
    row_hour = row_hours(features)
    values = features[list(metrics)].to_numpy(dtype=np.float64)
    z = (values - mean[row_cohort, row_hour]) / std[row_cohort, row_hour]
    return pd.DataFrame(z, columns=[f"{m}__cohort_z" for m in metrics], index=features.index)
