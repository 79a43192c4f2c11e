"""Per-device rolling features: one code path for training and scoring.

Rolling windows are time based, ``(t - window, t]`` per device, like pandas'
``groupby().rolling("1h")``, and are computed with prefix sums over the frame sorted by
(device, time): no per-device Python loop. A partition's features are built from the partition
plus the lookback before it (the longest window, from the previous day's partition), then the
lookback rows are dropped, so features computed day by day equal those computed on the
concatenated days.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pandas as pd

from anomaly_assets.core.kernels import metric_features_into
from anomaly_assets.core.kernels import window_starts as _window_starts

TIME_FEATURES: tuple[str, ...] = ("hour_sin", "hour_cos", "missing_metrics", "gap_minutes")
# Rolling windows in samples: 12 and 72 samples are 1 and 6 hours of 5-minute fleet telemetry.
WINDOW_SAMPLES: tuple[int, ...] = (12, 72)


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """What the features are made of; stored inside every model so scoring uses the same spec."""

    metrics: tuple[str, ...]
    cohort_columns: tuple[str, ...]
    windows: tuple[str, ...] = ("1h", "6h")
    label_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError("FeatureSpec needs at least one metric column")
        longest = max(pd.Timedelta(w) for w in self.windows)
        if longest > pd.Timedelta("1D"):
            raise ValueError(f"rolling windows may not exceed the one-day lookback, got {self.windows}")

    @property
    def lookback(self) -> pd.Timedelta:
        """How far before a day its features reach: the longest rolling window."""
        return max(pd.Timedelta(w) for w in self.windows)

    def device_feature_columns(self) -> list[str]:
        columns: list[str] = []
        for metric in self.metrics:
            columns += [metric, f"{metric}__delta"]
            for window in self.windows:
                columns += [f"{metric}__dev_{window}", f"{metric}__std_{window}"]
        return columns + list(TIME_FEATURES)

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        return cls(**{k: tuple(v) for k, v in data.items()})

    @property
    def hash(self) -> str:
        payload = json.dumps(
            {"metrics": self.metrics, "cohort_columns": self.cohort_columns, "windows": self.windows},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def sampling_interval(telemetry: pd.DataFrame) -> pd.Timedelta:
    """The typical sampling interval: the median over devices of each device's median gap."""
    stamps = telemetry[["device_id", "timestamp"]].sort_values(["device_id", "timestamp"], kind="stable")
    gaps = stamps.groupby("device_id", sort=False)["timestamp"].diff().dropna()
    gaps = gaps[gaps > pd.Timedelta(0)]
    if gaps.empty:
        raise ValueError("cannot infer a sampling interval: no device has two distinct timestamps")
    per_device = gaps.groupby(stamps.loc[gaps.index, "device_id"], sort=False).median()
    return pd.Timedelta(per_device.median())


def windows_for_interval(interval: pd.Timedelta, samples: tuple[int, ...] = WINDOW_SAMPLES) -> tuple[str, ...]:
    """Rolling windows of ``samples`` samples at ``interval`` (capped at the one-day lookback), named
    as pandas reads them: 5 minutes gives ("1h", "6h"), 1 second ("12s", "72s")."""
    names = []
    for count in samples:
        window = min(pd.Timedelta(interval) * count, pd.Timedelta("1D"))
        seconds = window // pd.Timedelta("1s")
        if window != pd.Timedelta(seconds, unit="s") or seconds == 0:
            names.append(f"{window // pd.Timedelta('1ms')}ms")
        elif seconds % 3600 == 0:
            names.append(f"{seconds // 3600}h")
        elif seconds % 60 == 0:
            names.append(f"{seconds // 60}min")
        else:
            names.append(f"{seconds}s")
    return tuple(dict.fromkeys(names))


def build_device_features(
    telemetry: pd.DataFrame, spec: FeatureSpec, keep_from: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Features for every row of ``telemetry`` at or after ``keep_from`` (earlier rows are lookback).

    Output: key columns (device_id, timestamp, cohort columns, labels if present), then
    ``spec.device_feature_columns()`` as float64, sorted by device and time.
    """
    return _device_features(telemetry, spec, keep_from, None)


def _device_features(
    telemetry: pd.DataFrame, spec: FeatureSpec, keep_from: pd.Timestamp | None, positions: np.ndarray | None
) -> pd.DataFrame:
    """``build_device_features(telemetry.iloc[positions], spec, keep_from)`` (all rows when
    ``positions`` is None), reading the selected rows' values straight from ``telemetry``: the
    selection is never copied as a whole frame, and each kept key is taken once."""
    missing = [c for c in ("device_id", "timestamp", *spec.cohort_columns, *spec.metrics) if c not in telemetry]
    if missing:
        raise KeyError(f"telemetry lacks columns needed for features: {missing}")
    keys = [c for c in ("device_id", "timestamp", *spec.cohort_columns, *spec.label_columns) if c in telemetry]
    devices = telemetry["device_id"] if positions is None else telemetry["device_id"].take(positions)
    device_codes = pd.factorize(devices, sort=True)[0].astype(np.int64)
    time_ms = telemetry["timestamp"].to_numpy(dtype="datetime64[ms]").astype(np.int64)
    if positions is not None:
        time_ms = time_ms[positions]
    n_rows = len(time_ms)
    # One sortable key per row: rows of one device are contiguous and time-ordered, and devices
    # lie further apart than the longest window, so no window reaches into the previous device.
    longest_ms = max(pd.Timedelta(w) // pd.Timedelta("1ms") for w in spec.windows)
    span = time_ms.max() - time_ms.min() + 1 + longest_ms if n_rows else 1
    order_key = device_codes * span + (time_ms - (time_ms.min() if n_rows else 0))
    if n_rows and int(device_codes.max()) < (2**62) // int(span):
        # The key orders rows by (device, time) exactly: its stable argsort is the lexsort below.
        order = np.argsort(order_key, kind="stable")
    else:
        order = np.lexsort((time_ms, device_codes))
    in_order = bool((np.diff(order) == 1).all())  # already sorted by device and time: no copy
    if not in_order:
        device_codes, time_ms, order_key = device_codes[order], time_ms[order], order_key[order]
    same_device_as_previous = np.r_[False, device_codes[1:] == device_codes[:-1]]
    window_starts = {w: _window_starts(order_key, pd.Timedelta(w) // pd.Timedelta("1ms")) for w in spec.windows}

    columns = spec.device_feature_columns()
    position = {c: i for i, c in enumerate(columns)}
    keep = np.ones(n_rows, dtype=bool) if keep_from is None else (time_ms >= _ms(keep_from))
    # One float block for every feature, holding only the kept rows: no per-column frames to stack.
    # Column-major, so each feature column is written contiguously, and pandas takes the block
    # as it is (its blocks are column-major too).
    matrix = np.empty((int(keep.sum()), len(columns)), order="F")
    out = _ColumnWriter(matrix, position, keep)
    # Source rows of the sorted selection in ``telemetry`` (None: all of them, in their order).
    source = (None if in_order else order) if positions is None else (positions if in_order else positions[order])
    metric_values = telemetry[list(spec.metrics)].to_numpy(dtype=np.float64)
    if source is not None:  # column by column: each sorted metric is then one contiguous array
        unsorted, metric_values = metric_values, np.empty((n_rows, metric_values.shape[1]), order="F")
        for j in range(unsorted.shape[1]):
            np.take(unsorted[:, j], source, out=metric_values[:, j], mode="clip")
    rows = np.flatnonzero(keep).astype(np.int64) if out.rows is None else out.rows.astype(np.int64)
    starts_block = np.stack([starts.astype(np.int64) for starts in window_starts.values()]) if window_starts else None
    for j, metric in enumerate(spec.metrics):
        values = metric_values[:, j]
        # Prefix sums leave float noise (~1e-12 of the metric's scale) where the true result is
        # 0 (a flat window): snap it to 0, so sparse metrics do not show spurious tiny values.
        scale = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
        if starts_block is not None and metric_features_into(
            values,
            same_device_as_previous,
            starts_block,
            rows,
            scale,
            matrix,
            position[metric],
            position[f"{metric}__delta"],
            np.array([position[f"{metric}__dev_{w}"] for w in window_starts]),
            np.array([position[f"{metric}__std_{w}"] for w in window_starts]),
        ):
            continue  # the compiled loop wrote this metric's columns: the same values as below
        out[metric] = values
        delta = np.full_like(values, np.nan)
        delta[1:] = values[1:] - values[:-1]
        out[f"{metric}__delta"] = np.where(same_device_as_previous, delta, np.nan)
        for window, starts in window_starts.items():
            mean, std = _rolling_mean_std(values, starts, scale)
            deviation = values - mean
            out[f"{metric}__dev_{window}"] = np.where(np.abs(deviation) <= 1e-9 * scale, 0.0, deviation)
            out[f"{metric}__std_{window}"] = std

    hour = (time_ms % 86_400_000) / 3_600_000.0
    out["hour_sin"] = np.sin(2 * np.pi * hour / 24)
    out["hour_cos"] = np.cos(2 * np.pi * hour / 24)
    out["missing_metrics"] = np.isnan(metric_values).sum(axis=1).astype(np.float64)
    gap = np.full(n_rows, np.nan)
    gap[1:] = (time_ms[1:] - time_ms[:-1]) / 60_000.0
    out["gap_minutes"] = np.where(same_device_as_previous, gap, np.nan)

    # Only the kept rows' keys, taken once in (device, time) order; a run of consecutive rows (a
    # day's rows, sorted, after their lookback) is sliced rather than copied.
    if source is None:
        kept = None if keep.all() else np.flatnonzero(keep)
    else:
        kept = source if keep.all() else source[keep]
    if kept is None:
        key_frame = telemetry[keys]
    elif len(kept) and kept[-1] - kept[0] + 1 == len(kept) and bool((np.diff(kept) == 1).all()):
        key_frame = telemetry[keys].iloc[kept[0] : kept[-1] + 1]
    else:
        key_frame = telemetry[keys].take(kept)
    key_frame = key_frame.reset_index(drop=True)
    return pd.concat([key_frame, pd.DataFrame(matrix, columns=columns, copy=False)], axis=1)


def _ms(stamp: pd.Timestamp) -> int:
    stamp = pd.Timestamp(stamp)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.as_unit("ns").value // 1_000_000


class _ColumnWriter:
    """Writes each computed feature column straight into the kept rows of the output block."""

    def __init__(self, matrix: np.ndarray, position: dict[str, int], keep: np.ndarray):
        self.matrix, self.position = matrix, position
        self.rows = None if keep.all() else np.flatnonzero(keep)

    def __setitem__(self, column: str, values: np.ndarray) -> None:
        target = self.matrix[:, self.position[column]]
        if self.rows is None:
            target[:] = values
        else:
            np.take(values, self.rows, out=target, mode="clip")  # rows are in range; "raise" buffers


def _rolling_mean_std(values: np.ndarray, starts: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1) over rows ``starts[i]..i``, ignoring NaN.

    ``scale`` is the metric's magnitude: variances below 1e-12 of its square are float noise.
    """
    finite = np.isfinite(values)
    # Centre before squaring: prefix sums of squares lose precision on large offsets.
    center = np.nanmean(values) if finite.any() else 0.0
    centred = np.where(finite, values - center, 0.0)
    count = _window_sum(finite.astype(np.float64), starts)
    total = _window_sum(centred, starts)
    squares = _window_sum(centred * centred, starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_centred = total / count
        var = (squares - total * mean_centred) / (count - 1)
        # Cancellation leaves tiny non-zero variance on constant windows (a stuck sensor).
        var = np.where(var <= 1e-12 * scale * scale, 0.0, var)
    mean = np.where(count > 0, mean_centred + center, np.nan)
    std = np.where(count > 1, np.sqrt(var), np.nan)
    return mean, std


def _window_sum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sum of ``values[starts[i]..i]`` for every i.

    Prefix sums are taken within blocks at least as long as the longest window, so a window
    spans at most two blocks and its sum never subtracts two large frame-wide prefixes: the
    rounding error stays that of one block, whatever the frame's size.
    """
    n = len(values)
    if n == 0:
        return values.copy()
    rows = np.arange(n)
    block = max(4096, int((rows - starts).max()) + 1)
    blocks = -(-n // block)
    padded = np.zeros(blocks * block)
    padded[:n] = values
    local = np.cumsum(padded.reshape(blocks, block), axis=1)
    totals = local[:, -1]
    local = local.reshape(-1)[:n]
    before_start = local[starts] - values[starts]  # block-local sum up to, excluding, the window start
    same_block = (starts // block) == (rows // block)
    return np.where(same_block, local - before_start, totals[starts // block] - before_start + local)


def build_daily_features(telemetry: pd.DataFrame, spec: FeatureSpec, day_starts: list[pd.Timestamp]) -> pd.DataFrame:
    """Features of each day from that day plus its lookback, and nothing else.

    The lookback is the ``spec.lookback`` (the longest window) before the day, plus, for a device
    with no row in it, its last row of the day before: deltas and sampling gaps reach back to the
    previous row however old, as they do within a day. A day's features are then bit-for-bit the
    same whether it is built alone or within a multi-day backfill, however much earlier data is at
    hand, so re-scoring a partition reproduces its scores exactly.
    """
    stamps = telemetry["timestamp"]
    parts = []
    for day in day_starts:
        in_day = _lookback_and_day(telemetry, stamps, day, spec.lookback)
        if (in_day & (stamps >= day).to_numpy()).any():
            # The day's rows and their lookback, read in place rather than copied out first.
            parts.append(_device_features(telemetry, spec, day, np.flatnonzero(in_day)))
    if not parts:
        return build_device_features(telemetry.iloc[0:0], spec)
    return pd.concat(parts, ignore_index=True)


def _lookback_and_day(telemetry: pd.DataFrame, stamps: pd.Series, day: pd.Timestamp, lookback: pd.Timedelta) -> np.ndarray:
    """Row mask: the day, its lookback, and the last earlier row (within a day) of each device
    that has no row in the lookback. That extra row lies more than the lookback before the day, so
    no kept row's window reaches it; it only gives the day's first row its delta and gap."""
    start = day - lookback
    from_start = (stamps >= start).to_numpy()
    mask = from_start & (stamps < day + pd.Timedelta(days=1)).to_numpy()
    earlier = ~from_start & (stamps >= day - pd.Timedelta(days=1)).to_numpy()
    if earlier.any():
        devices = telemetry["device_id"]
        in_lookback = devices.loc[from_start & (stamps < day).to_numpy()].unique()
        positions = np.flatnonzero(earlier & ~devices.isin(in_lookback).to_numpy())
        if len(positions):
            candidates = pd.DataFrame(
                {"device": devices.to_numpy()[positions], "time": stamps.to_numpy()[positions], "position": positions}
            )
            last = candidates.sort_values(["device", "time"], kind="stable").drop_duplicates("device", keep="last")
            mask[last["position"].to_numpy()] = True
    return mask
