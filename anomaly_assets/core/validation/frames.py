"""Preparing frames for the rules: lossless type changes of the delivered frame, and the narrow
typed frame the row rules run on (counters' previous values, row fingerprints, key order)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from anomaly_assets.core.contract import DEVICE_ID, SOURCE_ERROR, TIMESTAMP, TelemetryContract
from anomaly_assets.core.timestamps import parse_utc, unreadable

# Derived columns of the frame the row suite runs on (never part of the output):
PREVIOUS_PREFIX = "__previous__"  # + counter: its previous value within the device-day
UNREADABLE_TIMESTAMP = "__unreadable_timestamp"  # the delivered text of a timestamp that cannot be read
FINGERPRINT = "__row_fingerprint"  # the whole delivered row's hash class; NaN unless its key repeats
BLANK = r"^[ \t\r\n\f\v]*$"  # empty or only (ASCII) whitespace; pyarrow runs \s ten times slower


def _canonical(raw: pd.DataFrame, contract: TelemetryContract) -> tuple[pd.DataFrame, pd.Series | None]:
    """Lossless representation changes before the schema suite, and what they could not read.

    Text columns become ``str``, timestamps UTC and numeric metrics float64. A timestamp column
    delivered as text is read (:func:`parse_utc`); the text of each value that cannot be read is
    returned beside the frame (None where nothing was unreadable), for the keys rule to quarantine.
    A metric delivered as text has each cell that reads as a number taken as that number; cells
    that do not stay text (rows the schema suite then quarantines one by one). A column with no
    readable value at all stays text as a whole, so the schema suite rejects the column."""
    frame = raw.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    for column in (DEVICE_ID, *contract.cohort_columns):
        if column in frame and (frame[column].dtype == object or isinstance(frame[column].dtype, pd.StringDtype)):
            if frame[column].dtype != "str":
                frame[column] = frame[column].astype("str")
    unreadable_text = None
    if TIMESTAMP in frame:
        stamps = frame[TIMESTAMP]
        if isinstance(stamps.dtype, pd.DatetimeTZDtype):
            if str(stamps.dt.tz) != "UTC":
                frame[TIMESTAMP] = stamps.dt.tz_convert("UTC")
        elif _is_text(stamps):
            parsed = parse_utc(stamps)
            if parsed.notna().any() or stamps.isna().all():  # else: not a timestamp column at all
                failed = unreadable(stamps, parsed)
                if failed.any():
                    unreadable_text = stamps.astype("object").where(failed.to_numpy(), None)
                frame[TIMESTAMP] = parsed
    for metric in contract.metrics:
        if metric not in frame:
            continue
        values = frame[metric]
        dtype = values.dtype
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            if dtype != np.float64:
                frame[metric] = values.astype(np.float64)
        elif _is_text(values):
            frame[metric] = _numbers_where_readable(values)
    return frame, unreadable_text


def _is_text(values: pd.Series) -> bool:
    return values.dtype == object or pd.api.types.is_string_dtype(values.dtype)


def _numbers_where_readable(values: pd.Series) -> pd.Series:
    """Cells that read as numbers as float64; the others as delivered (see :func:`_canonical`)."""
    cells = values.astype("object")
    numbers = pd.to_numeric(cells, errors="coerce")
    missing = values.isna() | values.astype("str").str.strip().str.lower().isin(["", "nan"])
    readable = (numbers.notna() | missing).to_numpy()
    if readable.all():
        return numbers.astype(np.float64)
    if not numbers.notna().any():
        return values.astype("str").where(values.notna(), None)  # a text column as a whole
    return numbers.astype("object").where(readable, cells)


def _row_frame(frame: pd.DataFrame, contract: TelemetryContract, unreadable_text: pd.Series | None) -> pd.DataFrame:
    """The narrow frame the row suite runs on: keys, every metric as float64 (values of the
    wrong type, already flagged by the schema suite, become NaN), each counter's previous value
    in its device-day, a fingerprint of the whole delivered row, and, where there are any, the
    source's errors and the text of unreadable timestamps."""
    columns: dict[str, Any] = {DEVICE_ID: frame[DEVICE_ID], TIMESTAMP: frame[TIMESTAMP]}
    for metric in contract.metrics:
        values = frame[metric]
        if values.dtype != np.float64:
            values = pd.to_numeric(values.where(_is_number(values)), errors="coerce").astype(np.float64)
        columns[metric] = values
    keys = _KeyOrder(frame)
    for counter in contract.counters:
        columns[PREVIOUS_PREFIX + counter] = keys.previous_in_device_day(columns[counter].to_numpy(dtype=np.float64))
    columns[FINGERPRINT] = _fingerprint(frame, keys.duplicated())
    if unreadable_text is not None:
        columns[UNREADABLE_TIMESTAMP] = unreadable_text
    if SOURCE_ERROR in frame and frame[SOURCE_ERROR].notna().any():
        columns[SOURCE_ERROR] = frame[SOURCE_ERROR]
    return pd.DataFrame(columns, copy=False)  # GX reads a few columns at a time: no need to consolidate


def _fingerprint(frame: pd.DataFrame, candidates: np.ndarray) -> np.ndarray:
    """A fingerprint of the whole delivered row for the ``candidates`` (row positions), NaN for
    every other row, which GX's uniqueness expectation then ignores.

    Exact copies share their (device_id, timestamp), so only rows whose key is duplicated can be
    copies: those are the candidates. Equal rows get equal fingerprints and, up to a 64-bit hash
    collision, different rows different ones (a dense number per distinct hash, exact in float64)."""
    out = np.full(len(frame), np.nan)
    if not len(candidates):
        return out
    if any(dtype == object for dtype in frame.dtypes):
        # pandas hashes a mixed column as text or as values depending on all of its values, so
        # hash the whole frame for the same fingerprints whichever rows are candidates
        hashes = _row_hashes(frame)[candidates]
    else:  # every other dtype is hashed value by value
        hashes = _row_hashes(frame.iloc[candidates])
    out[candidates] = pd.factorize(hashes)[0]
    return out


def _duplicated(rows: pd.DataFrame) -> pd.Series:
    """``rows.duplicated(keep="first")``; rows with unhashable cells (lists, dicts) compare as text,
    as their fingerprints do."""
    try:
        return rows.duplicated(keep="first")
    except TypeError:
        return rows.astype("str").duplicated(keep="first")


def _row_hashes(frame: pd.DataFrame) -> np.ndarray:
    try:
        return pd.util.hash_pandas_object(frame, index=False).to_numpy()
    except TypeError:  # unhashable cells (lists, dicts): hash their text
        return pd.util.hash_pandas_object(frame.astype("str"), index=False).to_numpy()


def _is_number(values: pd.Series) -> pd.Series:
    return values.map(lambda v: isinstance(v, int | float | np.integer | np.floating)).astype(bool)


class _KeyOrder:
    """The rows with both keys present, in (device_id, timestamp) order, stable for equal keys;
    the order rows usually arrive in already, which is then used as it is."""

    def __init__(self, frame: pd.DataFrame) -> None:
        device, stamp = frame[DEVICE_ID], frame[TIMESTAMP]
        self.n = len(frame)
        self.devices = device.factorize()[0]  # -1 for a missing device_id
        missing = (self.devices < 0) | stamp.isna().to_numpy()
        self.keyless = np.flatnonzero(missing)
        self.frame = frame
        if stamp.dt.unit != "ns":
            stamp = stamp.dt.as_unit("ns") if _fits_ns(stamp) else stamp.dt.as_unit("us")
        per_day = {"ns": 86_400 * 10**9, "us": 86_400 * 10**6}[stamp.dt.unit]
        ticks = stamp.to_numpy(dtype="datetime64[" + stamp.dt.unit + "]").view(np.int64)
        if len(self.keyless):
            self.rows = np.flatnonzero(~missing)
            devices, ticks = self.devices[self.rows], ticks[self.rows]
        else:
            self.rows = None  # every row
            devices = self.devices
        if len(devices) and _is_sorted(devices, ticks):
            self.order = None  # already in order
        else:
            self.order = _stable_order(devices, ticks)
            devices, ticks = devices[self.order], ticks[self.order]
        self.sorted_devices, self.sorted_ticks = devices, ticks
        days = ticks // per_day
        self.group_start = np.ones(len(devices), dtype=bool)  # the first row of a device-day
        self.group_start[1:] = (devices[1:] != devices[:-1]) | (days[1:] != days[:-1])

    def _positions(self) -> np.ndarray | None:
        """Frame positions of the sorted rows (None: the frame's own order)."""
        if self.order is None:
            return self.rows
        return self.order if self.rows is None else self.rows[self.order]

    def previous_in_device_day(self, values: np.ndarray) -> np.ndarray:
        """For each row, the last non-null value before it (by timestamp) from the same device
        on the same UTC day; NaN for the day's first value and for rows without keys."""
        positions = self._positions()
        ordered = values if positions is None else values[positions]
        m = len(ordered)
        if not m:
            return np.full(self.n, np.nan)
        index = np.arange(m)
        last = np.where(np.isnan(ordered), -1, index)
        np.maximum.accumulate(last, out=last)  # the latest non-null row so far
        start = np.maximum.accumulate(np.where(self.group_start, index, 0))  # its device-day's first row
        before = np.empty(m, dtype=np.int64)
        before[0] = -1
        before[1:] = last[:-1]
        shifted = np.where(before >= start, ordered[np.maximum(before, 0)], np.nan)
        if positions is None:
            return shifted
        previous = np.full(self.n, np.nan)
        previous[positions] = shifted
        return previous

    def duplicated(self) -> np.ndarray:
        """Positions of rows whose (device_id, timestamp) occurs more than once, as
        ``DataFrame.duplicated(keep=False)`` finds them (missing keys compare equal)."""
        devices, ticks = self.sorted_devices, self.sorted_ticks
        same = (devices[1:] == devices[:-1]) & (ticks[1:] == ticks[:-1])
        found: list[np.ndarray] = []
        if same.any():
            repeated = np.zeros(len(devices), dtype=bool)
            repeated[1:] |= same
            repeated[:-1] |= same
            positions = self._positions()
            found.append(np.flatnonzero(repeated) if positions is None else positions[repeated])
        if len(self.keyless):
            keyless = self.frame.iloc[self.keyless]
            found.append(self.keyless[keyless.duplicated([DEVICE_ID, TIMESTAMP], keep=False).to_numpy()])
        return np.sort(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)


def _stable_order(devices: np.ndarray, ticks: np.ndarray) -> np.ndarray:
    """The stable sort order by (device, tick); one sort of a combined key when it fits 63 bits."""
    if not len(devices):
        return np.empty(0, dtype=np.int64)
    low = int(ticks.min())
    span = int(ticks.max()) - low + 1
    if span * (int(devices.max()) + 1) < 2**63:
        return np.argsort(devices.astype(np.int64) * span + (ticks - low), kind="stable")
    return np.lexsort((ticks, devices))  # lexsort is stable too


def _is_sorted(devices: np.ndarray, ticks: np.ndarray) -> bool:
    step = devices[1:] - devices[:-1]
    return bool((step >= 0).all() and (ticks[1:][step == 0] >= ticks[:-1][step == 0]).all())


def _fits_ns(stamps: pd.Series) -> bool:
    low, high = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")
    stamps = stamps.dropna()
    return bool(((stamps >= low) & (stamps <= high)).all())
