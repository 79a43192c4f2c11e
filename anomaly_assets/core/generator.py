"""Deterministic synthetic fleet of managed mobile devices with labelled, injected faults.

Every random draw comes from a generator seeded by ``(seed, stream, day)``, so one day is
generated without generating any earlier day and the same seed always gives the same rows.
Per-device traits use their own streams, so device ``i`` keeps its traits when the fleet grows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd

METRICS: tuple[str, ...] = (
    "battery_level_pct",
    "battery_temp_c",
    "cpu_util_pct",
    "memory_used_pct",
    "storage_free_gb",
    "wifi_rssi_dbm",
    "net_rx_mb",
    "net_tx_mb",
    "app_crashes",
    "reboots",
    "data_used_mb_today",
)
COHORT_COLUMNS: tuple[str, ...] = ("manufacturer", "model", "os_version")
LABEL_COLUMNS: tuple[str, ...] = ("is_injected_anomaly", "anomaly_type")
DEVICE_FAULT_TYPES: tuple[str, ...] = ("spike", "level_shift", "degradation", "stuck", "dropout")
COHORT_FAULT_TYPE = "cohort_regression"
NORMAL = "normal"
_LABELS: tuple[str, ...] = (NORMAL, *DEVICE_FAULT_TYPES, COHORT_FAULT_TYPE)

# model -> (manufacturer, cpu base %, memory base %, temp offset C, drain %/h, crash proneness, storage GB)
DEVICE_MODELS: dict[str, tuple[str, float, float, float, float, float, float]] = {
    "Galaxy XCover6": ("Samsung", 18.0, 48.0, 0.0, 5.0, 1.0, 128.0),
    "Galaxy A54": ("Samsung", 15.0, 52.0, 0.5, 4.5, 0.8, 128.0),
    "TC52": ("Zebra", 22.0, 58.0, 1.5, 6.0, 1.5, 32.0),
    "TC58": ("Zebra", 16.0, 45.0, 1.0, 5.0, 1.0, 64.0),
    "CT40": ("Honeywell", 25.0, 60.0, 2.0, 6.5, 2.0, 32.0),
    "CT60": ("Honeywell", 19.0, 50.0, 1.0, 5.5, 1.2, 64.0),
    "Pixel 7": ("Google", 12.0, 42.0, -0.5, 4.0, 0.6, 128.0),
}
OS_VERSIONS: dict[str, tuple[float, float]] = {"13": (3.0, 4.0), "14": (0.0, 0.0)}  # cpu, memory offset

# Random streams: one independent generator per purpose.
_STREAM_DEVICE_TRAITS = 1
_STREAM_COHORT_ASSIGNMENT = 2
_STREAM_DAY_NOISE = 3
_STREAM_DAY_FAULTS = 4
_STREAM_DAY_LOSS = 5
_STREAM_REGRESSION = 6
_EPOCH = dt.date(2020, 1, 1)


def default_cohorts() -> tuple[tuple[str, str, str], ...]:
    return tuple(
        (maker, model, os_version)
        for model, (maker, *_rest) in DEVICE_MODELS.items()
        for os_version in OS_VERSIONS
    )


@dataclasses.dataclass(frozen=True)
class FleetConfig:
    """Parameters of the synthetic fleet. ``cohorts`` are (manufacturer, model, os_version)."""

    n_devices: int = 200
    seed: int = 7
    interval_minutes: int = 5
    start_date: dt.date = dt.date(2026, 11, 1)
    cohorts: tuple[tuple[str, str, str], ...] = dataclasses.field(default_factory=default_cohorts)
    device_fault_rate: float = 0.05  # share of devices that get one injected fault per day
    # The bad firmware release reaches one cohort this many days after start_date (None: never).
    cohort_regression_offset_days: int | None = 8
    packet_loss: float = 0.003  # share of samples never delivered (not labelled: normal loss)
    # A fleet-wide firmware update from this many days after start_date on (None: never): it moves
    # one metric's level on every device for good. Not labelled: it is the new normal, which drift
    # monitoring should notice and retraining should absorb.
    fleet_shift_offset_days: int | None = None
    fleet_shift_metric: str = "memory_used_pct"
    fleet_shift_size: float = 12.0

    def __post_init__(self) -> None:
        if self.n_devices < 1:
            raise ValueError(f"n_devices must be at least 1, got {self.n_devices}")
        if 1440 % self.interval_minutes:
            raise ValueError(f"interval_minutes must divide a day, got {self.interval_minutes}")
        unknown = sorted({c[1] for c in self.cohorts} - DEVICE_MODELS.keys())
        if unknown:
            raise ValueError(f"unknown device models in cohorts: {unknown}; known: {sorted(DEVICE_MODELS)}")
        if self.fleet_shift_metric not in METRICS:
            raise ValueError(f"fleet_shift_metric {self.fleet_shift_metric!r} is not one of {METRICS}")
        unknown_os = sorted({c[2] for c in self.cohorts} - OS_VERSIONS.keys())
        if unknown_os:
            raise ValueError(f"unknown os versions in cohorts: {unknown_os}; known: {sorted(OS_VERSIONS)}")

    @property
    def cohort_regression_date(self) -> dt.date | None:
        if self.cohort_regression_offset_days is None:
            return None
        return self.start_date + dt.timedelta(days=self.cohort_regression_offset_days)

    @property
    def fleet_shift_date(self) -> dt.date | None:
        if self.fleet_shift_offset_days is None:
            return None
        return self.start_date + dt.timedelta(days=self.fleet_shift_offset_days)

    @property
    def samples_per_day(self) -> int:
        return 1440 // self.interval_minutes


def _rng(config: FleetConfig, stream: int, day: dt.date | None = None) -> np.random.Generator:
    key = [config.seed, stream] + ([(day - _EPOCH).days] if day is not None else [])
    return np.random.default_rng(key)


@dataclasses.dataclass(frozen=True)
class _Devices:
    ids: np.ndarray
    cohort_index: np.ndarray
    cpu_offset: np.ndarray
    memory_offset: np.ndarray
    temp_offset: np.ndarray
    rssi_base: np.ndarray
    rssi_phase: np.ndarray
    net_intensity: np.ndarray
    storage_fill_rate: np.ndarray
    storage_phase: np.ndarray
    drain_factor: np.ndarray


def _devices(config: FleetConfig) -> _Devices:
    n = config.n_devices

    def draw(stream_offset: int, fn):
        return fn(np.random.default_rng([config.seed, _STREAM_DEVICE_TRAITS, stream_offset]))

    return _Devices(
        ids=np.array([f"dev-{i:06d}" for i in range(n)], dtype=object),
        cohort_index=_rng(config, _STREAM_COHORT_ASSIGNMENT).integers(0, len(config.cohorts), n),
        cpu_offset=draw(1, lambda r: r.normal(0, 5, n)),
        memory_offset=draw(2, lambda r: r.normal(0, 4, n)),
        temp_offset=draw(3, lambda r: r.normal(0, 1, n)),
        rssi_base=draw(4, lambda r: r.uniform(-72, -50, n)),
        rssi_phase=draw(5, lambda r: r.uniform(0, 2 * np.pi, n)),
        net_intensity=draw(6, lambda r: r.lognormal(0.0, 0.5, n)),
        storage_fill_rate=draw(7, lambda r: r.uniform(0.05, 0.3, n)),
        storage_phase=draw(8, lambda r: r.uniform(0, 1, n)),
        drain_factor=draw(9, lambda r: r.uniform(0.8, 1.25, n)),
    )


def device_roster(config: FleetConfig) -> pd.DataFrame:
    """One row per device with its cohort attributes (the fleet's inventory)."""
    devices = _devices(config)
    cohorts = np.array(config.cohorts, dtype=object)[devices.cohort_index]
    return pd.DataFrame(
        {"device_id": devices.ids, **{c: cohorts[:, i] for i, c in enumerate(COHORT_COLUMNS)}}
    )


def regressed_cohort(config: FleetConfig) -> tuple[str, str, str]:
    """The cohort hit by the bad firmware release on ``cohort_regression_date``."""
    counts = np.bincount(_devices(config).cohort_index, minlength=len(config.cohorts))
    populated = np.flatnonzero(counts >= max(1, counts.max() // 2))
    choice = _rng(config, _STREAM_REGRESSION).choice(populated)
    return config.cohorts[int(choice)]


def generate_day(config: FleetConfig, day: dt.date) -> pd.DataFrame:
    """All telemetry rows of one UTC day, sorted by device and time, with fault labels."""
    if day < config.start_date:
        raise ValueError(f"the synthetic fleet starts on {config.start_date}; cannot generate {day}")
    devices = _devices(config)
    n, t_count = config.n_devices, config.samples_per_day
    rng = _rng(config, _STREAM_DAY_NOISE, day)
    cohort_params = np.array(
        [(*DEVICE_MODELS[model][1:], *OS_VERSIONS[os_version]) for _, model, os_version in config.cohorts]
    )[devices.cohort_index]
    cpu_base, mem_base, temp_model, drain_rate, crash_prone, storage_total, os_cpu, os_mem = (
        cohort_params[:, i : i + 1] for i in range(cohort_params.shape[1])
    )

    hours = np.arange(t_count) * config.interval_minutes / 60.0  # (T,)
    activity = 0.5 - 0.5 * np.cos(2 * np.pi * (hours - 3.0) / 24.0)  # peaks mid-afternoon
    activity = np.broadcast_to(activity, (n, t_count))
    interval_h = config.interval_minutes / 60.0

    cpu = cpu_base + os_cpu + devices.cpu_offset[:, None] + 35 * activity + rng.normal(0, 4, (n, t_count))
    memory = mem_base + os_mem + devices.memory_offset[:, None] + 15 * activity + rng.normal(0, 2, (n, t_count))
    rssi = (
        devices.rssi_base[:, None]
        + 6 * np.sin(2 * np.pi * hours / 24 + devices.rssi_phase[:, None])
        + rng.normal(0, 3, (n, t_count))
    )
    rx = devices.net_intensity[:, None] * (0.2 + 3 * activity) * rng.lognormal(0, 0.5, (n, t_count))
    tx = 0.3 * rx * rng.lognormal(0, 0.3, (n, t_count))
    crash_lambda = 0.002 * crash_prone * (0.5 + activity)
    reboot_lambda = np.full((n, t_count), 0.0005)
    day_index = (day - _EPOCH).days
    cycle = ((day_index + hours / 24.0)[None, :] / 30.0 + devices.storage_phase[:, None]) % 1.0
    storage = storage_total * (0.85 - 0.6 * devices.storage_fill_rate[:, None] * 3 * cycle)
    storage = storage + rng.normal(0, 0.02, (n, t_count))
    drain = drain_rate * devices.drain_factor[:, None] * (0.4 + activity) * interval_h
    start_level = rng.uniform(70, 100, n)

    labels = np.zeros((n, t_count), dtype=np.int8)  # index into _LABELS

    # Cohort-wide regression: a bad firmware release reaches one cohort at 06:00.
    if config.cohort_regression_date == day:
        target = regressed_cohort(config)
        in_cohort = devices.cohort_index == config.cohorts.index(target)
        window = in_cohort[:, None] & (hours >= 6.0)[None, :]
        cpu = np.where(window, cpu + 22, cpu)
        temp_extra = np.where(window, 5.0, 0.0)
        crash_lambda = np.where(window, crash_lambda * 25, crash_lambda)
        drain = np.where(window, drain * 1.8, drain)
        labels[window] = _LABELS.index(COHORT_FAULT_TYPE)
    else:
        temp_extra = 0.0

    battery = _battery_level(start_level, drain, hours, interval_h)
    temp = 27 + temp_model + devices.temp_offset[:, None] + 0.12 * cpu + temp_extra + rng.normal(0, 0.5, (n, t_count))
    crashes = rng.poisson(crash_lambda).astype(float)
    reboots = rng.poisson(reboot_lambda).astype(float)

    values = {
        "battery_level_pct": battery,
        "battery_temp_c": temp,
        "cpu_util_pct": cpu,
        "memory_used_pct": memory,
        "storage_free_gb": storage,
        "wifi_rssi_dbm": rssi,
        "net_rx_mb": rx,
        "net_tx_mb": tx,
        "app_crashes": crashes,
        "reboots": reboots,
    }
    if config.fleet_shift_date is not None and day >= config.fleet_shift_date:
        values[config.fleet_shift_metric] = values[config.fleet_shift_metric] + config.fleet_shift_size
    _inject_device_faults(config, day, values, labels, t_count)
    values["cpu_util_pct"] = np.clip(values["cpu_util_pct"], 0, 100)
    values["memory_used_pct"] = np.clip(values["memory_used_pct"], 0, 100)
    values["wifi_rssi_dbm"] = np.clip(np.round(values["wifi_rssi_dbm"]), -100, -20)
    values["storage_free_gb"] = np.maximum(values["storage_free_gb"], 0.0)
    used = np.nan_to_num(values["net_rx_mb"]) + np.nan_to_num(values["net_tx_mb"])
    values["data_used_mb_today"] = np.cumsum(used, axis=1)

    return _to_frame(config, day, devices, values, labels)


def _battery_level(start: np.ndarray, drain: np.ndarray, hours: np.ndarray, interval_h: float) -> np.ndarray:
    """Discharges through the day, charges overnight (22:00-06:00), stays within 2-100%."""
    level = np.empty_like(drain)
    current = start.copy()
    charging = (hours >= 22) | (hours < 6)
    for t in range(drain.shape[1]):  # a loop over time steps, vectorized over devices
        current = current + 30 * interval_h if charging[t] else current - drain[:, t]
        current = np.clip(current, 2.0, 100.0)
        level[:, t] = current
    return level


def _inject_device_faults(
    config: FleetConfig, day: dt.date, values: dict[str, np.ndarray], labels: np.ndarray, t_count: int
) -> None:
    rng = _rng(config, _STREAM_DAY_FAULTS, day)
    n = config.n_devices
    n_faulty = int(round(config.device_fault_rate * n))
    if n_faulty == 0:
        return
    faulty = rng.choice(n, size=n_faulty, replace=False)
    kinds = rng.integers(0, len(DEVICE_FAULT_TYPES), n_faulty)
    steps_per_hour = 60 // config.interval_minutes if config.interval_minutes <= 60 else 1
    for device, kind_index in zip(faulty, kinds, strict=True):
        kind = DEVICE_FAULT_TYPES[kind_index]
        start = int(rng.integers(steps_per_hour, t_count - 2 * steps_per_hour))
        if kind == "spike":
            metric = rng.choice(["cpu_util_pct", "battery_temp_c", "memory_used_pct", "net_rx_mb", "app_crashes"])
            stop = min(t_count, start + int(rng.integers(1, 4)))
            series = values[metric][device]
            series[start:stop] = {
                "cpu_util_pct": lambda s: np.full_like(s, 99.0),
                "battery_temp_c": lambda s: s + rng.uniform(12, 20),
                "memory_used_pct": lambda s: np.full_like(s, 99.5),
                "net_rx_mb": lambda s: s * 30 + 50,
                "app_crashes": lambda s: s + rng.integers(5, 15),
            }[metric](series[start:stop])
        elif kind == "level_shift":
            metric = rng.choice(["cpu_util_pct", "memory_used_pct", "battery_temp_c", "wifi_rssi_dbm"])
            shift = {"cpu_util_pct": 30.0, "memory_used_pct": 28.0, "battery_temp_c": 8.0, "wifi_rssi_dbm": -25.0}
            stop = t_count
            values[metric][device, start:] += shift[metric] * rng.uniform(0.9, 1.3)
        elif kind == "degradation":
            metric = rng.choice(["battery_temp_c", "memory_used_pct", "storage_free_gb"])
            stop = t_count
            ramp = np.linspace(0, 1, stop - start)
            size = {"battery_temp_c": 12.0, "memory_used_pct": 40.0, "storage_free_gb": -0.9}[metric]
            series = values[metric][device]
            series[start:] = series[start:] * (1 + size * ramp) if size < 0 else series[start:] + size * ramp
        elif kind == "stuck":
            metric = rng.choice(["cpu_util_pct", "memory_used_pct", "wifi_rssi_dbm", "battery_level_pct"])
            stop = min(t_count, start + int(rng.integers(2 * steps_per_hour, 8 * steps_per_hour)))
            values[metric][device, start:stop] = values[metric][device, start]
        else:  # dropout: the agent loses its radio and network metrics
            stop = min(t_count, start + int(rng.integers(steps_per_hour // 2, 3 * steps_per_hour)))
            for metric in ("wifi_rssi_dbm", "net_rx_mb", "net_tx_mb"):
                values[metric][device, start:stop] = np.nan
        labels[device, start:stop] = _LABELS.index(kind)


def _to_frame(
    config: FleetConfig,
    day: dt.date,
    devices: _Devices,
    values: dict[str, np.ndarray],
    labels: np.ndarray,
) -> pd.DataFrame:
    n, t_count = labels.shape
    day_start = pd.Timestamp(day, tz="UTC").as_unit("ns")
    offsets = pd.to_timedelta(np.arange(t_count) * config.interval_minutes, unit="min")
    cohorts = np.array(config.cohorts, dtype=object)[devices.cohort_index]
    delivered = _rng(config, _STREAM_DAY_LOSS, day).random(n * t_count) >= config.packet_loss
    frame = pd.DataFrame(
        {
            "device_id": np.repeat(devices.ids, t_count),
            "timestamp": pd.DatetimeIndex(np.tile((day_start + offsets).tz_convert(None).to_numpy(), n)).tz_localize("UTC"),
            **{c: np.repeat(cohorts[:, i], t_count) for i, c in enumerate(COHORT_COLUMNS)},
            **{m: np.round(values[m].reshape(-1), 4) for m in METRICS},
            "is_injected_anomaly": labels.reshape(-1) != 0,
            "anomaly_type": pd.Categorical.from_codes(labels.reshape(-1), categories=_LABELS),
        }
    )
    for column in ("device_id", *COHORT_COLUMNS, "anomaly_type"):  # plain strings: stable parquet and SQL types
        frame[column] = frame[column].astype("str")
    return frame.loc[delivered].reset_index(drop=True)


def generate_days(config: FleetConfig, days: Sequence[dt.date]) -> pd.DataFrame:
    return pd.concat([generate_day(config, d) for d in days], ignore_index=True)
