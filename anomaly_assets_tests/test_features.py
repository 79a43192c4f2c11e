"""Unit tests for per-device rolling features (anomaly_assets.core.features)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core.features import TIME_FEATURES, FeatureSpec, build_daily_features, build_device_features
from anomaly_assets.core.generator import COHORT_COLUMNS, LABEL_COLUMNS, METRICS, FleetConfig, generate_days

SPEC = FeatureSpec(metrics=METRICS, cohort_columns=COHORT_COLUMNS, label_columns=LABEL_COLUMNS)


def assert_features_close(actual: pd.DataFrame, expected: pd.DataFrame, columns) -> None:
    """Same keys and, per feature column, same NaN positions and values within rtol=1e-7, atol=1e-6."""
    assert len(actual) == len(expected)
    pd.testing.assert_series_equal(actual["device_id"], expected["device_id"])
    pd.testing.assert_series_equal(actual["timestamp"], expected["timestamp"])
    for column in columns:
        a, e = actual[column].to_numpy(), expected[column].to_numpy()
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=f"NaN positions differ in {column}")
        np.testing.assert_allclose(a, e, rtol=1e-7, atol=1e-6, equal_nan=True, err_msg=column)


def _days(config: FleetConfig, n: int) -> list[dt.date]:
    return [config.start_date + dt.timedelta(days=d) for d in range(n)]


@pytest.fixture(scope="module")
def three_days() -> tuple[list[dt.date], pd.DataFrame]:
    config = FleetConfig(n_devices=40, seed=11)
    days = _days(config, 3)
    return days, generate_days(config, days)


# --- partitioned == concatenated -------------------------------------------------------------


@pytest.mark.parametrize("day_index", [1, 2])
def test_day_by_day_with_lookback_equals_concatenated(three_days, day_index):
    days, telemetry = three_days
    day_start = pd.Timestamp(days[day_index], tz="UTC")
    prev_start = pd.Timestamp(days[day_index - 1], tz="UTC")
    day_end = day_start + pd.Timedelta(days=1)

    everything = build_device_features(telemetry, SPEC)
    expected = everything.loc[
        (everything["timestamp"] >= day_start) & (everything["timestamp"] < day_end)
    ].reset_index(drop=True)

    prev_day = telemetry.loc[(telemetry["timestamp"] >= prev_start) & (telemetry["timestamp"] < day_start)]
    this_day = telemetry.loc[(telemetry["timestamp"] >= day_start) & (telemetry["timestamp"] < day_end)]
    partitioned = build_device_features(pd.concat([prev_day, this_day]), SPEC, keep_from=day_start)

    assert (partitioned["timestamp"] >= day_start).all()
    assert len(partitioned) == len(this_day)
    assert list(partitioned.columns) == list(expected.columns)
    for column in ("anomaly_type", "is_injected_anomaly", *COHORT_COLUMNS):
        pd.testing.assert_series_equal(partitioned[column], expected[column])
    assert_features_close(partitioned, expected, SPEC.device_feature_columns())


def test_daily_features_need_only_the_lookback_and_are_bit_identical(three_days):
    """A day's features read the longest window before it (and, for a device silent through it,
    its last earlier row): with more history at hand they are the same to the last bit, and they
    equal features computed on the concatenated days."""
    days, telemetry = three_days
    day = pd.Timestamp(days[2], tz="UTC")
    assert SPEC.lookback == pd.Timedelta("6h")
    previous_day = telemetry.loc[telemetry["timestamp"] >= day - pd.Timedelta(days=1)]
    daily = build_daily_features(previous_day, SPEC, [day])
    # All three days at hand, in another row order: still the same bits.
    shuffled = telemetry.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(build_daily_features(shuffled, SPEC, [day]), daily, check_exact=True)
    everything = build_device_features(telemetry, SPEC)
    expected = everything.loc[everything["timestamp"] >= day].reset_index(drop=True)
    assert_features_close(daily, expected, SPEC.device_feature_columns())
    # Less than the lookback is not enough: the 6h windows of the first rows change.
    short = build_device_features(telemetry.loc[telemetry["timestamp"] >= day - pd.Timedelta("3h")], SPEC, keep_from=day)
    with pytest.raises(AssertionError):
        assert_features_close(short, expected, ["cpu_util_pct__std_6h"])


def test_delta_and_gap_reach_back_over_a_silence_longer_than_the_lookback(three_days):
    days, telemetry = three_days
    day = pd.Timestamp(days[2], tz="UTC")
    device = telemetry["device_id"].iloc[0]
    silent = (telemetry["device_id"] == device) & telemetry["timestamp"].between(
        day - pd.Timedelta("7h"), day + pd.Timedelta("3h"), inclusive="left"
    )  # silent from 17:00 to 03:00: through the whole 6h lookback
    gappy = telemetry.loc[~silent]
    daily = build_daily_features(gappy, SPEC, [day])
    first = daily.loc[daily["device_id"] == device].iloc[0]
    assert first["timestamp"] == day + pd.Timedelta("3h")
    assert first["gap_minutes"] == pytest.approx(10 * 60 + 5)  # from the last sample at 16:55
    everything = build_device_features(gappy, SPEC)
    expected = everything.loc[everything["timestamp"] >= day].reset_index(drop=True)
    assert_features_close(daily, expected, SPEC.device_feature_columns())


def test_daily_features_read_in_place_equal_features_of_the_rows_copied_out(three_days):
    """build_daily_features reads the day and its lookback where they lie in the frame: the same
    bits as build_device_features on those rows copied out first, in any row order."""
    from anomaly_assets.core.features import _lookback_and_day

    days, telemetry = three_days
    for frame in (telemetry, telemetry.sample(frac=1.0, random_state=5)):
        for day in (pd.Timestamp(days[1], tz="UTC"), pd.Timestamp(days[2], tz="UTC")):
            rows = frame.loc[_lookback_and_day(frame, frame["timestamp"], day, SPEC.lookback)]
            copied = build_device_features(rows, SPEC, keep_from=day)
            pd.testing.assert_frame_equal(build_daily_features(frame, SPEC, [day]), copied, check_exact=True)


def test_without_lookback_the_first_hour_differs(three_days):
    """Sanity check that the comparison above has teeth: dropping the lookback changes features."""
    days, telemetry = three_days
    day_start = pd.Timestamp(days[1], tz="UTC")
    day_end = day_start + pd.Timedelta(days=1)
    everything = build_device_features(telemetry, SPEC)
    expected = everything.loc[(everything["timestamp"] >= day_start) & (everything["timestamp"] < day_end)]
    this_day = telemetry.loc[(telemetry["timestamp"] >= day_start) & (telemetry["timestamp"] < day_end)]
    no_lookback = build_device_features(this_day, SPEC)
    with pytest.raises(AssertionError):
        assert_features_close(no_lookback, expected.reset_index(drop=True), ["cpu_util_pct__std_6h"])
    # delta on each device's first row of the day is NaN without lookback, a number with it
    first = no_lookback.groupby("device_id").head(1)
    assert first["cpu_util_pct__delta"].isna().all()
    first_expected = expected.groupby("device_id").head(1)
    assert first_expected["cpu_util_pct__delta"].notna().mean() > 0.9


def test_output_layout(three_days):
    _, telemetry = three_days
    features = build_device_features(telemetry.sample(frac=1.0, random_state=0), SPEC)
    keys = ["device_id", "timestamp", *COHORT_COLUMNS, *LABEL_COLUMNS]
    assert list(features.columns) == keys + SPEC.device_feature_columns()
    assert len(features) == len(telemetry)
    for column in SPEC.device_feature_columns():
        assert features[column].dtype == np.float64, column
    ordered = features.sort_values(["device_id", "timestamp"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(features, ordered)
    # Input order does not matter.
    pd.testing.assert_frame_equal(features, build_device_features(telemetry, SPEC))


def test_missing_columns_raise():
    frame = pd.DataFrame({"device_id": ["a"], "timestamp": pd.to_datetime(["2026-11-01"], utc=True)})
    with pytest.raises(KeyError, match="cpu"):
        build_device_features(frame, FeatureSpec(metrics=("cpu",), cohort_columns=()))


# --- against a pandas reference --------------------------------------------------------------


@pytest.fixture(scope="module")
def gappy_frame() -> pd.DataFrame:
    """Three devices, 5-minute grid over 16 hours, with dropped rows (gaps) and NaN metric values."""
    rng = np.random.default_rng(3)
    grid = pd.date_range("2026-11-01 16:00", periods=192, freq="5min", tz="UTC")  # crosses midnight
    parts = []
    for i, device in enumerate(["dev-b", "dev-a", "dev-c"]):
        keep = rng.random(len(grid)) > 0.25  # ~25% of rows missing
        keep[:3] = True
        ts = grid[keep]
        x = 50 + 10 * i + rng.normal(0, 5, len(ts))
        y = 1000 + rng.lognormal(0, 1, len(ts))
        x[rng.random(len(ts)) < 0.15] = np.nan
        y[rng.random(len(ts)) < 0.15] = np.nan
        if i == 2:
            x[80:100] = np.nan  # a long all-NaN stretch (> 1 hour): empty windows
        parts.append(pd.DataFrame({"device_id": device, "timestamp": ts, "x": x, "y": y}))
    # a long real gap for dev-a: two hours without rows
    frame = pd.concat(parts, ignore_index=True)
    hole = (frame["device_id"] == "dev-a") & frame["timestamp"].between(
        pd.Timestamp("2026-11-01 23:00", tz="UTC"), pd.Timestamp("2026-11-02 01:00", tz="UTC")
    )
    return frame.loc[~hole].sample(frac=1.0, random_state=1).reset_index(drop=True)


def _compare_with_pandas(frame: pd.DataFrame, window: str, metric: str, rows: str) -> None:
    """Rolling dev/std of ``metric`` against pandas ``groupby("device_id").rolling(window)``.

    rows="all" compares every row; rows="after_first_window" only rows at least ``window`` after
    the frame's first timestamp (rows whose window cannot reach before the frame starts).
    """
    spec = FeatureSpec(metrics=("x", "y"), cohort_columns=(), windows=(window,))
    features = build_device_features(frame, spec)

    ordered = frame.sort_values(["device_id", "timestamp"]).set_index("timestamp")
    rolling = ordered.groupby("device_id")[metric].rolling(window)
    ref_mean = rolling.mean().to_numpy()
    ref_std = rolling.std().to_numpy()  # ddof=1
    values = ordered[metric].to_numpy()
    np.testing.assert_array_equal(features["timestamp"].to_numpy(), ordered.index.to_numpy())

    keep = np.ones(len(frame), dtype=bool)
    if rows == "after_first_window":
        keep = (features["timestamp"] >= frame["timestamp"].min() + pd.Timedelta(window)).to_numpy()
        assert 0.5 * len(frame) < keep.sum() < len(frame)
    dev = features[f"{metric}__dev_{window}"].to_numpy()[keep]
    std = features[f"{metric}__std_{window}"].to_numpy()[keep]
    ref_mean, ref_std, values = ref_mean[keep], ref_std[keep], values[keep]
    assert np.isnan(values).any()  # the compared rows do exercise NaN handling
    if pd.Timedelta(window) <= pd.Timedelta("1h") and metric == "x":
        assert np.isnan(ref_mean).any()  # ... including windows without any value

    np.testing.assert_array_equal(np.isnan(std), np.isnan(ref_std), err_msg="NaN positions of std")
    np.testing.assert_allclose(std, ref_std, rtol=1e-7, atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(np.isnan(dev), np.isnan(values - ref_mean), err_msg="NaN positions of dev")
    np.testing.assert_allclose(dev, values - ref_mean, rtol=1e-7, atol=1e-6, equal_nan=True)
    # the rolling mean itself, recovered where the value is present
    present = ~np.isnan(values)
    np.testing.assert_allclose((values - dev)[present], ref_mean[present], rtol=1e-9)


@pytest.mark.parametrize("window", ["1h", "6h", "25min"])
@pytest.mark.parametrize("metric", ["x", "y"])
def test_rolling_mean_std_match_pandas(gappy_frame, window, metric):
    _compare_with_pandas(gappy_frame, window, metric, rows="after_first_window")


@pytest.mark.parametrize("window", ["1h", "6h"])
def test_rolling_mean_std_match_pandas_on_every_row(gappy_frame, window):
    for metric in ("x", "y"):
        _compare_with_pandas(gappy_frame, window, metric, rows="all")


def test_rolling_windows_do_not_leak_across_devices():
    ts = pd.to_datetime(["2026-11-01 00:00", "2026-11-01 00:05"], utc=True)
    frame = pd.DataFrame({"device_id": ["a", "b"], "timestamp": [ts[1], ts[0]], "m": [100.0, 0.0]})
    features = build_device_features(frame, FeatureSpec(metrics=("m",), cohort_columns=(), windows=("1h",)))
    b = features.loc[features["device_id"] == "b"].iloc[0]
    assert b["m__dev_1h"] == 0.0  # got -50.0: a's row at 00:05 is inside b's window (23:00, 00:00]
    assert np.isnan(b["m__std_1h"])  # got 70.7


def test_rolling_window_is_time_based_not_row_based():
    ts = pd.to_datetime(["2026-11-01 00:00", "2026-11-01 00:30", "2026-11-01 01:00", "2026-11-01 03:00"], utc=True)
    frame = pd.DataFrame({"device_id": "d", "timestamp": ts, "m": [1.0, 2.0, 4.0, 8.0]})
    features = build_device_features(frame, FeatureSpec(metrics=("m",), cohort_columns=(), windows=("1h",)))
    # (t - 1h, t]: at 01:00 the 00:00 row is excluded -> mean(2, 4) = 3; at 03:00 only itself.
    np.testing.assert_allclose(features["m__dev_1h"], [0.0, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(features["m__std_1h"], [np.nan, np.std([1, 2], ddof=1), np.std([2, 4], ddof=1), np.nan])
    np.testing.assert_allclose(features["m__delta"], [np.nan, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(features["gap_minutes"], [np.nan, 30.0, 30.0, 120.0])


# --- stuck sensors, deltas, gaps, time features -----------------------------------------------


def test_stuck_stretch_gives_std_exactly_zero():
    rng = np.random.default_rng(5)
    ts = pd.date_range("2026-11-01", periods=60, freq="5min", tz="UTC")
    values = 40 + rng.normal(0, 3, 60)
    values[20:45] = 57.3127  # stuck for 25 samples (> 1 hour), not exactly representable in binary
    frame = pd.DataFrame({"device_id": "dev-1", "timestamp": ts, "m": values})
    features = build_device_features(frame, FeatureSpec(metrics=("m",), cohort_columns=(), windows=("1h",)))
    std = features["m__std_1h"].to_numpy()
    dev = features["m__dev_1h"].to_numpy()
    # Rows 32..44: the whole (t - 1h, t] window (12 samples) lies inside the stuck stretch.
    fully_stuck = slice(32, 45)
    assert (std[fully_stuck] == 0.0).all(), std[fully_stuck]
    np.testing.assert_allclose(dev[fully_stuck], 0.0, atol=1e-9)
    assert (features["m__delta"].to_numpy()[21:45] == 0.0).all()
    # Windows overlapping the stuck stretch only partly still have spread.
    assert (std[21:31] > 0).all()
    assert (std[46:] > 0).all()


def test_stuck_stretch_std_zero_next_to_other_devices():
    """A busy device earlier in the frame must not leave prefix-sum noise in a flat window."""
    rng = np.random.default_rng(0)
    ts = pd.date_range("2026-11-01", periods=2000, freq="5min", tz="UTC")
    busy = pd.DataFrame({"device_id": "a", "timestamp": ts, "m": rng.uniform(0, 1e4, 2000)})
    stuck = pd.DataFrame({"device_id": "b", "timestamp": ts[:24], "m": round(busy["m"].mean(), 1)})
    spec = FeatureSpec(metrics=("m",), cohort_columns=(), windows=("1h",))
    alone = build_device_features(stuck, spec)["m__std_1h"].to_numpy()[12:]
    assert (alone == 0.0).all()
    features = build_device_features(pd.concat([busy, stuck]), spec)
    together = features.loc[features["device_id"] == "b", "m__std_1h"].to_numpy()[12:]
    assert (together == 0.0).all(), together


def test_stuck_stretch_std_zero_in_a_large_frame():
    n = 600_000
    rng = np.random.default_rng(0)
    ts = pd.date_range("2026-11-01", periods=n, freq="5min", tz="UTC")
    busy = pd.DataFrame({"device_id": "a", "timestamp": ts, "m": np.round(rng.uniform(0, 100, n), 4)})
    pinned = pd.DataFrame({"device_id": "b", "timestamp": ts[:24], "m": 100.0})
    spec = FeatureSpec(metrics=("m",), cohort_columns=(), windows=("1h",))
    features = build_device_features(pd.concat([busy, pinned]), spec)
    std = features.loc[features["device_id"] == "b", "m__std_1h"].to_numpy()[12:]
    assert (std == 0.0).all(), std  # fails: ~1.65e-4


def test_day_by_day_equals_concatenated_on_a_full_size_fleet():
    config = FleetConfig(n_devices=200, seed=7)
    days = _days(config, 3)
    telemetry = generate_days(config, days)
    day_start = pd.Timestamp(days[2], tz="UTC")
    everything = build_device_features(telemetry, SPEC)
    expected = everything.loc[everything["timestamp"] >= day_start].reset_index(drop=True)
    partitioned = build_device_features(
        telemetry.loc[telemetry["timestamp"] >= pd.Timestamp(days[1], tz="UTC")], SPEC, keep_from=day_start
    )
    assert_features_close(partitioned, expected, SPEC.device_feature_columns())


def test_delta_and_gap_are_nan_on_each_devices_first_row(gappy_frame):
    spec = FeatureSpec(metrics=("x", "y"), cohort_columns=(), windows=("1h",))
    features = build_device_features(gappy_frame, spec)
    first = ~features["device_id"].duplicated()
    assert first.sum() == 3
    for column in ("x__delta", "y__delta", "gap_minutes"):
        assert features.loc[first, column].isna().all(), column
    # Every later row has a gap; deltas are present whenever both values are.
    later = features.loc[~first]
    assert later["gap_minutes"].notna().all()
    assert (later["gap_minutes"] >= 5).all() and (later["gap_minutes"] % 5 == 0).all()
    assert later["gap_minutes"].max() >= 120  # the two-hour hole of dev-a
    # delta matches a per-device diff
    ref_delta = gappy_frame.sort_values(["device_id", "timestamp"]).groupby("device_id")["x"].diff().to_numpy()
    np.testing.assert_allclose(features["x__delta"].to_numpy(), ref_delta, equal_nan=True)
    ref_gap = (
        gappy_frame.sort_values(["device_id", "timestamp"]).groupby("device_id")["timestamp"].diff().dt.total_seconds()
        / 60
    ).to_numpy()
    np.testing.assert_allclose(features["gap_minutes"].to_numpy(), ref_gap, equal_nan=True)


def test_time_features(gappy_frame):
    spec = FeatureSpec(metrics=("x", "y"), cohort_columns=(), windows=("1h",))
    features = build_device_features(gappy_frame, spec)
    hour = features["timestamp"].dt.hour + features["timestamp"].dt.minute / 60
    np.testing.assert_allclose(features["hour_sin"], np.sin(2 * np.pi * hour / 24), atol=1e-12)
    np.testing.assert_allclose(features["hour_cos"], np.cos(2 * np.pi * hour / 24), atol=1e-12)
    ordered = gappy_frame.sort_values(["device_id", "timestamp"])
    np.testing.assert_array_equal(features["missing_metrics"], ordered[["x", "y"]].isna().sum(axis=1).to_numpy())
    assert set(TIME_FEATURES) <= set(features.columns)


# --- the spec --------------------------------------------------------------------------------


def test_spec_hash_is_stable_and_tracks_windows_and_metrics():
    base = FeatureSpec(metrics=("a", "b"), cohort_columns=("model",), windows=("1h", "6h"))
    assert base.hash == FeatureSpec(metrics=("a", "b"), cohort_columns=("model",), windows=("1h", "6h")).hash
    assert len(base.hash) == 16
    assert base.hash != FeatureSpec(metrics=("a", "b"), cohort_columns=("model",), windows=("1h", "12h")).hash
    assert base.hash != FeatureSpec(metrics=("a", "b"), cohort_columns=("model",), windows=("1h",)).hash
    assert base.hash != FeatureSpec(metrics=("a",), cohort_columns=("model",), windows=("1h", "6h")).hash
    assert base.hash != FeatureSpec(metrics=("a", "b"), cohort_columns=(), windows=("1h", "6h")).hash
    # label columns are not features: they do not change the hash
    labelled = FeatureSpec(metrics=("a", "b"), cohort_columns=("model",), windows=("1h", "6h"), label_columns=("y",))
    assert base.hash == labelled.hash


def test_spec_round_trips_through_dict():
    assert FeatureSpec.from_dict(SPEC.to_dict()) == SPEC
    assert FeatureSpec.from_dict(SPEC.to_dict()).hash == SPEC.hash


def test_device_feature_columns():
    spec = FeatureSpec(metrics=("a", "b"), cohort_columns=(), windows=("1h", "6h"))
    columns = spec.device_feature_columns()
    assert columns[:6] == ["a", "a__delta", "a__dev_1h", "a__std_1h", "a__dev_6h", "a__std_6h"]
    assert len(columns) == 2 * 6 + len(TIME_FEATURES)
    assert len(set(columns)) == len(columns)


@pytest.mark.parametrize("windows", [("25h",), ("1h", "2D"), ("1441min",)])
def test_windows_over_one_day_raise(windows):
    with pytest.raises(ValueError, match="lookback"):
        FeatureSpec(metrics=("a",), cohort_columns=(), windows=windows)


def test_one_day_window_is_allowed_and_no_metrics_raise():
    assert FeatureSpec(metrics=("a",), cohort_columns=(), windows=("1D",)).windows == ("1D",)
    with pytest.raises(ValueError):
        FeatureSpec(metrics=(), cohort_columns=())
