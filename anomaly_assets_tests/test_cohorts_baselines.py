"""Unit tests for cohort statistics and percentile baselines (core.cohorts, core.baselines)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core.baselines import BASELINE_COLUMNS, baseline_exceedance, fit_baselines
from anomaly_assets.core.cohorts import FLEET, COHORT_STATS_COLUMNS, cohort_keys, cohort_z_scores, fit_cohort_stats
from anomaly_assets.core.generator import COHORT_COLUMNS, METRICS, FleetConfig, generate_days

CONFIG = FleetConfig(n_devices=60, seed=3)
DAYS = [CONFIG.start_date + dt.timedelta(days=d) for d in range(8)]  # days 1..8
TRAIN_END = pd.Timestamp(DAYS[7], tz="UTC")  # day 8 starts here: it is the scored day
COHORTS = list(COHORT_COLUMNS)


def training_window(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of days 1..7 only, as the pipeline's training partition mapping hands them over."""
    return frame.loc[frame["timestamp"] < TRAIN_END]


@pytest.fixture(scope="module")
def telemetry() -> pd.DataFrame:
    return generate_days(CONFIG, DAYS)


@pytest.fixture(scope="module")
def training(telemetry) -> pd.DataFrame:
    return training_window(telemetry).reset_index(drop=True)


@pytest.fixture(scope="module")
def stats(training) -> pd.DataFrame:
    return fit_cohort_stats(training, METRICS, COHORTS)


@pytest.fixture(scope="module")
def baselines(training) -> pd.DataFrame:
    return fit_baselines(training, METRICS, COHORTS)


def _tampered(telemetry: pd.DataFrame) -> pd.DataFrame:
    """All 8 days, with day 8's metrics multiplied by 10 (a scored day that must never be seen)."""
    tampered = telemetry.copy()
    day8 = tampered["timestamp"] >= TRAIN_END
    assert day8.sum() > 0
    tampered.loc[day8, list(METRICS)] = tampered.loc[day8, list(METRICS)] * 10 + 1
    return tampered


# --- never fitted on scored days ---------------------------------------------------------------


def test_stats_of_training_window_ignore_changes_to_scored_day(telemetry, stats, baselines):
    tampered = _tampered(telemetry)
    pd.testing.assert_frame_equal(fit_cohort_stats(training_window(tampered), METRICS, COHORTS), stats)
    pd.testing.assert_frame_equal(fit_baselines(training_window(tampered), METRICS, COHORTS), baselines)
    # The check has teeth: had day 8 been passed in, the fitted tables would change.
    leaked_stats = fit_cohort_stats(tampered, METRICS, COHORTS)
    assert not np.allclose(leaked_stats["mean"], stats["mean"], equal_nan=True)
    assert (leaked_stats["count"].to_numpy() > stats["count"].to_numpy()).all()
    leaked_baselines = fit_baselines(tampered, METRICS, COHORTS)
    assert not np.allclose(leaked_baselines["p99"], baselines["p99"], equal_nan=True)


def test_cohort_stats_counts_equal_training_rows_per_cohort_and_hour(training, stats):
    assert list(stats.columns) == list(COHORT_STATS_COLUMNS)
    key = cohort_keys(training, COHORTS)
    hour = training["timestamp"].dt.hour.astype(np.int64)
    # Expected non-missing values per (cohort, hour, metric), computed independently.
    expected = (
        training[list(METRICS)].notna().groupby([key.rename("cohort"), hour.rename("hour")]).sum().stack()
    )
    expected.index.names = ["cohort", "hour", "metric"]
    per_cohort = stats.loc[stats["cohort"] != FLEET].set_index(["cohort", "hour", "metric"])["count"]
    pd.testing.assert_series_equal(
        per_cohort.sort_index().astype(np.int64), expected.sort_index().astype(np.int64), check_names=False
    )
    # Metrics without gaps: count is exactly the number of training rows of that cohort and hour.
    rows = training.groupby([key, hour]).size()
    cpu = stats.loc[(stats["cohort"] != FLEET) & (stats["metric"] == "cpu_util_pct")].set_index(["cohort", "hour"])
    np.testing.assert_array_equal(cpu["count"].sort_index().to_numpy(), rows.sort_index().to_numpy())
    # Fleet rows: every training row of that hour.
    fleet_cpu = stats.loc[(stats["cohort"] == FLEET) & (stats["metric"] == "cpu_util_pct")].set_index("hour")
    np.testing.assert_array_equal(fleet_cpu["count"].sort_index().to_numpy(), hour.value_counts().sort_index().to_numpy())
    assert fleet_cpu["count"].sum() == len(training)
    # 24 hours for every cohort and metric
    assert set(stats["hour"]) == set(range(24))
    assert stats["cohort"].nunique() == key.nunique() + 1


def test_cohort_stats_mean_and_std_match_a_direct_computation(training, stats):
    key = cohort_keys(training, COHORTS)
    cohort = key.value_counts().index[0]
    rows = training.loc[(key == cohort) & (training["timestamp"].dt.hour == 14), "battery_temp_c"]
    row = stats.loc[(stats["cohort"] == cohort) & (stats["hour"] == 14) & (stats["metric"] == "battery_temp_c")]
    assert len(row) == 1
    np.testing.assert_allclose(row["mean"].iloc[0], rows.mean(), rtol=1e-12)
    np.testing.assert_allclose(row["std"].iloc[0], rows.std(ddof=1), rtol=1e-12)
    assert row["count"].iloc[0] == len(rows)


def test_baseline_counts_and_quantiles(training, baselines):
    assert list(baselines.columns) == list(BASELINE_COLUMNS)
    key = cohort_keys(training, COHORTS)
    assert set(baselines["cohort"]) == set(key) | {FLEET}
    assert len(baselines) == (key.nunique() + 1) * len(METRICS)
    table = baselines.set_index(["cohort", "metric"])
    for cohort in key.unique()[:3]:
        rows = training.loc[key == cohort]
        for metric in ("cpu_util_pct", "wifi_rssi_dbm"):
            entry = table.loc[(cohort, metric)]
            values = rows[metric].dropna()
            assert entry["count"] == len(values)
            np.testing.assert_allclose(entry["p01"], values.quantile(0.01), rtol=1e-12)
            np.testing.assert_allclose(entry["p50"], values.quantile(0.5), rtol=1e-12)
            np.testing.assert_allclose(entry["p99"], values.quantile(0.99), rtol=1e-12)
    assert table.loc[(FLEET, "cpu_util_pct"), "count"] == len(training)
    assert (baselines["p01"] <= baselines["p50"]).all() and (baselines["p50"] <= baselines["p99"]).all()


def test_empty_training_window_raises():
    empty = pd.DataFrame(
        {"timestamp": pd.to_datetime([], utc=True), **{c: [] for c in COHORTS}, **{m: [] for m in METRICS}}
    )
    with pytest.raises(ValueError):
        fit_cohort_stats(empty, METRICS, COHORTS)
    with pytest.raises(ValueError):
        fit_baselines(empty, METRICS, COHORTS)


# --- applying the tables at scoring time -------------------------------------------------------


def _row(cohort: tuple[str, str, str], timestamp: str, **values: float) -> pd.DataFrame:
    data = {
        "device_id": ["dev-x"] * len(next(iter(values.values()))),
        "timestamp": pd.to_datetime([timestamp] * len(next(iter(values.values()))), utc=True),
        **{c: [v] * len(next(iter(values.values()))) for c, v in zip(COHORTS, cohort, strict=True)},
    }
    frame = pd.DataFrame(data)
    for metric in METRICS:
        frame[metric] = values.get(metric, [np.nan] * len(frame))
    return frame


def test_cohort_z_score_equals_value_minus_mean_over_std(training, stats):
    cohort = tuple(training.loc[0, COHORTS])
    key = "|".join(cohort)
    entry = stats.loc[(stats["cohort"] == key) & (stats["hour"] == 14) & (stats["metric"] == "cpu_util_pct")].iloc[0]
    values = [entry["mean"], entry["mean"] + 2 * entry["std"], 12.5, 97.0]
    z = cohort_z_scores(_row(cohort, "2026-11-20 14:35", cpu_util_pct=values), stats, METRICS, COHORTS)
    assert list(z.columns) == [f"{m}__cohort_z" for m in METRICS]
    expected = (np.array(values) - entry["mean"]) / entry["std"]
    np.testing.assert_allclose(z["cpu_util_pct__cohort_z"], expected, rtol=1e-12)
    np.testing.assert_allclose(z["cpu_util_pct__cohort_z"].iloc[:2], [0.0, 2.0], atol=1e-12)
    # a missing value stays missing
    assert z["battery_temp_c__cohort_z"].isna().all()
    # a different hour uses that hour's row
    other = stats.loc[(stats["cohort"] == key) & (stats["hour"] == 3) & (stats["metric"] == "cpu_util_pct")].iloc[0]
    z3 = cohort_z_scores(_row(cohort, "2026-11-20 03:00", cpu_util_pct=[50.0]), stats, METRICS, COHORTS)
    np.testing.assert_allclose(z3["cpu_util_pct__cohort_z"], [(50.0 - other["mean"]) / other["std"]], rtol=1e-12)


def test_unknown_cohort_falls_back_to_fleet(stats, baselines):
    unknown = ("Acme", "Rugged 9", "15")
    fleet = stats.loc[(stats["cohort"] == FLEET) & (stats["hour"] == 9) & (stats["metric"] == "memory_used_pct")]
    fleet = fleet.iloc[0]
    z = cohort_z_scores(_row(unknown, "2026-11-20 09:10", memory_used_pct=[80.0]), stats, METRICS, COHORTS)
    np.testing.assert_allclose(z["memory_used_pct__cohort_z"], [(80.0 - fleet["mean"]) / fleet["std"]], rtol=1e-12)

    band = baselines.set_index(["cohort", "metric"]).loc[(FLEET, "memory_used_pct")]
    width = band["p99"] - band["p01"]
    exceed = baseline_exceedance(
        _row(unknown, "2026-11-20 09:10", memory_used_pct=[band["p99"] + width]), baselines, METRICS, COHORTS
    )
    np.testing.assert_allclose(exceed["memory_used_pct__baseline_exceed"], [1.0], rtol=1e-9)


def test_sparse_cohort_hour_falls_back_to_fleet_hour(training, stats):
    cohort = tuple(training.loc[0, COHORTS])
    key = "|".join(cohort)
    sparse = stats.loc[~((stats["cohort"] == key) & (stats["hour"] == 5))]  # the cohort never seen at 05:00
    fleet = stats.loc[(stats["cohort"] == FLEET) & (stats["hour"] == 5) & (stats["metric"] == "cpu_util_pct")].iloc[0]
    own = stats.loc[(stats["cohort"] == key) & (stats["hour"] == 5) & (stats["metric"] == "cpu_util_pct")].iloc[0]
    frame = _row(cohort, "2026-11-20 05:30", cpu_util_pct=[60.0])
    z = cohort_z_scores(frame, sparse, METRICS, COHORTS)["cpu_util_pct__cohort_z"].iloc[0]
    np.testing.assert_allclose(z, (60.0 - fleet["mean"]) / fleet["std"], rtol=1e-12)
    z_own = cohort_z_scores(frame, stats, METRICS, COHORTS)["cpu_util_pct__cohort_z"].iloc[0]
    np.testing.assert_allclose(z_own, (60.0 - own["mean"]) / own["std"], rtol=1e-12)
    assert z != z_own


def test_flat_cohort_std_is_floored_to_stay_finite(training, stats):
    # reboots are almost always 0: some cohort-hours have std 0; z-scores must stay finite
    flat = stats.loc[(stats["metric"] == "reboots") & (stats["std"] == 0) & (stats["cohort"] != FLEET)]
    assert len(flat) > 0
    entry = flat.iloc[0]
    cohort = tuple(entry["cohort"].split("|"))
    z = cohort_z_scores(_row(cohort, f"2026-11-20 {entry['hour']:02d}:00", reboots=[1.0]), stats, METRICS, COHORTS)
    value = z["reboots__cohort_z"].iloc[0]
    assert np.isfinite(value) and value > 0


def test_baseline_exceedance_sign_and_size(training, baselines):
    cohort = tuple(training.loc[0, COHORTS])
    band = baselines.set_index(["cohort", "metric"]).loc[("|".join(cohort), "cpu_util_pct")]
    p01, p50, p99 = band["p01"], band["p50"], band["p99"]
    width = p99 - p01
    assert width > 1
    values = [p01, p50, p99, (p01 + p99) / 2, p99 + 0.5 * width, p99 + 3 * width, p01 - 0.25 * width, p01 - 1e-3]
    exceed = baseline_exceedance(_row(cohort, "2026-11-20 12:00", cpu_util_pct=values), baselines, METRICS, COHORTS)
    assert list(exceed.columns) == [f"{m}__baseline_exceed" for m in METRICS]
    got = exceed["cpu_util_pct__baseline_exceed"].to_numpy()
    np.testing.assert_array_equal(got[:4], 0.0)  # inside [p01, p99], bounds included
    np.testing.assert_allclose(got[4:6], [0.5, 3.0], rtol=1e-9)  # above: positive, in band widths
    np.testing.assert_allclose(got[6], -0.25, rtol=1e-9)  # below: negative
    assert got[7] < 0
    # A missing value is not beyond the band: exceedance 0 (unlike the cohort z-score, which stays NaN).
    np.testing.assert_array_equal(exceed["battery_temp_c__baseline_exceed"], 0.0)


def test_z_scores_and_exceedance_keep_the_input_index(training, stats, baselines):
    sample = training.sample(50, random_state=0)
    z = cohort_z_scores(sample, stats, METRICS, COHORTS)
    e = baseline_exceedance(sample, baselines, METRICS, COHORTS)
    pd.testing.assert_index_equal(z.index, sample.index)
    pd.testing.assert_index_equal(e.index, sample.index)
    # Rows of the training window itself sit mostly inside their cohort's band.
    assert (e[[f"{m}__baseline_exceed" for m in METRICS]].fillna(0) == 0).all(axis=1).mean() > 0.7


def test_cohort_keys():
    frame = pd.DataFrame({"a": ["x", "y"], "b": [13, 14]})
    assert cohort_keys(frame, ["a", "b"]).tolist() == ["x|13", "y|14"]
    assert cohort_keys(frame, []).tolist() == [FLEET, FLEET]


def test_without_cohort_columns_the_fleet_rows_appear_once():
    import datetime as dt

    from anomaly_assets.core import generator
    from anomaly_assets.core.baselines import baseline_exceedance, fit_baselines
    from anomaly_assets.core.cohorts import FLEET, cohort_z_scores, fit_cohort_stats

    frame = generator.generate_day(generator.FleetConfig(n_devices=5), dt.date(2026, 11, 2))
    stats = fit_cohort_stats(frame, ["cpu_util_pct"], [])
    base = fit_baselines(frame, ["cpu_util_pct"], [])
    assert set(stats["cohort"]) == {FLEET} and not stats.duplicated(["cohort", "hour", "metric"]).any()
    assert base["cohort"].tolist() == [FLEET]
    assert cohort_z_scores(frame, stats, ["cpu_util_pct"], []).notna().all().all()
    assert len(baseline_exceedance(frame, base, ["cpu_util_pct"], [])) == len(frame)
