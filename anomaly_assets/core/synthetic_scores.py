"""Scored rows of the synthetic fleet without training or scoring a model, so that what follows
scoring (incidents, alerts) can be exercised at fleet size in tests and benchmarks.

The rows have the columns of ``scored_anomalies`` and the devices and cohorts of
:mod:`anomaly_assets.core.generator`. Each day, ``device_fault_rate`` of the devices get one
burst of flagged samples (one to eight hours, starting anywhere in the day, so some run past
midnight into the next), as many others a false alarm of one to three samples, ``packet_loss`` of
the samples are missing, and half a percent of the devices send nothing all day. The bad firmware
release flags samples across most of one cohort from 18:00 of ``cohort_regression_date`` to
04:00 the next day (a cohort incident open at midnight). A day is built a block of devices at a
time, and the same seed, day and block always give the same rows, so a fleet of any size is
written in bounded memory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from anomaly_assets.core import generator

BLOCK_DEVICES = 1_000
MODEL_NAME = "fleet_anomaly_detector"
MODEL_VERSION = "1"
THRESHOLD = 0.5  # score above which a row is flagged; severity is 50 there
BURST_FLAG_SHARE = 0.8  # a fault burst's samples that are flagged
SILENT_SHARE = 0.005  # devices that send nothing on a given day
REGRESSION_HOURS = (18, 4)  # from 18:00 of the regression day to 04:00 the next
REGRESSION_DEVICE_SHARE = 0.6  # the regressed cohort's devices that the release affects
REGRESSION_FLAG_SHARE = 0.35  # an affected device's samples flagged during the regression
FEATURE_NAMES = tuple(f"{metric}__{kind}" for kind in ("dev_1h", "cohort_z") for metric in generator.METRICS)
_EPOCH = dt.date(2020, 1, 1)
_STREAM_EVENTS, _STREAM_BLOCK, _STREAM_REGRESSION = 101, 102, 103


@dataclasses.dataclass(frozen=True)
class _DayEvents:
    burst_device: np.ndarray
    burst_start: np.ndarray
    burst_stop: np.ndarray  # may exceed the samples of a day: the burst goes on the next day
    alarm_device: np.ndarray
    alarm_start: np.ndarray
    alarm_stop: np.ndarray
    silent: np.ndarray  # (devices,) bool


def _day_index(day: dt.date) -> int:
    return (day - _EPOCH).days


def _day_events(config: generator.FleetConfig, day: dt.date) -> _DayEvents:
    rng = np.random.default_rng([config.seed, _STREAM_EVENTS, _day_index(day)])
    n, samples = config.n_devices, config.samples_per_day
    per_hour = max(1, 60 // config.interval_minutes)
    count = int(round(config.device_fault_rate * n))
    burst_device = rng.choice(n, size=count, replace=False)
    burst_start = rng.integers(0, samples, count)
    burst_stop = burst_start + rng.integers(per_hour, 8 * per_hour + 1, count)
    alarm_device = rng.choice(n, size=count, replace=False)
    alarm_start = rng.integers(0, samples, count)
    alarm_stop = np.minimum(samples, alarm_start + rng.integers(1, 4, count))
    silent = rng.random(n) < SILENT_SHARE
    return _DayEvents(burst_device, burst_start, burst_stop, alarm_device, alarm_start, alarm_stop, silent)


def _regression_window(config: generator.FleetConfig, day: dt.date) -> tuple[int, int] | None:
    """The samples of ``day`` the firmware release flags, as [start, stop)."""
    released = config.cohort_regression_date
    if released is None:
        return None
    per_hour = 60 / config.interval_minutes
    if day == released:
        return int(REGRESSION_HOURS[0] * per_hour), config.samples_per_day
    if day == released + dt.timedelta(days=1):
        return 0, int(REGRESSION_HOURS[1] * per_hour)
    return None


def synthetic_scored_day(config: generator.FleetConfig, day: dt.date) -> Iterator[pd.DataFrame]:
    """The scored rows of one day, ``BLOCK_DEVICES`` devices at a time, by device and time."""
    if day < config.start_date:
        raise ValueError(f"the synthetic fleet starts on {config.start_date}; cannot score {day}")
    roster = generator.device_roster(config)
    ids = roster["device_id"].to_numpy()
    cohorts = roster[list(generator.COHORT_COLUMNS)].astype(str).agg("|".join, axis=1).to_numpy()
    samples = config.samples_per_day
    events = _day_events(config, day)
    previous = day - dt.timedelta(days=1)
    carried = _day_events(config, previous) if previous >= config.start_date else None
    window = _regression_window(config, day)
    affected = np.zeros(config.n_devices, dtype=bool)
    if window is not None:
        regressed = "|".join(generator.regressed_cohort(config))
        share = np.random.default_rng([config.seed, _STREAM_REGRESSION]).random(config.n_devices)
        affected = (cohorts == regressed) & (share < REGRESSION_DEVICE_SHARE)
    stamps = pd.date_range(pd.Timestamp(day, tz="UTC"), periods=samples, freq=f"{config.interval_minutes}min", unit="ns")
    for low in range(0, config.n_devices, BLOCK_DEVICES):
        high = min(config.n_devices, low + BLOCK_DEVICES)
        rng = np.random.default_rng([config.seed, _STREAM_BLOCK, _day_index(day), low])
        draws = rng.random((high - low, samples))
        flagged = np.zeros((high - low, samples), dtype=bool)
        for device, start, stop in zip(events.burst_device, events.burst_start, events.burst_stop):
            if low <= device < high:
                flagged[device - low, start : min(stop, samples)] = True
        if carried is not None:
            for device, stop in zip(carried.burst_device, carried.burst_stop):
                if low <= device < high and stop > samples:
                    flagged[device - low, : stop - samples] = True
        flagged &= draws < BURST_FLAG_SHARE
        for device, start, stop in zip(events.alarm_device, events.alarm_start, events.alarm_stop):
            if low <= device < high:
                flagged[device - low, start:stop] = True
        if window is not None:
            span = slice(*window)
            flagged[affected[low:high], span] |= draws[affected[low:high], span] < REGRESSION_FLAG_SHARE
        delivered = (rng.random((high - low, samples)) >= config.packet_loss) & ~events.silent[low:high, None]
        device_at, sample_at = np.nonzero(delivered)
        level = rng.random(len(device_at))
        is_anomaly = flagged[device_at, sample_at]
        score = np.where(is_anomaly, THRESHOLD + 0.01 + 0.49 * level, 0.45 * level**2)
        first = rng.integers(0, len(FEATURE_NAMES), len(device_at))
        names = np.asarray(FEATURE_NAMES, dtype=object)
        yield pd.DataFrame(
            {
                "device_id": ids[low:high][device_at],
                "timestamp": stamps[sample_at],
                "cohort": cohorts[low:high][device_at],
                "score": score,
                "severity": 100.0 * score,
                "is_anomaly": score > THRESHOLD,
                "top_feature_1": names[first],
                "top_feature_2": names[(first + 1) % len(names)],
                "top_feature_3": names[(first + 2) % len(names)],
                "model_name": MODEL_NAME,
                "model_version": MODEL_VERSION,
                "partition_date": day.isoformat(),
            }
        ).astype({c: "str" for c in ("device_id", "cohort", "top_feature_1", "top_feature_2", "top_feature_3")})


def synthetic_scored_days(config: generator.FleetConfig, days: Sequence[dt.date]) -> pd.DataFrame:
    """Every row of ``days`` at once (a small fleet), by day, device and time."""
    return pd.concat([block for day in days for block in synthetic_scored_day(config, day)], ignore_index=True)
