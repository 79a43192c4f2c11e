"""Unit tests for the synthetic fleet generator (anomaly_assets.core.generator)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core.generator import (
    COHORT_COLUMNS,
    COHORT_FAULT_TYPE,
    DEVICE_FAULT_TYPES,
    LABEL_COLUMNS,
    METRICS,
    NORMAL,
    FleetConfig,
    device_roster,
    generate_day,
    generate_days,
    regressed_cohort,
)

SMALL = FleetConfig(n_devices=40, seed=7)
START = SMALL.start_date


def day(offset: int, config: FleetConfig = SMALL) -> dt.date:
    return config.start_date + dt.timedelta(days=offset)


@pytest.fixture(scope="module")
def fleet_config() -> FleetConfig:
    return FleetConfig(n_devices=300, seed=7)


@pytest.fixture(scope="module")
def fleet(fleet_config: FleetConfig) -> pd.DataFrame:
    """300 devices over the four days around the cohort regression (offset 8 -> days 6..9)."""
    assert fleet_config.cohort_regression_offset_days == 8
    return generate_days(fleet_config, [day(d, fleet_config) for d in range(6, 10)])


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_and_day_give_identical_frames():
    first = generate_day(SMALL, day(2))
    second = generate_day(FleetConfig(n_devices=40, seed=7), day(2))
    assert len(first) > 0
    pd.testing.assert_frame_equal(first, second)


def test_different_seed_gives_different_values():
    a = generate_day(SMALL, day(2))
    b = generate_day(dataclasses.replace(SMALL, seed=8), day(2))
    merged = a.merge(b, on=["device_id", "timestamp"], suffixes=("_a", "_b"))
    assert len(merged) > 0.9 * len(a)
    # Continuous metrics drawn from a different stream: virtually every value differs.
    differs = merged["cpu_util_pct_a"] != merged["cpu_util_pct_b"]
    assert differs.mean() > 0.9
    with pytest.raises(AssertionError):
        pd.testing.assert_frame_equal(a, b)


def test_different_days_differ():
    a = generate_day(SMALL, day(2)).drop(columns="timestamp")
    b = generate_day(SMALL, day(3)).drop(columns="timestamp")
    n = min(len(a), len(b))
    assert not np.array_equal(a["cpu_util_pct"].to_numpy()[:n], b["cpu_util_pct"].to_numpy()[:n])


def test_day_alone_equals_day_from_generate_days():
    target = day(3)
    several = generate_days(SMALL, [day(0), day(1), day(2), target, day(4)])
    from_many = several.loc[several["timestamp"].dt.date == target].reset_index(drop=True)
    alone = generate_day(SMALL, target)
    assert len(alone) > 0
    pd.testing.assert_frame_equal(alone, from_many)


def test_day_does_not_depend_on_which_days_were_generated_before():
    target = day(5)
    after_others = generate_days(SMALL, [day(4), target])
    after_others = after_others.loc[after_others["timestamp"].dt.date == target].reset_index(drop=True)
    pd.testing.assert_frame_equal(generate_day(SMALL, target), after_others)


def test_device_keeps_traits_when_fleet_grows():
    small = device_roster(FleetConfig(n_devices=50, seed=7))
    large = device_roster(FleetConfig(n_devices=120, seed=7))
    pd.testing.assert_frame_equal(small, large.head(50))


# --- labels ------------------------------------------------------------------------------------


def test_label_columns_present_and_consistent(fleet: pd.DataFrame):
    for column in LABEL_COLUMNS:
        assert column in fleet.columns
    assert fleet["is_injected_anomaly"].dtype == bool
    expected = (fleet["anomaly_type"] != NORMAL).to_numpy()
    np.testing.assert_array_equal(fleet["is_injected_anomaly"].to_numpy(), expected)
    assert set(fleet["anomaly_type"].unique()) <= {NORMAL, *DEVICE_FAULT_TYPES, COHORT_FAULT_TYPE}
    # Faults are the exception, not the rule.
    assert 0.0 < fleet["is_injected_anomaly"].mean() < 0.1


def test_every_device_fault_type_appears(fleet: pd.DataFrame):
    seen = set(fleet["anomaly_type"].unique())
    missing = set(DEVICE_FAULT_TYPES) - seen
    assert not missing, f"fault types never injected over 4 days x 300 devices: {missing}"
    # About device_fault_rate of devices get a fault each day.
    faulty_per_day = (
        fleet.loc[fleet["anomaly_type"].isin(DEVICE_FAULT_TYPES)]
        .groupby(fleet["timestamp"].dt.date)["device_id"]
        .nunique()
    )
    assert len(faulty_per_day) == 4
    assert faulty_per_day.between(10, 15).all(), faulty_per_day.to_dict()  # round(0.05 * 300) = 15


def test_cohort_regression_only_on_its_date_and_cohort(fleet: pd.DataFrame, fleet_config: FleetConfig):
    regression_day = fleet_config.cohort_regression_date
    assert regression_day == day(8, fleet_config)
    target = regressed_cohort(fleet_config)
    in_target = (
        (fleet["manufacturer"] == target[0]) & (fleet["model"] == target[1]) & (fleet["os_version"] == target[2])
    )
    dates = fleet["timestamp"].dt.date
    is_regression = fleet["anomaly_type"] == COHORT_FAULT_TYPE

    assert is_regression.sum() > 0
    assert (dates[is_regression] == regression_day).all()
    assert in_target[is_regression].all()
    assert (fleet.loc[is_regression, "timestamp"].dt.hour >= 6).all()

    # Every row of the target cohort from 06:00 on that day is labelled, except where a device
    # fault was injected on top.
    window = in_target & (dates == regression_day) & (fleet["timestamp"].dt.hour >= 6)
    window_labels = set(fleet.loc[window, "anomaly_type"].unique())
    assert COHORT_FAULT_TYPE in window_labels
    assert window_labels <= {COHORT_FAULT_TYPE, *DEVICE_FAULT_TYPES}
    assert (fleet.loc[window, "anomaly_type"] == COHORT_FAULT_TYPE).mean() > 0.9

    # The regression is visible in the data: CPU of the target cohort after 06:00 rises by ~22
    # points compared with the same hours the day before.
    afternoon = fleet["timestamp"].dt.hour.between(6, 23)
    cpu_today = fleet.loc[in_target & afternoon & (dates == regression_day), "cpu_util_pct"].mean()
    cpu_before = fleet.loc[in_target & afternoon & (dates == day(7, fleet_config)), "cpu_util_pct"].mean()
    assert 12 < cpu_today - cpu_before < 30


def test_no_cohort_regression_when_disabled():
    config = dataclasses.replace(SMALL, cohort_regression_offset_days=None)
    assert config.cohort_regression_date is None
    frame = generate_day(config, day(8))
    assert not (frame["anomaly_type"] == COHORT_FAULT_TYPE).any()
    # and with it enabled, the same day does have it
    assert (generate_day(SMALL, day(8))["anomaly_type"] == COHORT_FAULT_TYPE).any()


# --- schema and physical ranges ----------------------------------------------------------------


def test_at_least_ten_numeric_metrics(fleet: pd.DataFrame):
    assert len(METRICS) >= 10
    for metric in METRICS:
        assert metric in fleet.columns
        assert fleet[metric].dtype == np.float64
    for column in ("device_id", "timestamp", *COHORT_COLUMNS):
        assert column in fleet.columns


def test_timestamps_are_utc_and_on_the_interval_grid():
    config = dataclasses.replace(SMALL, interval_minutes=10)
    target = day(1, config)
    frame = generate_day(config, target)
    assert isinstance(frame["timestamp"].dtype, pd.DatetimeTZDtype)
    assert str(frame["timestamp"].dt.tz) == "UTC"
    day_start = pd.Timestamp(target, tz="UTC")
    offsets = frame["timestamp"] - day_start
    assert (offsets >= pd.Timedelta(0)).all()
    assert (offsets < pd.Timedelta(days=1)).all()
    assert (offsets % pd.Timedelta(minutes=10) == pd.Timedelta(0)).all()
    # samples_per_day grid points per device, minus the small packet loss
    assert frame["timestamp"].nunique() == config.samples_per_day == 144
    expected = config.n_devices * config.samples_per_day
    assert expected * (1 - 5 * config.packet_loss) < len(frame) < expected
    assert not frame.duplicated(["device_id", "timestamp"]).any()
    # sorted by device, then time
    assert frame.equals(frame.sort_values(["device_id", "timestamp"], kind="stable").reset_index(drop=True))


def test_device_keeps_its_cohort_across_days(fleet: pd.DataFrame, fleet_config: FleetConfig):
    per_device = fleet.groupby("device_id")[list(COHORT_COLUMNS)].nunique()
    assert (per_device == 1).all().all()
    assert fleet["device_id"].nunique() == fleet_config.n_devices
    roster = device_roster(fleet_config).set_index("device_id")
    observed = fleet.drop_duplicates("device_id").set_index("device_id")[list(COHORT_COLUMNS)]
    pd.testing.assert_frame_equal(observed.sort_index(), roster.sort_index(), check_dtype=False)
    # several cohorts are populated
    assert fleet.groupby(list(COHORT_COLUMNS)).ngroups >= 10


def test_physical_ranges_hold(fleet: pd.DataFrame):
    for metric in ("battery_level_pct", "cpu_util_pct", "memory_used_pct"):
        values = fleet[metric]
        assert values.notna().all(), metric
        assert values.between(0, 100).all(), (metric, values.min(), values.max())
    rssi = fleet["wifi_rssi_dbm"].dropna()
    assert rssi.between(-100, -20).all()
    assert (fleet["storage_free_gb"] >= 0).all()
    for metric in ("net_rx_mb", "net_tx_mb", "app_crashes", "reboots", "data_used_mb_today"):
        assert (fleet[metric].dropna() >= 0).all(), metric
    # data usage accumulates over the day per device
    ordered = fleet.sort_values(["device_id", "timestamp"])
    diffs = ordered.groupby(["device_id", ordered["timestamp"].dt.date])["data_used_mb_today"].diff().dropna()
    assert (diffs >= -1e-9).all()


def test_dropout_is_the_only_source_of_missing_values(fleet: pd.DataFrame):
    has_nan = fleet[list(METRICS)].isna().any(axis=1)
    assert has_nan.any()
    assert (fleet.loc[has_nan, "anomaly_type"] == "dropout").all()


def test_day_before_start_raises():
    with pytest.raises(ValueError, match="starts on"):
        generate_day(SMALL, START - dt.timedelta(days=1))
    with pytest.raises(ValueError):
        generate_days(SMALL, [START, START - dt.timedelta(days=3)])


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_devices=0), dict(interval_minutes=7), dict(cohorts=(("Acme", "Phone X", "14"),))],
)
def test_invalid_fleet_config_raises(kwargs):
    with pytest.raises(ValueError):
        FleetConfig(**kwargs)
