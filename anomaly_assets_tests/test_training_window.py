"""Training in bounded memory: the window read in chunks of whole devices, cohort stats added up
exactly, a fitting sample stratified by cohort and day, evaluation on a sample of devices."""

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core import generator
from anomaly_assets.core.baselines import fit_baselines
from anomaly_assets.core.cohorts import CohortStatsAccumulator, cohort_keys, fit_cohort_stats
from anomaly_assets.core.detector import DetectorConfig, fit_chunks, fit_slice, fitting_sample, train_window
from anomaly_assets.core.features import FeatureSpec, build_device_features
from anomaly_assets.core.training_window import SamplePlan, TrainingWindow

SPEC = FeatureSpec(generator.METRICS, generator.COHORT_COLUMNS, label_columns=generator.LABEL_COLUMNS)


@pytest.fixture(scope="module")
def window_frame() -> pd.DataFrame:
    """30 devices, 7 days: 5 fitting days, a validation day and a held-out day."""
    raw = generator.generate_days(
        generator.FleetConfig(n_devices=30, seed=11), [dt.date(2026, 11, 1) + dt.timedelta(days=d) for d in range(7)]
    )
    return build_device_features(raw, SPEC).sort_values(["device_id", "timestamp"], ignore_index=True)


def in_chunks(frame: pd.DataFrame, chunks: int) -> TrainingWindow:
    """The window as ``chunks`` chunks of whole devices, as the training assets read it."""
    groups = np.array_split(np.array(sorted(frame["device_id"].unique())), chunks)
    return TrainingWindow(
        lambda columns, days: [(frame if columns is None else frame[list(columns)]).loc[frame["device_id"].isin(g)] for g in groups]
    )


def fitted_tables(frame: pd.DataFrame):
    rows = fit_slice(frame)
    return fit_cohort_stats(rows, SPEC.metrics, SPEC.cohort_columns), fit_baselines(rows, SPEC.metrics, SPEC.cohort_columns)


def test_cohort_stats_added_up_in_chunks_equal_one_pass(window_frame):
    whole = fit_cohort_stats(fit_slice(window_frame), SPEC.metrics, SPEC.cohort_columns)
    accumulator = CohortStatsAccumulator(SPEC.metrics, SPEC.cohort_columns)
    for rows in fit_chunks(in_chunks(window_frame, 30)):
        accumulator.add(rows)
    chunked = accumulator.result()
    assert len(whole) == 24 * len(SPEC.metrics) * (window_frame[list(SPEC.cohort_columns)].drop_duplicates().shape[0] + 1)
    pd.testing.assert_frame_equal(chunked, whole, check_exact=False, rtol=1e-10, atol=1e-10)
    # a run shorter than two days: one all-day value per cohort, the same in every hour
    short = window_frame.loc[window_frame["timestamp"] < window_frame["timestamp"].min() + pd.Timedelta(hours=30)]
    accumulator = CohortStatsAccumulator(SPEC.metrics, SPEC.cohort_columns)
    for part in np.array_split(np.arange(len(short)), 9):
        accumulator.add(short.iloc[part])
    flat = accumulator.result()
    pd.testing.assert_frame_equal(flat, fit_cohort_stats(short, SPEC.metrics, SPEC.cohort_columns), check_exact=False, rtol=1e-10)
    assert flat.groupby(["cohort", "metric"])["mean"].nunique().max() == 1


def test_training_in_chunks_of_one_device_gives_the_same_model(window_frame):
    stats, baselines = fitted_tables(window_frame)
    whole = train_window(TrainingWindow.of_frame(window_frame), stats, baselines, SPEC)
    chunked = train_window(in_chunks(window_frame, 30), stats, baselines, SPEC)
    # The same model up to floating-point summation order (sums over chunks on another CPU's
    # vector width may differ in the last bit), nothing more.
    assert chunked.model.threshold == pytest.approx(whole.model.threshold, rel=1e-12, abs=0)
    assert chunked.metrics == pytest.approx(whole.metrics, rel=1e-12, abs=1e-15)
    assert whole.metrics["sample_rows"] == whole.metrics["fit_rows"] == len(fit_slice(window_frame))  # within budget: every row
    scores = [t.model.score(window_frame)["score"].to_numpy() for t in (whole, chunked)]
    np.testing.assert_allclose(scores[1], scores[0], rtol=0, atol=1e-9)
    pd.testing.assert_frame_equal(chunked.report_rows, whole.report_rows)
    assert chunked.report_rows["timestamp"].min() >= pd.Timestamp("2026-11-07", tz="UTC")  # the held-out day


def test_the_fitting_sample_is_bounded_stratified_and_independent_of_chunks(window_frame):
    # One cohort made small: 3 of 30 devices.
    small_devices = sorted(window_frame["device_id"].unique())[:3]
    frame = window_frame.copy()
    frame["manufacturer"] = np.where(frame["device_id"].isin(small_devices), "Tiny", "Big")
    frame["model"], frame["os_version"] = "M", "1"
    config = DetectorConfig(sample_rows=5_000)
    fit_rows = fit_slice(frame)
    whole = fitting_sample(TrainingWindow.of_frame(frame), SPEC.cohort_columns, config)
    chunked = fitting_sample(in_chunks(frame, 7), SPEC.cohort_columns, config)
    pd.testing.assert_frame_equal(chunked, whole)  # each row kept by a hash of its device and time
    assert 0.8 * config.sample_rows <= len(whole) <= 1.5 * config.sample_rows
    strata = cohort_keys(whole, SPEC.cohort_columns) + "@" + whole["timestamp"].dt.strftime("%d")
    counts = strata.value_counts()
    assert len(counts) == 2 * 5  # every (cohort, fitting day)
    # The small cohort (10% of rows) keeps at least an equal share per stratum: about 500 rows a
    # day, not its proportional 50.
    tiny = counts[counts.index.str.startswith("Tiny")]
    assert tiny.min() >= 0.8 * config.sample_rows / (2 * 10), tiny
    share = len(fit_rows.loc[fit_rows["manufacturer"] == "Big"]) / len(fit_rows)
    assert counts[counts.index.str.startswith("Big")].sum() >= 0.8 * share * config.sample_rows
    assert set(whole["device_id"]) == set(frame["device_id"])  # rows of every device, not whole devices
    assert whole.equals(whole.sort_values(["device_id", "timestamp"], ignore_index=True))


def test_sampled_training_stays_close_to_training_on_every_row(window_frame):
    stats, baselines = fitted_tables(window_frame)
    every = train_window(in_chunks(window_frame, 5), stats, baselines, SPEC, DetectorConfig())
    sampled = train_window(in_chunks(window_frame, 5), stats, baselines, SPEC, DetectorConfig(sample_rows=8_000))
    assert sampled.metrics["fit_rows"] == every.metrics["fit_rows"] == len(fit_slice(window_frame))
    assert sampled.metrics["sample_rows"] < 12_000
    assert sampled.plan.sampled and not every.plan.sampled
    # Device norms' device lines see every fitting row in both: identical.
    n = len(every.model.device_norms.devices)
    np.testing.assert_array_equal(sampled.model.device_norms.medians[:n], every.model.device_norms.medians[:n])
    # Quality on the held-out day, measured on the same rows: within a few points.
    assert every.metrics["auc_pr"] > 0.3
    assert sampled.metrics["auc_pr"] >= every.metrics["auc_pr"] - 0.1, (sampled.metrics, every.metrics)
    assert sampled.metrics["alerts_per_device_per_day"] <= 3 * max(every.metrics["alerts_per_device_per_day"], 0.05)


def test_threshold_and_quality_on_a_sample_of_devices(window_frame):
    stats, baselines = fitted_tables(window_frame)
    config = DetectorConfig(evaluation_devices=10)
    trained = train_window(in_chunks(window_frame, 4), stats, baselines, SPEC, config)
    plan = trained.plan
    assert plan.devices == 30 and plan.evaluation_share == pytest.approx(1 / 3)
    evaluated = int(trained.metrics["evaluated_devices"])
    assert 4 <= evaluated <= 18
    assert evaluated * 250 <= trained.metrics["validation_rows"] <= evaluated * 288  # a day of 5-minute rows, a few dropped
    assert set(trained.report_rows["device_id"]) <= set(window_frame["device_id"])
    assert trained.report_rows["device_id"].nunique() == evaluated
    # the same devices whatever the chunking
    again = train_window(in_chunks(window_frame, 9), stats, baselines, SPEC, config)
    assert set(again.report_rows["device_id"]) == set(trained.report_rows["device_id"])


def test_a_window_without_a_validation_day_or_fitting_rows_is_refused(window_frame):
    stats, baselines = fitted_tables(window_frame)
    one_row_per_device = window_frame.groupby("device_id").head(1)
    with pytest.raises(ValueError, match="no rows to fit on or none to choose the threshold on"):
        train_window(TrainingWindow.of_frame(one_row_per_device), stats, baselines, SPEC)
    config = dataclasses.replace(DetectorConfig(), validation_share=0.9, holdout_share=0.2)
    with pytest.raises(ValueError, match="validation_share and holdout_share"):
        SamplePlan.build(TrainingWindow.of_frame(window_frame.iloc[:500]), SPEC.cohort_columns, config)
