"""Reading delivered timestamps: the one parser sources, partition assignment and validation share.

Sources store timestamps as delivered (a text column stays text); whoever needs the instant
reads it with :func:`parse_utc`, so a value is read the same way everywhere.
"""

from __future__ import annotations

import pandas as pd

# Timestamps before this are broken clocks (a device reset to 1970), never a partition's rows.
EARLIEST_PLAUSIBLE = pd.Timestamp("2000-01-01", tz="UTC")
# Rows stamped further ahead than this (from the run's own clock) belong to no partition yet.
MAX_DAYS_AHEAD = 366


def parse_utc(values: pd.Series) -> pd.Series:
    """Tz-aware UTC timestamps where the values can be read, ``NaT`` elsewhere (same index).

    A datetime column is converted to UTC (naive values are taken to be UTC); text is read as
    ISO 8601, then in other common forms (``format="mixed"``); blank text, numbers (an epoch
    number does not say its unit) and anything else are unreadable. The unit is microseconds or
    finer, so year 9999 is readable (and then fails the window rule, not the day)."""
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(dtype):
        return values.dt.tz_localize("UTC")
    text = values.where(values.map(lambda v: isinstance(v, str)), None) if dtype == object else values
    if not (dtype == object or pd.api.types.is_string_dtype(dtype)):
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")
    text = text.astype("object").where(text.notna(), None)
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    if parsed.dt.unit not in ("us", "ns"):
        parsed = parsed.dt.as_unit("us")
    retry = parsed.isna() & text.notna() & (text.astype("str").str.strip() != "")
    if retry.any():
        again = pd.to_datetime(text[retry], utc=True, errors="coerce", format="mixed")
        parsed.loc[retry] = again.dt.as_unit(parsed.dt.unit)
    return parsed


def unreadable(values: pd.Series, parsed: pd.Series) -> pd.Series:
    """Where a value was delivered (not null, not blank) but could not be read as a timestamp."""
    present = values.notna()
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        present &= values.astype("str").str.strip() != ""
    return present & parsed.isna()


def placeable(parsed: pd.Series, now: pd.Timestamp | None = None) -> pd.Series:
    """Whether a row's timestamp can ever belong to a partition: readable, not before
    ``EARLIEST_PLAUSIBLE``, not more than ``MAX_DAYS_AHEAD`` days after ``now``."""
    bounds = plausible_bounds(now)
    return parsed.notna() & (parsed >= bounds["earliest"]) & (parsed < bounds["latest"])


def plausible_bounds(now: pd.Timestamp | None = None) -> dict[str, pd.Timestamp]:
    """``earliest`` and ``latest`` of :func:`placeable`, for a source that selects in SQL."""
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    return {"earliest": EARLIEST_PLAUSIBLE, "latest": now.normalize() + pd.Timedelta(days=MAX_DAYS_AHEAD)}
