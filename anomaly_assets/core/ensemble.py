"""The ensemble's per-device members and the label-free fusion of member scores.

Each row's *device matrix* holds, per metric, four views of its recent history: the cohort
z-score (the level after the cohort's hour-of-day profile), the delta to the previous sample,
the deviation from the short rolling mean and the short rolling std, plus the number of missing
metrics. Each column is then standardized against the device's own history (its median and
robust spread on the fitting slice), so a device with a steady offset is normal for itself; a
device the fitting slice never saw is standardized against its cohort (or the fleet).

Two members read that matrix:

- ``robust_z``: the largest absolute device z over the columns;
- ``reconstruction``: PCA on the standardized columns (90% of the variance kept) and the
  squared error of reconstructing the row. Value, delta and rolling mean/std are linear
  functions of the current and preceding samples, so this is PCA over a short lag window: a
  univariate series has something to reconstruct.

The third member, the IsolationForest, lives in :mod:`anomaly_assets.core.detector`.
``ScoreFusion`` standardizes each member's score against its distribution on the fitting slice
(median 0, 99th percentile 1) and averages them: no labels are used.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from anomaly_assets.core.cohorts import FLEET

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; the numpy path stays exact
    numba = None

MEMBERS = ("forest", "reconstruction", "robust_z")


def device_source_columns(metrics: Sequence[str], windows: Sequence[str]) -> list[str]:
    """The model-frame columns the device matrix is built from, in order: per metric its level
    (cohort z), its rolling means (``__mean_{window}``, the value less its deviation from the
    window's mean), its deviation from the short window's mean and that window's std; then the
    count of missing metrics."""
    short = windows[0]
    columns = []
    for metric in metrics:
        columns += [f"{metric}__cohort_z", *(f"{metric}__mean_{w}" for w in windows)]
        columns += [f"{metric}__dev_{short}", f"{metric}__std_{short}"]
    return columns + ["missing_metrics"]


def level_columns(columns: Sequence[str]) -> np.ndarray:
    """Positions of the columns the robust z member reads: levels, rolling means, missing count."""
    return np.array(
        [j for j, c in enumerate(columns) if c.endswith("__cohort_z") or is_rolling_mean(c) or c == "missing_metrics"],
        dtype=np.int64,
    )


def is_rolling_mean(column: str) -> bool:
    return column.rpartition("__")[2].startswith("mean_")


def device_column_names(source_columns: Sequence[str]) -> list[str]:
    """Explanation names: ``cpu_util_pct__cohort_z`` -> ``cpu_util_pct__cohort_z__own``."""
    return [f"{c}__own" for c in source_columns]


def _spread(values: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group (``codes``) median and robust spread of each column: 1.4826 x the median absolute
    deviation, or 1.2533 x the mean absolute deviation where the MAD is 0 (a mostly constant
    column); 0 where the column never moves. NaN where a group has no value."""
    frame = pd.DataFrame(values, copy=False)
    median = frame.groupby(codes, sort=True).median().to_numpy()
    deviation = pd.DataFrame(np.abs(values - median[codes]), copy=False).groupby(codes, sort=True)
    mad = 1.4826 * deviation.median().to_numpy()
    mean_deviation = 1.2533 * deviation.mean().to_numpy()
    return median, np.where(mad > 0, mad, mean_deviation)


# |z| at or below this is a deviation of 0 (rounding, e.g. of cohort stats added up in chunks).
ZERO_DEVIATION = 1e-9
# Tail probabilities at which each column's |z| is calibrated (the maximum is added).
CALIBRATION_LEVELS = np.array([0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999])


@dataclasses.dataclass
class TailCalibration:
    """Maps each column's |z| to the normal z of the same tail probability on the fitting slice.

    A count that is 0 on 99.95% of rows (reboots) gives a huge robust z to any 1; calibrated,
    that 1 weighs what a 1-in-2,000 value of a Gaussian column weighs (about 3.5), so no column
    outshouts the others for being discrete or heavy-tailed. Beyond the largest fitted |z| the
    map grows in proportion, so more extreme stays more anomalous."""

    knots: list[np.ndarray | None]  # per column, increasing |z| values (None: left as it is)
    values: list[np.ndarray | None]  # the calibrated z at each knot
    beyond: str = "proportional"  # growth past the largest knot: "proportional" or "log"

    @classmethod
    def fit(cls, z: np.ndarray, columns: np.ndarray | None = None, beyond: str = "proportional") -> TailCalibration:
        """Calibrate ``columns`` (a boolean mask; default all) of the fitting slice's z."""
        from scipy.stats import norm

        knots, values = [], []
        n = max(len(z), 1)
        levels = np.r_[CALIBRATION_LEVELS, 1.0 - 0.5 / n]
        columns = np.ones(z.shape[1], dtype=bool) if columns is None else columns
        for calibrated, column in zip(columns, np.abs(z).T, strict=True):
            if not calibrated:
                knots.append(None)
                values.append(None)
                continue
            quantiles = np.quantile(column, np.r_[CALIBRATION_LEVELS, 1.0]) if len(column) else np.zeros(len(levels))
            # Tied quantiles (a mostly constant column) become one knot at their middle level;
            # quantiles equal but for rounding are tied too.
            tied = np.diff(quantiles) <= ZERO_DEVIATION * np.maximum(np.abs(quantiles[1:]), 1.0)
            first = np.flatnonzero(np.r_[True, ~tied])
            unique = quantiles[first]
            last = np.r_[first[1:] - 1, len(quantiles) - 1]
            middle = norm.ppf((1.0 + (levels[first] + levels[last]) / 2.0) / 2.0)
            knots.append(unique.astype(np.float64))
            values.append(np.maximum.accumulate(np.asarray(middle, dtype=np.float64)))
        return cls(knots=knots, values=values, beyond=beyond)

    def apply(self, z: np.ndarray) -> np.ndarray:
        return self.apply_in_place(np.array(z, dtype=np.float64))

    def apply_in_place(self, z: np.ndarray) -> np.ndarray:
        """``apply`` writing into ``z``: only the calibrated columns are touched."""
        for j, knots in enumerate(self.knots):
            if knots is not None:
                z[:, j] = self.apply_column(j, z[:, j])
        return z

    def apply_column(self, j: int, column: np.ndarray) -> np.ndarray:
        knots, values = self.knots[j], self.values[j]
        if knots is None:
            return column
        magnitude = np.abs(column)
        top = knots[-1]
        mapped = np.interp(magnitude, knots, values)
        if top > 0:
            ratio = np.maximum(magnitude / top, 1.0)
            grown = values[-1] * (1.0 + np.log(ratio)) if self.beyond == "log" else values[-1] * ratio
            mapped = np.where(magnitude > top, grown, mapped)
        # A typical value (the device's median) maps to the tied knot's nonzero level: its sign
        # must not follow the rounding of a deviation that is 0 in exact arithmetic.
        return np.where(magnitude <= ZERO_DEVIATION, mapped, np.copysign(mapped, column))


@dataclasses.dataclass
class DeviceSpreads:
    """Per key (a device, or a cohort), the median and robust spread (``_spread``) of each
    column. A device's rows all lie in one chunk of a training window, so the fleet's table is
    the chunks' tables stacked (``concat``)."""

    keys: pd.Index  # the keys as text, sorted
    medians: np.ndarray  # (keys, columns)
    scales: np.ndarray

    @classmethod
    def of(cls, raw: np.ndarray, keys: pd.Series) -> DeviceSpreads:
        codes, uniques = pd.factorize(keys.to_numpy(), sort=True)
        median, scale = _spread(raw, codes)
        return cls(pd.Index(np.asarray(uniques).astype(str)), median, scale)

    @classmethod
    def concat(cls, parts: Sequence[DeviceSpreads]) -> DeviceSpreads:
        """Tables of disjoint keys (chunks of whole devices) as one."""
        if len(parts) == 1:
            return parts[0]
        keys = pd.Index(np.concatenate([p.keys.to_numpy() for p in parts]))
        if not keys.is_unique:
            raise ValueError("a device's fitting rows were split across chunks: its spread needs all of them at once")
        return cls(keys, np.vstack([p.medians for p in parts]), np.vstack([p.scales for p in parts]))


@dataclasses.dataclass
class DeviceNorms:
    """Per device (then per cohort, then the fleet) median and spread of each device column."""

    devices: pd.Index
    cohorts: pd.Index
    medians: np.ndarray  # (devices + cohorts + 1, columns)
    scales: np.ndarray
    discrete: np.ndarray | None = None  # per column: mostly one value across the fleet
    calibration: TailCalibration | None = None

    @classmethod
    def fit(
        cls,
        raw: np.ndarray,
        devices: pd.Series,
        cohorts: pd.Series,
        floor_share: float = 0.5,
        discrete: np.ndarray | None = None,
        continuous: np.ndarray | None = None,
    ) -> DeviceNorms:
        """``raw``: the device source columns of the fitting rows (NaN allowed)."""
        return cls.from_device_spreads(DeviceSpreads.of(raw, devices), raw, cohorts, floor_share, discrete, continuous)

    @classmethod
    def from_device_spreads(
        cls,
        per_device: DeviceSpreads,
        raw: np.ndarray,
        cohorts: pd.Series,
        floor_share: float = 0.5,
        discrete: np.ndarray | None = None,
        continuous: np.ndarray | None = None,
    ) -> DeviceNorms:
        """``per_device``: every device's median and spread over all its fitting rows (exact,
        gathered a chunk of devices at a time); ``raw`` and ``cohorts``: the device source columns
        and cohort of the fitting rows, or of a sample of them, for the cohort and fleet lines.

        A device's spread is floored at ``floor_share`` of the typical device's, so a metric one
        device never moved is not infinitely tight; a column the whole fleet never moved carries no
        information and is left out (infinite spread: its z is 0), as is a column a device
        (or cohort) never reported."""
        zeros = np.zeros(len(raw), dtype=np.int64)
        fleet_median, fleet_scale = (a[0] for a in _spread(raw, zeros))
        fleet_mad = 1.4826 * pd.DataFrame(np.abs(raw - fleet_median[None, :]), copy=False).median().to_numpy()
        fleet_median = np.nan_to_num(fleet_median, nan=0.0)
        fleet_scale = np.where(np.nan_to_num(fleet_scale) > 0, fleet_scale, np.inf)
        # The typical device's own spread: the fleet's mixes device offsets in.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column no device reported
            typical = np.nanmedian(np.where(per_device.scales > 0, per_device.scales, np.nan), axis=0)
        floor = floor_share * np.where(np.isnan(typical), fleet_scale, typical)
        cohort_spreads = DeviceSpreads.of(raw, cohorts)
        tables_median, tables_scale = [], []
        for spreads in (per_device, cohort_spreads):
            tables_median.append(np.where(np.isnan(spreads.medians), fleet_median[None, :], spreads.medians))
            tables_scale.append(np.maximum(np.nan_to_num(spreads.scales, nan=np.inf), floor[None, :]))
        medians = np.vstack([*tables_median, fleet_median[None, :]])
        scales = np.vstack([*tables_scale, fleet_scale[None, :]])
        # A column whose median absolute deviation is 0 fleet-wide is mostly one value (a count of
        # rare events such as reboots): a device's own spread of it only says whether the device
        # happened to have an event while fitted, so every device is measured on the fleet's scale
        # (the tail calibration then weighs an event by how rare it is fleet-wide).
        # ``discrete`` adds columns (those of a mostly-constant metric); ``continuous`` exempts
        # columns whose rare values are faults by definition (missing metrics).
        none = np.zeros(len(fleet_mad), bool)
        discrete = (~(fleet_mad > 0) | (none if discrete is None else discrete)) & ~(none if continuous is None else continuous)
        scales[:, discrete] = fleet_scale[None, discrete]
        return cls(devices=per_device.keys, cohorts=cohort_spreads.keys, medians=medians, scales=scales, discrete=discrete)

    def table_rows(self, devices: pd.Series, cohort_index: np.ndarray, cohort_keys: pd.Series) -> np.ndarray:
        """Each row's line in the tables: its device, else its cohort, else the fleet."""
        codes, uniques = pd.factorize(devices)
        found = self.devices.get_indexer(pd.Index(uniques).astype(str)) if len(uniques) else np.zeros(0, np.int64)
        per_row = found[codes] if len(codes) else np.zeros(0, np.int64)
        cohort_found = self.cohorts.get_indexer(pd.Index(cohort_keys).astype(str)) if len(cohort_keys) else np.zeros(0, np.int64)
        fleet = len(self.devices) + len(self.cohorts)
        cohort_rows = np.where(cohort_found >= 0, len(self.devices) + cohort_found, fleet)
        fallback = cohort_rows[cohort_index] if len(cohort_rows) else np.full(len(per_row), fleet)
        return np.where(per_row >= 0, per_row, fallback).astype(np.int64)

    def standardize(self, raw: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``(raw - median) / scale`` of each row's line, missing values as 0 (typical), then
        tail-calibrated (once ``calibrate`` has run)."""
        if _standardize_compiled is not None:
            z = _standardize_compiled(np.ascontiguousarray(raw, dtype=np.float64), rows.astype(np.int64), self.medians, self.scales)
        else:
            z = raw - self.medians[rows]
            z /= self.scales[rows]
            np.nan_to_num(z, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return self.calibration.apply_in_place(z) if self.calibration is not None else z

    def calibrate(self, z: np.ndarray, columns: np.ndarray | None = None, fit_rows: np.ndarray | None = None) -> np.ndarray:
        """Fit the tail calibration of ``columns`` (a boolean mask; default all) on the fitting
        slice's z (``fit_rows`` of them, default all) and calibrate ``z`` in place."""
        self.calibration = TailCalibration.fit(z if fit_rows is None else z[fit_rows], columns)
        return self.calibration.apply_in_place(z)


@dataclasses.dataclass
class Reconstruction:
    """PCA on the column-standardized device matrix; the score is the squared residual."""

    mean: np.ndarray
    inverse_std: np.ndarray
    components: np.ndarray  # (columns, kept components), orthonormal columns

    @classmethod
    def fit(cls, z: np.ndarray, variance: float = 0.9, max_rows: int = 200_000, seed: int = 0) -> Reconstruction:
        if len(z) > max_rows:
            z = z[np.random.default_rng(seed).choice(len(z), max_rows, replace=False)]
        mean = z.mean(axis=0)
        std = z.std(axis=0)
        inverse_std = np.where(std > 1e-9, 1.0 / np.where(std > 1e-9, std, 1.0), 0.0)
        y = (z - mean) * inverse_std
        if len(y) < 3 or y.shape[1] < 2:
            return cls(mean=mean, inverse_std=inverse_std, components=np.zeros((y.shape[1], 0)))
        pca = PCA(n_components=variance, svd_solver="full").fit(y)
        return cls(mean=mean, inverse_std=inverse_std, components=np.ascontiguousarray(pca.components_.T))

    def scores(self, z: np.ndarray) -> np.ndarray:
        return self.scores_and_largest_z(z, np.zeros(0, dtype=np.int64))[0]

    def scores_and_largest_z(self, z: np.ndarray, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The squared residual of each row and its largest |z| over the ``level`` columns (the
        robust z member), from one pass over the rows: scoring reads the device matrix once."""
        # |y|^2 - |W'y|^2 is the squared residual of an orthonormal projection: one product.
        z = np.ascontiguousarray(z, dtype=np.float64)
        if _prepare_compiled is not None:
            y, total, largest = _prepare_compiled(z, self.mean, self.inverse_std, np.asarray(level, dtype=np.int64))
        else:
            y = (z - self.mean) * self.inverse_std
            total = np.einsum("ij,ij->i", y, y)
            largest = np.abs(z[:, level]).max(axis=1) if len(level) else np.zeros(len(z))
        if self.components.shape[1]:
            projected = y @ self.components
            total -= np.einsum("ij,ij->i", projected, projected)
        return np.maximum(total, 0.0), largest


def _standardize_rows(raw, rows, medians, scales):
    """``(raw - medians[rows]) / scales[rows]`` with non-finite results as 0: the numpy path's
    operations, row by row."""
    n, q = raw.shape
    z = np.empty((n, q))
    for i in range(n):
        r = rows[i]
        for j in range(q):
            v = (raw[i, j] - medians[r, j]) / scales[r, j]
            z[i, j] = v if np.isfinite(v) else 0.0
    return z


_standardize_compiled = numba.njit(cache=True, nogil=True)(_standardize_rows) if numba is not None else None


def _prepare_rows(z, mean, inverse_std, level):
    """Per row: the standardized row ``y``, its squared norm, and the largest |z| of ``level``."""
    n, q = z.shape
    y = np.empty((n, q))
    total = np.empty(n)
    largest = np.zeros(n)
    for i in range(n):
        acc = 0.0
        for j in range(q):
            v = (z[i, j] - mean[j]) * inverse_std[j]
            y[i, j] = v
            acc += v * v
        total[i] = acc
        top = 0.0
        for j in level:
            a = abs(z[i, j])
            if a > top:
                top = a
        largest[i] = top
    return y, total, largest


_prepare_compiled = numba.njit(cache=True, nogil=True)(_prepare_rows) if numba is not None else None


def robust_z_scores(z: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
    """The largest absolute device z of each row (over ``columns``, default all)."""
    if columns is not None:
        z = z[:, columns]
    if z.shape[1] == 0:
        return np.zeros(len(z))
    return np.abs(z).max(axis=1)


@dataclasses.dataclass
class ScoreFusion:
    """Each member's score mapped to the normal quantile of its tail probability on the fitting
    slice (a calibrated rank: 0 at the median, about 2.6 at the 99th percentile), then averaged.

    Ranks make members on different scales count alike: a squared reconstruction error or a
    robust z of thousands cannot outshout the others just for its scale, and no labels are
    needed. Beyond the largest fitted score a member still grows, with the logarithm of the
    ratio to that maximum, so more extreme stays more anomalous without one member dominating."""

    calibration: TailCalibration

    @classmethod
    def fit(cls, member_scores: np.ndarray) -> ScoreFusion:
        return cls(calibration=TailCalibration.fit(member_scores, beyond="log"))

    def standardized(self, member_scores: np.ndarray) -> np.ndarray:
        return self.calibration.apply(member_scores)

    def fuse(self, member_scores: np.ndarray) -> np.ndarray:
        return self.fuse_columns([member_scores[:, m] for m in range(member_scores.shape[1])])

    def fuse_columns(self, columns: list[np.ndarray]) -> np.ndarray:
        """``fuse`` of the members' score arrays, without stacking them."""
        fused = np.zeros(len(columns[0]))
        for m, column in enumerate(columns):
            fused += self.calibration.apply_column(m, column)
        return fused / len(columns)


__all__ = [
    "FLEET",
    "MEMBERS",
    "DeviceNorms",
    "Reconstruction",
    "ScoreFusion",
    "device_column_names",
    "device_source_columns",
    "level_columns",
    "robust_z_scores",
]
