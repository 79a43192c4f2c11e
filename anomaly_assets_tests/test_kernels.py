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
