"""Unit tests for the fleet anomaly detector (core.detector, core.metrics).

One synthetic fleet (200 devices, 10 days, seed 7) is generated and one model trained per module:
cohort stats, baselines and the forest see days 1-7 only; days 8-10 are scored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core.baselines import fit_baselines
from anomaly_assets.core.cohorts import FLEET, cohort_keys, fit_cohort_stats  # noqa: F401  (FLEET is used in a query string)
from anomaly_assets.core.detector import (
    SCORED_COLUMNS,
    DetectorConfig,
    choose_threshold,
    split_by_time,
    train_detector,
)
from anomaly_assets.core.features import FeatureSpec, build_device_features
from anomaly_assets.core.generator import COHORT_COLUMNS, LABEL_COLUMNS, METRICS, FleetConfig, generate_days
from anomaly_assets.core.metrics import auc_by_anomaly_type, classification_metrics

CONFIG = FleetConfig(n_devices=200, seed=7)
DAYS = [CONFIG.start_date + dt.timedelta(days=d) for d in range(10)]  # days 1..10
TRAIN_END = pd.Timestamp(DAYS[7], tz="UTC")  # first scored day (day 8)
SPEC = FeatureSpec(metrics=METRICS, cohort_columns=COHORT_COLUMNS, label_columns=LABEL_COLUMNS)


@pytest.fixture(scope="module")
def fleet() -> types.SimpleNamespace:
    telemetry = generate_days(CONFIG, DAYS)
    training_telemetry = telemetry.loc[telemetry["timestamp"] < TRAIN_END]
    train_features = build_device_features(training_telemetry, SPEC)
    # Scored days with the previous day as lookback, as the pipeline builds them.
    lookback_start = TRAIN_END - pd.Timedelta(days=1)
    scored_features = build_device_features(
        telemetry.loc[telemetry["timestamp"] >= lookback_start], SPEC, keep_from=TRAIN_END
    )
    cohort_stats = fit_cohort_stats(train_features, SPEC.metrics, SPEC.cohort_columns)
    baselines = fit_baselines(train_features, SPEC.metrics, SPEC.cohort_columns)
    model, metrics = train_detector(train_features, cohort_stats, baselines, SPEC)
    scored = model.score(scored_features)
    aucs = auc_by_anomaly_type(scored_features["anomaly_type"], scored["score"].to_numpy())
    print(f"\nAUC-ROC by anomaly type on scored days 8-10: {aucs}")
    print(f"validation metrics: {metrics}")
    return types.SimpleNamespace(
        train_features=train_features,
        scored_features=scored_features,
        cohort_stats=cohort_stats,
        baselines=baselines,
        model=model,
        metrics=metrics,
        scored=scored,
        aucs=aucs,
    )


# --- detection quality -------------------------------------------------------------------------


def test_auc_roc_for_spikes_and_level_shifts(fleet):
    aucs = fleet.aucs
    assert {"spike", "level_shift"} <= set(aucs), aucs
    assert aucs["spike"] >= 0.9, aucs
    assert aucs["level_shift"] >= 0.9, aucs


def test_overall_detection_beats_chance_and_labels_are_on_scored_days(fleet):
    features = fleet.scored_features
    assert features["timestamp"].min() == TRAIN_END
    assert features["timestamp"].dt.date.nunique() == 3
    # The cohort regression (day 9) falls inside the scored days.
    assert (features["anomaly_type"] == "cohort_regression").any()
    overall = classification_metrics(
        features["is_injected_anomaly"].to_numpy(), fleet.scored["score"].to_numpy(), fleet.model.threshold
    )
    assert overall["auc_roc"] > 0.8, overall
    assert overall["recall"] > 0.2 and overall["precision"] > 0.1, overall
    assert fleet.aucs["cohort_regression"] > 0.9, fleet.aucs


def test_model_never_saw_the_scored_days(fleet):
    summary = fleet.model.training_summary
    assert pd.Timestamp(summary["validation_end"]) < TRAIN_END
    assert pd.Timestamp(summary["fit_start"]) == pd.Timestamp(DAYS[0], tz="UTC")
    assert fleet.metrics["fit_rows"] + fleet.metrics["validation_rows"] == len(fleet.train_features)
    fleet_cpu = fleet.model.cohort_stats.query("cohort == @FLEET and metric == 'cpu_util_pct'")
    assert fleet_cpu["count"].sum() == len(fleet.train_features)
    # Labels are never model inputs.
    for column in fleet.model.feature_columns:
        assert "anomaly" not in column
    assert all(c.rpartition("__")[2] in ("cohort_z", "baseline_exceed", "dev_1h", "std_1h") or c in (
        "missing_metrics",
        "gap_minutes",
    ) for c in fleet.model.feature_columns)


def test_scores_do_not_depend_on_label_columns(fleet):
    sample = fleet.scored_features.iloc[::50]
    with_labels = fleet.model.score(sample)
    without_labels = fleet.model.score(sample.drop(columns=list(LABEL_COLUMNS)))
    pd.testing.assert_frame_equal(with_labels, without_labels)


# --- split and threshold ------------------------------------------------------------------------


@pytest.mark.parametrize("validation_days", [1, 2, 3])
def test_split_by_time_keeps_validation_strictly_after_fit(fleet, validation_days):
    features = fleet.train_features
    fit, validation = split_by_time(features, validation_days)
    assert len(fit) + len(validation) == len(features)
    assert fit.index.intersection(validation.index).empty
    assert fit["timestamp"].max() < validation["timestamp"].min()
    expected_days = sorted(features["timestamp"].dt.date.unique())[-validation_days:]
    assert sorted(validation["timestamp"].dt.date.unique()) == expected_days
    assert validation["timestamp"].min() == pd.Timestamp(expected_days[0], tz="UTC")


def test_split_by_time_needs_more_days_than_validation(fleet):
    two_days = fleet.train_features.loc[fleet.train_features["timestamp"] < pd.Timestamp(DAYS[2], tz="UTC")]
    split_by_time(two_days, 1)
    with pytest.raises(ValueError, match="validation_days"):
        split_by_time(two_days, 2)


def _best_f1_by_brute_force(scores: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """Best F1 over every cut "flag scores >= s" (s any distinct score) and the smallest flagged
    count reaching it, counted per distinct score value."""
    distinct, inverse = np.unique(scores, return_inverse=True)
    per_value = np.bincount(inverse, minlength=len(distinct))[::-1]  # highest score first
    positives_per_value = np.bincount(inverse, weights=labels.astype(float), minlength=len(distinct))[::-1]
    flagged = np.cumsum(per_value)
    true_positives = np.cumsum(positives_per_value)
    f1 = 2 * true_positives / (flagged + labels.sum())
    best = int(np.argmax(f1))
    return float(f1[best]), int(flagged[best])


def test_choose_threshold_with_labels_reproduces_best_f1_count():
    rng = np.random.default_rng(0)
    labels = rng.random(400) < 0.1
    scores = np.round(rng.normal(0, 1, 400) + 1.5 * labels, 1)  # coarse: many ties
    best_f1, best_count = _best_f1_by_brute_force(scores, labels)
    threshold = choose_threshold(scores, labels, target_alert_rate=0.01)
    assert (scores > threshold).sum() == best_count
    assert classification_metrics(labels, scores, threshold)["f1"] == pytest.approx(best_f1, abs=1e-12)
    assert best_count != round(0.01 * len(scores))  # labels, not the alert rate, decided


def test_model_threshold_is_the_validation_best_f1(fleet):
    model = fleet.model
    _, validation = split_by_time(fleet.train_features, DetectorConfig().validation_days)
    scores = model.raw_scores(model.model_matrix(validation))
    labels = validation["is_injected_anomaly"].to_numpy()
    best_f1, best_count = _best_f1_by_brute_force(scores, labels)
    assert (scores > model.threshold).sum() == best_count
    assert fleet.metrics["f1"] == pytest.approx(best_f1, abs=1e-12)
    assert fleet.metrics["validation_alert_rate"] == pytest.approx(best_count / len(scores))
    assert model.score_reference == pytest.approx(np.median(scores))


def test_choose_threshold_without_labels_flags_target_rate():
    scores = np.random.default_rng(1).random(10_000)
    for rate in (0.01, 0.05):
        threshold = choose_threshold(scores, None, rate)
        assert abs((scores > threshold).sum() - rate * len(scores)) <= 1
    # One-class labels cannot pick a best F1: the alert rate decides.
    assert choose_threshold(scores, np.zeros(len(scores), dtype=bool), 0.01) == choose_threshold(scores, None, 0.01)


def test_unlabelled_training_flags_target_alert_rate(fleet):
    config = DetectorConfig(n_estimators=40, target_alert_rate=0.02)
    model, metrics = train_detector(
        fleet.train_features, fleet.cohort_stats, fleet.baselines, SPEC, config, label_column=None
    )
    assert "f1" not in metrics and "auc_roc" not in metrics
    assert metrics["validation_alert_rate"] == pytest.approx(0.02, abs=0.001)
    # and the scored days are flagged at a comparable rate (no drift in the synthetic fleet beyond faults)
    rate = model.score(fleet.scored_features.iloc[::5])["is_anomaly"].mean()
    assert 0.005 < rate < 0.1


# --- scoring ------------------------------------------------------------------------------------


def test_scoring_is_deterministic(fleet):
    sample = fleet.scored_features.iloc[::7]
    first = fleet.model.score(sample)
    second = fleet.model.score(sample.copy())
    pd.testing.assert_frame_equal(first, second)
    # Row order does not change any row's result.
    shuffled = fleet.model.score(sample.sample(frac=1.0, random_state=3))
    key = ["device_id", "timestamp"]
    pd.testing.assert_frame_equal(
        shuffled.sort_values(key).reset_index(drop=True), first.sort_values(key).reset_index(drop=True)
    )


def test_model_tables_are_built_once_per_fitted_frame(fleet):
    """The cohort and baseline tables are kept per fitted frame: the same matrix as the frame
    path, and another frame (a model with other stats) gets its own tables."""
    from anomaly_assets.core.detector import _model_frame

    model, sample = fleet.model, fleet.scored_features.iloc[::11]
    frame = _model_frame(sample, model.spec, model.cohort_stats, model.baselines)[model.feature_columns].to_numpy()
    expected = np.where(np.isnan(frame), model.medians[None, :], frame)
    for _ in range(2):  # built, then reused
        np.testing.assert_array_equal(model.model_matrix(sample), expected)
    shifted = dataclasses.replace(model, cohort_stats=model.cohort_stats.assign(mean=model.cohort_stats["mean"] + 1.0))
    frame = _model_frame(sample, model.spec, shifted.cohort_stats, model.baselines)[model.feature_columns].to_numpy()
    expected_shifted = np.where(np.isnan(frame), model.medians[None, :], frame)
    np.testing.assert_array_equal(shifted.model_matrix(sample), expected_shifted)
    assert not np.array_equal(shifted.model_matrix(sample), expected)


def test_training_is_deterministic(fleet):
    config = DetectorConfig(n_estimators=40)
    one_week = fleet.train_features.loc[fleet.train_features["timestamp"] >= pd.Timestamp(DAYS[4], tz="UTC")]
    a, metrics_a = train_detector(one_week, fleet.cohort_stats, fleet.baselines, SPEC, config)
    b, metrics_b = train_detector(one_week, fleet.cohort_stats, fleet.baselines, SPEC, config)
    assert a.threshold == b.threshold
    assert metrics_a == metrics_b
    sample = fleet.scored_features.iloc[::97]
    pd.testing.assert_frame_equal(a.score(sample), b.score(sample))
    other, _ = train_detector(
        one_week, fleet.cohort_stats, fleet.baselines, SPEC, dataclasses.replace(config, random_state=1)
    )
    assert not np.array_equal(other.score(sample)["score"], a.score(sample)["score"])


def test_severity_is_monotone_and_50_at_threshold(fleet):
    model, scored = fleet.model, fleet.scored
    assert model.threshold > model.score_reference
    assert model.severity(np.array([model.threshold]))[0] == 50.0
    assert model.severity(np.array([model.score_reference]))[0] == 0.0
    grid = np.linspace(scored["score"].min() - 0.1, scored["score"].max() + 0.1, 2001)
    severity = model.severity(grid)
    assert (np.diff(severity) >= 0).all()
    assert severity.min() == 0.0 and severity.max() <= 100.0
    ordered = scored.sort_values("score", kind="stable")
    assert (np.diff(ordered["severity"].to_numpy()) >= 0).all()
    assert (scored.loc[scored["is_anomaly"], "severity"] >= 50).all()
    assert (scored.loc[~scored["is_anomaly"], "severity"] <= 50).all()
    assert scored["severity"].between(0, 100).all()


def test_top_features_are_model_features_ranked_by_robust_z(fleet):
    model, scored = fleet.model, fleet.scored
    tops = scored[["top_feature_1", "top_feature_2", "top_feature_3"]]
    assert tops.isin(model.feature_columns).all().all()
    names = tops.to_numpy()
    assert ((names[:, 0] != names[:, 1]) & (names[:, 0] != names[:, 2]) & (names[:, 1] != names[:, 2])).all()
    # Spot check against a direct computation.
    sample = fleet.scored_features.iloc[::1000]
    matrix = model.model_matrix(sample)
    z = np.abs((matrix - model.medians) / model.scales)
    expected = np.asarray(model.feature_columns)[np.argsort(-z, axis=1, kind="stable")[:, :3]]
    got = model.score(sample)[["top_feature_1", "top_feature_2", "top_feature_3"]].to_numpy()
    # ties aside, the names agree; the first name always has the largest z
    top1 = [model.feature_columns.index(name) for name in got[:, 0]]
    np.testing.assert_allclose(z[np.arange(len(z)), top1], z.max(axis=1))
    assert (got == expected).mean() > 0.95


def test_score_output_layout(fleet):
    scored, features, model = fleet.scored, fleet.scored_features, fleet.model
    assert list(scored.columns) == list(SCORED_COLUMNS)
    assert len(scored) == len(features)
    np.testing.assert_array_equal(scored["device_id"].to_numpy(), features["device_id"].to_numpy())
    pd.testing.assert_series_equal(scored["timestamp"], features["timestamp"], check_names=False)
    assert str(scored["timestamp"].dt.tz) == "UTC"
    np.testing.assert_array_equal(scored["cohort"].to_numpy(), cohort_keys(features, COHORT_COLUMNS).to_numpy())
    np.testing.assert_array_equal(scored["is_anomaly"].to_numpy(), scored["score"].to_numpy() > model.threshold)
    assert scored["is_anomaly"].dtype == bool
    assert scored["score"].between(0, 1).all()
    assert 0.001 < scored["is_anomaly"].mean() < 0.2


def test_compiled_model_matrix_equals_the_pandas_frame_path(fleet):
    """``model_matrix`` writes the forest's input directly; the pandas way (cohort and baseline
    frames concatenated, columns selected, NaN imputed) gives the same numbers (the benchmark's
    naive reference uses it)."""
    from anomaly_assets.core.detector import _model_frame

    model, features = fleet.model, fleet.scored_features
    values = _model_frame(features, model.spec, model.cohort_stats, model.baselines)[model.feature_columns]
    expected = np.where(np.isnan(values.to_numpy(dtype=np.float64)), model.medians[None, :], values.to_numpy(dtype=np.float64))
    np.testing.assert_allclose(model.model_matrix(features), expected, rtol=1e-12, atol=1e-12)
