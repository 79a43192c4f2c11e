"""CompiledForest must reproduce IsolationForest.score_samples (to 1e-9; in practice bit for bit)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import IsolationForest

from anomaly_assets.core import fast_forest
from anomaly_assets.core.fast_forest import CompiledForest

TOL = 1e-9


def _data(rows: int, features: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, features))
    X[: rows // 20] *= 6.0  # some outliers, so that rows end in shallow leaves too
    return X


def _fit(X: np.ndarray, **kwargs) -> IsolationForest:
    params = {"n_estimators": 25, "max_samples": 256, "random_state": 0}
    params.update(kwargs)
    return IsolationForest(**params).fit(X)


def _assert_same(forest: IsolationForest, X, compiled: CompiledForest | None = None, **kwargs) -> np.ndarray:
    compiled = compiled or CompiledForest.from_sklearn(forest)
    got = compiled.score_samples(X, **kwargs)
    want = forest.score_samples(X)
    assert got.shape == want.shape
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    return got


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    return _data(3000, 12, seed=1)


@pytest.fixture(scope="module")
def test_rows() -> np.ndarray:
    return _data(1500, 12, seed=2)


def test_matches_sklearn_on_random_data(train, test_rows):
    forest = _fit(train, n_estimators=40)
    compiled = CompiledForest.from_sklearn(forest)
    assert compiled.layout == "complete"
    _assert_same(forest, test_rows, compiled)
    _assert_same(forest, train[:700], compiled)  # rows the trees were grown on


def test_constant_columns_in_training_data(train, test_rows):
    X = train.copy()
    X[:, 3] = 7.0
    X[:, 8] = 0.0
    forest = _fit(X)
    rows = test_rows.copy()
    rows[::3, 3] = 7.0  # on the constant, and off it
    _assert_same(forest, rows)


def test_all_columns_constant_gives_single_leaf_trees():
    X = np.ones((300, 4))
    forest = _fit(X, n_estimators=5)
    _assert_same(forest, np.vstack([X[:10], np.full((3, 4), 2.0), np.zeros((3, 4))]))


def test_feature_subsampling(train, test_rows):
    forest = _fit(train, max_features=0.5, n_estimators=30)
    assert forest._max_features < train.shape[1]
    _assert_same(forest, test_rows)


@pytest.mark.parametrize("max_features", [0.5, 1.0])
def test_bootstrap(train, test_rows, max_features):
    forest = _fit(train, bootstrap=True, max_features=max_features)
    _assert_same(forest, test_rows)


@pytest.mark.parametrize("max_samples,n_estimators", [(1, 3), (2, 1), (2, 3), (3, 2), (5, 4)])
def test_tiny_forests(train, test_rows, max_samples, n_estimators):
    forest = _fit(train, max_samples=max_samples, n_estimators=n_estimators)
    _assert_same(forest, test_rows)


def test_float32_input(train, test_rows):
    forest = _fit(train)
    _assert_same(forest, test_rows.astype(np.float32))


def test_single_row(train, test_rows):
    forest = _fit(train)
    got = _assert_same(forest, test_rows[:1])
    assert got.shape == (1,)


def test_rows_on_the_thresholds(train):
    """Values equal to a threshold's float32 rounding, and one float32 step either side."""
    forest = _fit(train, n_estimators=20)
    rng = np.random.default_rng(3)
    rows = []
    for est in forest.estimators_:
        tree_ = est.tree_
        inner = np.flatnonzero(tree_.children_left != -1)[:8]
        for node in inner:
            t32 = np.float32(tree_.threshold[node])
            for value in (np.nextafter(t32, np.float32(-np.inf)), t32, np.nextafter(t32, np.float32(np.inf))):
                row = train[rng.integers(len(train))].copy()
                row[tree_.feature[node]] = value
                rows.append(row)
    X = np.asarray(rows)
    _assert_same(forest, X)
    _assert_same(forest, X.astype(np.float32))


def test_non_finite_raises_with_column_index(train, test_rows):
    forest = _fit(train)
    compiled = CompiledForest.from_sklearn(forest)
    X = test_rows.copy()
    X[40, 9] = np.inf
    X[5, 7] = np.nan  # the first one in row order
    with pytest.raises(ValueError, match=r"column 7 \(row 5\)"):
        compiled.score_samples(X)
    X32 = test_rows.astype(np.float32)
    X32[1234, 2] = -np.inf
    with pytest.raises(ValueError, match=r"column 2 \(row 1234\)"):
        compiled.score_samples(X32, chunk_rows=500)  # found in the third chunk


def test_non_finite_raises_in_numpy_fallback(train, test_rows, monkeypatch):
    forest = _fit(train)
    compiled = CompiledForest.from_sklearn(forest)
    monkeypatch.setattr(fast_forest, "_numba", None)
    X = test_rows.copy()
    X[700, 11] = np.nan
    with pytest.raises(ValueError, match=r"column 11 \(row 700\)"):
        compiled.score_samples(X, chunk_rows=256)


def test_pickle_round_trip(train, test_rows):
    forest = _fit(train, max_features=0.5)
    compiled = CompiledForest.from_sklearn(forest)
    restored = pickle.loads(pickle.dumps(compiled))
    np.testing.assert_array_equal(restored.score_samples(test_rows), compiled.score_samples(test_rows))
    np.testing.assert_allclose(restored.score_samples(test_rows), forest.score_samples(test_rows), rtol=0, atol=TOL)


@pytest.mark.parametrize("rows,chunk_rows", [(1000, 1000), (2501, 1000), (1500, 1), (777, 128), (130, 65_536)])
def test_chunk_boundaries(train, rows, chunk_rows):
    forest = _fit(train)
    X = _data(rows, 12, seed=4)
    _assert_same(forest, X, chunk_rows=chunk_rows)


def test_deep_trees_use_compact_layout(train, test_rows):
    forest = _fit(train, max_samples=2048, n_estimators=8)
    compiled = CompiledForest.from_sklearn(forest)
    assert compiled.layout == "compact"
    _assert_same(forest, test_rows, compiled)


@pytest.mark.parametrize("max_features,bootstrap", [(1.0, False), (0.5, True)])
def test_both_layouts_and_numpy_fallback_agree(train, test_rows, monkeypatch, max_features, bootstrap):
    forest = _fit(train, max_features=max_features, bootstrap=bootstrap, n_estimators=15)
    complete = CompiledForest.from_sklearn(forest)
    monkeypatch.setattr(fast_forest, "_MAX_COMPLETE_DEPTH", 0)
    compact = CompiledForest.from_sklearn(forest)
    assert (complete.layout, compact.layout) == ("complete", "compact")
    X = test_rows[:400]
    _assert_same(forest, X, complete)
    _assert_same(forest, X, compact)
    monkeypatch.setattr(fast_forest, "_numba", None)
    _assert_same(forest, X, complete)
    _assert_same(forest, X, compact)


def test_input_layouts_and_dtypes(train, test_rows):
    forest = _fit(train)
    compiled = CompiledForest.from_sklearn(forest)
    ints = np.round(test_rows * 10).astype(np.int64)
    for X in (
        np.asfortranarray(test_rows),
        test_rows[::3],  # strided view
        pd.DataFrame(test_rows, columns=[f"f{i}" for i in range(12)]),
        ints,
        ints.astype(np.float16),
    ):
        got = compiled.score_samples(X)
        np.testing.assert_allclose(got, forest.score_samples(np.asarray(X)), rtol=0, atol=TOL)


def test_rejects_wrong_shapes(train):
    compiled = CompiledForest.from_sklearn(_fit(train, n_estimators=2))
    with pytest.raises(ValueError, match="12"):
        compiled.score_samples(np.zeros((3, 11)))
    with pytest.raises(ValueError, match="2-D"):
        compiled.score_samples(np.zeros(12))
    assert compiled.score_samples(np.zeros((0, 12))).shape == (0,)
    with pytest.raises(TypeError):
        CompiledForest.from_sklearn(object())
