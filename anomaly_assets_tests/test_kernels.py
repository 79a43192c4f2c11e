"""Compiled hot-path loops equal their numpy definitions."""

from __future__ import annotations

import numpy as np

from anomaly_assets.core import kernels


def test_top_k_matches_the_stable_numpy_definition_including_ties():
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(5_000, 46))
    matrix[:50] = 0.0  # all features tie: the first columns win
    matrix[50:60, 7] = matrix[50:60, 9] = 100.0  # a two-way tie for first place
    medians, scales = rng.normal(size=46) * 0, rng.uniform(0.5, 2.0, 46)
    scales[9] = scales[7]
    compiled = kernels.top_k_abs_z(matrix, medians, scales, 3)
    np.testing.assert_array_equal(compiled, kernels._top_k_abs_z_numpy(matrix, medians, scales, 3))
    assert compiled[0].tolist() == [0, 1, 2]
    assert compiled[55, :2].tolist() == [7, 9]


def test_k_larger_than_the_number_of_features_is_clipped():
    assert kernels.top_k_abs_z(np.ones((2, 2)), np.zeros(2), np.ones(2), 3).shape == (2, 2)


def test_features_without_numba_equal_the_compiled_path(monkeypatch):
    import datetime as dt

    import pandas as pd

    from anomaly_assets.core import generator
    from anomaly_assets.core.features import FeatureSpec, build_device_features

    config = generator.FleetConfig(n_devices=20)
    raw = generator.generate_days(config, [dt.date(2026, 11, 8), dt.date(2026, 11, 9)])
    spec = FeatureSpec(generator.METRICS, generator.COHORT_COLUMNS)
    keep_from = pd.Timestamp("2026-11-09", tz="UTC")
    compiled = build_device_features(raw, spec, keep_from=keep_from)
    monkeypatch.setattr(kernels, "_metric_features_compiled", None)
    fallback = build_device_features(raw, spec, keep_from=keep_from)
    columns = spec.device_feature_columns()
    np.testing.assert_allclose(fallback[columns], compiled[columns], rtol=1e-7, atol=1e-6)
    pd.testing.assert_frame_equal(fallback.drop(columns=columns), compiled.drop(columns=columns))


def test_top_3_loop_equals_the_general_loop_with_nan_and_ties():
    rng = np.random.default_rng(2)
    matrix = rng.normal(size=(3_000, 46))
    matrix[:20] = 0.0  # all tie
    matrix[20:40, 5] = matrix[20:40, 8] = matrix[20:40, 30] = 50.0  # a three-way tie
    matrix[40:60, :] = np.nan  # nothing ranks: columns 0, 1, 2 as in the general loop
    matrix[60:80, ::3] = np.nan
    medians, scales = rng.normal(size=46), rng.uniform(0.5, 2.0, 46)
    expected = kernels._top_k_abs_z_loop(matrix, medians, scales, 3)  # plain Python
    np.testing.assert_array_equal(kernels._top_3_abs_z_loop(matrix, medians, scales), expected)
    np.testing.assert_array_equal(kernels.top_k_abs_z(matrix, medians, scales, 3), expected)
    np.testing.assert_array_equal(
        kernels.top_k_abs_z(matrix, medians, scales, 2), kernels._top_k_abs_z_loop(matrix, medians, scales, 2)
    )


def test_bin_counts_equal_searchsorted_with_tied_edges_values_on_edges_and_non_finite():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(20_000, 5))
    values[::7, 0] = np.nan
    values[::11, 1] = np.inf
    values[::13, 2] = -np.inf
    edges = [np.concatenate(([-np.inf], np.quantile(values[:, j][np.isfinite(values[:, j])], np.linspace(0.1, 0.9, 9)), [np.inf])) for j in range(4)]
    edges.append(np.array([-np.inf, 0.0, 0.0, 0.5, np.inf]))  # a tie, and fewer bins than the others
    values[:100, 4] = 0.0  # values exactly on the tied edge fall below it (side="left")
    values[100:200, 3] = edges[3][4]  # and on an ordinary edge
    compiled = [np.zeros(len(e) - 1, dtype=np.int64) for e in edges]
    kernels.add_bin_counts(values, edges, compiled)
    for j, column_edges in enumerate(edges):
        column = values[:, j][np.isfinite(values[:, j])]
        expected = np.bincount(np.searchsorted(column_edges[1:-1], column, side="left"), minlength=len(column_edges) - 1)
        np.testing.assert_array_equal(compiled[j], expected)
    assert compiled[4][0] == (values[:, 4] <= 0.0).sum() and compiled[0].sum() < len(values)
