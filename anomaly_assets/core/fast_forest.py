"""Fast, exact scoring for a fitted scikit-learn ``IsolationForest``.

``CompiledForest.from_sklearn(forest).score_samples(X)`` returns the same numbers as
``forest.score_samples(X)`` (identical to the last bit in every measurement; the tests assert
1e-9), several times faster on one core (figures for the detector's forest of 100 trees of 2,048
samples: README, Performance; ``benchmarks/bench_forest.py`` measures it alone). The trees are
flattened into a few plain numpy arrays (so the object pickles cheaply, e.g. inside an MLflow
model) and walked by a small numba kernel.

Why it is exact:

* sklearn casts ``X`` to float32 and goes left when ``x32 <= threshold`` (threshold is a
  float64). For a float32 ``x``, ``x <= t`` holds exactly when ``x <= t32``, where ``t32`` is
  the largest float32 not above ``t``; the kernel compares float32 against such ``t32``.
* The value of a leaf is ``depth + c(n_node_samples) - 1`` exactly as sklearn computes it
  (``_decision_path_lengths + _average_path_length_per_tree - 1.0``), the per-row sum runs over
  the trees in the same order, and the final ``-2 ** (-sum / (n_trees * c(max_samples)))`` is
  the same numpy expression.

Why it is fast:

* Rows are scored in blocks of ``_BLOCK``; the block is transposed once (feature-major,
  float32) and reused by every tree.
* The top three levels of a tree are evaluated for the whole block with vectorized comparisons
  of seven fixed columns (SIMD), packed into a 7-bit code and turned into a level-3 node by a
  lookup table.
* Below that the block advances one level at a time; the rows are independent, so the CPU
  overlaps their loads, and all indices are unsigned (no negative-index fix-ups in numba).
* Layout "complete" (trees of depth <= ``_MAX_COMPLETE_DEPTH``, i.e. max_samples <= 512):
  each tree is padded into a complete binary tree in heap order (below an early leaf, padding
  nodes send every row left), so a step is ``i = 2*i + 1 + (x[feature[i]] > threshold[i])``.
  Layout "compact" (deeper trees, e.g. the detector's max_samples=2048, where padding would
  blow up the tables): breadth-first order with siblings adjacent and leaves looping onto
  themselves, so a step is ``i = left[i] + (x[feature[i]] > threshold[i])``.

Pure numpy could not get there: the best vectorized level-by-level walk measured ~190k rows/s
(1.5x sklearn), hence numba. Without numba installed, the same arrays are walked with numpy
(exact, about as fast as sklearn); ``BACKEND`` says which one is in use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # pragma: no cover - exercised implicitly
    import numba as _numba
except ImportError:  # pragma: no cover - depends on the environment
    _numba = None

__all__ = ["BACKEND", "CompiledForest", "DEFAULT_CHUNK_ROWS"]

#: Rows handed to the kernel per call (bounds temporary memory: one converted copy of at most
#: this many rows when the input is not a C-contiguous float32/float64 array, plus the chunk's
#: scores temporaries).
DEFAULT_CHUNK_ROWS = 65_536
# Rows per inner block: the transposed block (n_features x _BLOCK float32) stays in L1/L2.
_BLOCK = 128
# Levels resolved at once by the lookup table (7 comparisons -> a node on level 3).
_TOP = 3
# Trees up to this depth are padded to complete trees (2**depth leaves); deeper ones use the
# compact layout. max_samples=4096 gives depth 12.
_MAX_COMPLETE_DEPTH = 9


def _top_lut() -> np.ndarray:
    """Bit j of the code says whether the row goes right at heap node j (j < 7); -> level-3 node."""
    lut = np.zeros(1 << ((1 << _TOP) - 1), dtype=np.uint8)
    for code in range(lut.size):
        node = 0
        for _ in range(_TOP):
            node = 2 * node + 1 + ((code >> node) & 1)
        lut[code] = node
    return lut


_LUT = _top_lut()


def _average_path_length(n_samples_leaf: np.ndarray) -> np.ndarray:
    """Same arithmetic as ``sklearn.ensemble._iforest._average_path_length``."""
    n = np.asarray(n_samples_leaf)
    shape = n.shape
    n = n.reshape((1, -1))
    apl = np.zeros(n.shape)
    mask_1 = n <= 1
    mask_2 = n == 2
    not_mask = ~np.logical_or(mask_1, mask_2)
    apl[mask_1] = 0.0
    apl[mask_2] = 1.0
    apl[not_mask] = 2.0 * (np.log(n[not_mask] - 1.0) + np.euler_gamma) - 2.0 * (n[not_mask] - 1.0) / n[not_mask]
    return apl.reshape(shape)


def _float32_floor(threshold: np.ndarray) -> np.ndarray:
    """Largest float32 <= each float64 threshold: ``x32 <= t`` iff ``x32 <= floor32(t)``."""
    t64 = np.asarray(threshold, dtype=np.float64)
    with np.errstate(over="ignore"):
        t32 = t64.astype(np.float32)
    above = t32.astype(np.float64) > t64
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


# --------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------


def _jit(fn):
    try:
        return _numba.njit(nogil=True, cache=True)(fn)
    except Exception:  # pragma: no cover - e.g. no writable cache location
        return _numba.njit(nogil=True)(fn)


if _numba is not None:
    _u64 = np.uint64
    _u32 = np.uint32

    @_jit
    def _load_block(X, s, m, Xt):
        """Transpose rows s..s+m of X into Xt (feature-major float32); -1 or the first bad index."""
        n_features = X.shape[1]
        bad = False
        for r in range(m):
            for j in range(n_features):
                v = X[s + r, j]
                Xt[j, r] = np.float32(v)
                bad |= (v - v) != 0  # NaN and +-inf
        if not bad:
            return -1
        for r in range(m):
            for j in range(n_features):
                if not np.isfinite(X[s + r, j]):
                    return (s + r) * n_features + j
        return -1  # pragma: no cover

    @_jit
    def _kernel_complete(X, feat_off, thr, leaf, node_off, leaf_off, depth, lut, block, out):
        """Sum of leaf values over complete (heap-ordered) trees; see the module docstring."""
        n, n_features = X.shape
        n_trees = node_off.shape[0]
        Xt = np.empty((n_features, block), dtype=np.float32)
        Xf = Xt.ravel()
        code = np.zeros(block, dtype=np.uint32)
        idx = np.zeros(block, dtype=np.uint64)
        one = _u64(1)
        two = _u64(2)
        zero = _u32(0)
        ublock = _u32(block)
        for s in range(0, n, block):
            m = min(block, n - s)
            um = _u64(m)
            bad = _load_block(X, s, m, Xt)
            if bad >= 0:
                return bad
            acc = out[s : s + m]
            acc[:] = 0.0
            for t in range(n_trees):
                d = depth[t]
                ft = feat_off[node_off[t] :]
                th = thr[node_off[t] :]
                lb = leaf_off[t] - _u64((1 << d) - 1)
                # Levels 0-2: seven comparisons of fixed columns for the whole block.
                x0 = Xt[ft[0] // ublock]
                x1 = Xt[ft[1] // ublock]
                x2 = Xt[ft[2] // ublock]
                x3 = Xt[ft[3] // ublock]
                x4 = Xt[ft[4] // ublock]
                x5 = Xt[ft[5] // ublock]
                x6 = Xt[ft[6] // ublock]
                t0 = th[0]
                t1 = th[1]
                t2 = th[2]
                t3 = th[3]
                t4 = th[4]
                t5 = th[5]
                t6 = th[6]
                for r in range(um):
                    code[r] = (
                        (_u32(1) if x0[r] > t0 else zero)
                        | (_u32(2) if x1[r] > t1 else zero)
                        | (_u32(4) if x2[r] > t2 else zero)
                        | (_u32(8) if x3[r] > t3 else zero)
                        | (_u32(16) if x4[r] > t4 else zero)
                        | (_u32(32) if x5[r] > t5 else zero)
                        | (_u32(64) if x6[r] > t6 else zero)
                    )
                rest = d - 3
                if rest == 0:
                    for r in range(um):
                        acc[r] += leaf[lb + _u64(lut[code[r]])]
                elif rest == 1:
                    for r in range(um):
                        i = _u64(lut[code[r]])
                        i = two * i + one + _u64(Xf[_u64(ft[i]) + r] > th[i])
                        acc[r] += leaf[lb + i]
                else:
                    for r in range(um):
                        i = _u64(lut[code[r]])
                        idx[r] = two * i + one + _u64(Xf[_u64(ft[i]) + r] > th[i])
                    for _k in range(rest - 2):
                        for r in range(um):
                            i = idx[r]
                            idx[r] = two * i + one + _u64(Xf[_u64(ft[i]) + r] > th[i])
                    for r in range(um):
                        i = idx[r]
                        i = two * i + one + _u64(Xf[_u64(ft[i]) + r] > th[i])
                        acc[r] += leaf[lb + i]
        return -1

    @_jit
    def _kernel_compact(X, top_feat_off, top_thr, entry, feat_off, thr, left, value, steps, lut, block, out):
        """Sum of leaf values over compact trees (right child = left + 1, leaves loop on themselves).

        Levels 0-2 as in the complete kernel (from padded copies of the top seven nodes), then
        ``entry`` maps the level-3 position to the compact node, and ``steps[t]`` levels follow.
        """
        n, n_features = X.shape
        n_trees = steps.shape[0]
        Xt = np.empty((n_features, block), dtype=np.float32)
        Xf = Xt.ravel()
        code = np.zeros(block, dtype=np.uint32)
        idx = np.zeros(block, dtype=np.uint64)
        zero = _u32(0)
        ublock = _u32(block)
        for s in range(0, n, block):
            m = min(block, n - s)
            um = _u64(m)
            bad = _load_block(X, s, m, Xt)
            if bad >= 0:
                return bad
            acc = out[s : s + m]
            acc[:] = 0.0
            for t in range(n_trees):
                ft = top_feat_off[t]
                th = top_thr[t]
                x0 = Xt[ft[0] // ublock]
                x1 = Xt[ft[1] // ublock]
                x2 = Xt[ft[2] // ublock]
                x3 = Xt[ft[3] // ublock]
                x4 = Xt[ft[4] // ublock]
                x5 = Xt[ft[5] // ublock]
                x6 = Xt[ft[6] // ublock]
                t0 = th[0]
                t1 = th[1]
                t2 = th[2]
                t3 = th[3]
                t4 = th[4]
                t5 = th[5]
                t6 = th[6]
                for r in range(um):
                    code[r] = (
                        (_u32(1) if x0[r] > t0 else zero)
                        | (_u32(2) if x1[r] > t1 else zero)
                        | (_u32(4) if x2[r] > t2 else zero)
                        | (_u32(8) if x3[r] > t3 else zero)
                        | (_u32(16) if x4[r] > t4 else zero)
                        | (_u32(32) if x5[r] > t5 else zero)
                        | (_u32(64) if x6[r] > t6 else zero)
                    )
                et = entry[t]
                for r in range(um):
                    idx[r] = _u64(et[lut[code[r]] - 7])
                for _k in range(steps[t]):
                    for r in range(um):
                        i = idx[r]
                        idx[r] = _u64(left[i]) + _u64(Xf[_u64(feat_off[i]) + r] > thr[i])
                for r in range(um):
                    acc[r] += value[idx[r]]
        return -1


BACKEND = "numba" if _numba is not None else "numpy"


# --------------------------------------------------------------------------------------------
# numpy fallback (same arrays, same arithmetic)
# --------------------------------------------------------------------------------------------


def _first_nonfinite(Xc: np.ndarray) -> int:
    finite = np.isfinite(Xc)
    if finite.all():
        return -1
    return int(np.argmin(np.ascontiguousarray(finite).ravel()))


def _depths_numpy(model: "CompiledForest", X32: np.ndarray) -> np.ndarray:
    """All trees at once, one level per step, on (rows x trees) index arrays of a few blocks."""
    m, n_features = X32.shape
    n_trees = model.n_estimators
    flat = X32.ravel()
    feat = (model._feat_off // np.uint32(model._block)).astype(np.intp)
    thr = model._thr
    acc = np.empty(m)
    sub = max(1, 32_768 // max(n_trees, 1))  # rows per step: ~32k (row, tree) pairs stay in cache
    if model.layout == "complete":
        node_off = model._node_off.astype(np.intp)
        leaf_base = model._leaf_off.astype(np.intp) - ((1 << model._depth) - 1)
        groups = [np.flatnonzero(model._depth == d) for d in np.unique(model._depth)]
    else:
        left = model._left.astype(np.intp)
        roots = model._root.astype(np.intp)
        max_depth = int(model._depth.max(initial=0))
    for start in range(0, m, sub):
        stop = min(m, start + sub)
        rowoff = (np.arange(start, stop, dtype=np.intp) * n_features)[:, None]
        values = np.empty((stop - start, n_trees))
        if model.layout == "complete":
            for trees in groups:
                off = node_off[trees][None, :]
                node = np.broadcast_to(off, (stop - start, trees.size)).copy()  # global heap index
                for _ in range(int(model._depth[trees[0]])):
                    right = flat.take(rowoff + feat.take(node), mode="wrap") > thr.take(node)
                    node = 2 * node + 1 - off + right
                values[:, trees] = model._leaf.take(node - off + leaf_base[trees][None, :])
        else:
            node = np.broadcast_to(roots[None, :], (stop - start, n_trees)).copy()
            for _ in range(max_depth):  # leaves loop onto themselves
                right = flat.take(rowoff + feat.take(node), mode="wrap") > thr.take(node)
                node = left.take(node) + right
            values[:] = model._leaf.take(node)
        # Trees added left to right, like sklearn's ``depths += ...`` (accumulate is sequential).
        acc[start:stop] = np.add.accumulate(values, axis=1)[:, -1] if n_trees else 0.0
    return acc


# --------------------------------------------------------------------------------------------
# building the arrays
# --------------------------------------------------------------------------------------------


def _tree_levels(tree_: Any) -> list[np.ndarray]:
    """Original node ids level by level (breadth first, each node's children adjacent)."""
    left = tree_.children_left
    right = tree_.children_right
    levels = [np.array([0], dtype=np.intp)]
    while True:
        cur = levels[-1]
        inner = cur[left[cur] != -1]
        if inner.size == 0:
            return levels
        nxt = np.empty(2 * inner.size, dtype=np.intp)
        nxt[0::2] = left[inner]
        nxt[1::2] = right[inner]
        levels.append(nxt)


def _heap(tree_: Any, feature: np.ndarray, thr32: np.ndarray, depth: int):
    """The top ``depth`` levels of a tree as a complete heap: (features, thresholds, bottom).

    Below a leaf reached early, padding nodes (feature 0, threshold +inf) send every row left;
    ``bottom`` holds the original node (a leaf, or the subtree root) at each of the 2**depth
    positions of level ``depth``.
    """
    left = tree_.children_left
    right = tree_.children_right
    f_heap = np.zeros((1 << depth) - 1, dtype=np.uint32)
    t_heap = np.full((1 << depth) - 1, np.inf, dtype=np.float32)
    cur = np.array([0], dtype=np.intp)
    for k in range(depth):
        inner = left[cur] != -1
        lo = (1 << k) - 1
        f_heap[lo : lo + cur.size][inner] = feature[cur[inner]]
        t_heap[lo : lo + cur.size][inner] = thr32[cur[inner]]
        nxt = np.empty(2 * cur.size, dtype=np.intp)
        nxt[0::2] = np.where(inner, left[cur], cur)
        nxt[1::2] = np.where(inner, right[cur], cur)
        cur = nxt
    return f_heap, t_heap, cur


class CompiledForest:
    """A fitted ``IsolationForest`` flattened to plain numpy arrays, scored by a fast kernel.

    Attributes are numpy arrays and Python scalars only, so instances pickle and unpickle
    without scikit-learn (and without numba: the numpy fallback then scores, more slowly).
    """

    def __init__(self) -> None:  # use from_sklearn
        self.n_features_in_: int = 0
        self.n_estimators: int = 0
        self.max_samples: int = 0
        self.layout: str = "complete"
        self._denominator = np.zeros(1)
        self._block: int = _BLOCK
        self._feat_off = np.zeros(0, dtype=np.uint32)
        self._thr = np.zeros(0, dtype=np.float32)
        self._leaf = np.zeros(0, dtype=np.float64)
        self._depth = np.zeros(0, dtype=np.int64)
        self._node_off = np.zeros(0, dtype=np.uint64)  # complete layout
        self._leaf_off = np.zeros(0, dtype=np.uint64)  # complete layout
        self._left = np.zeros(0, dtype=np.uint32)  # compact layout
        self._root = np.zeros(0, dtype=np.uint64)  # compact layout
        self._steps = np.zeros(0, dtype=np.int64)  # compact layout
        self._top_feat_off = np.zeros((0, 7), dtype=np.uint32)  # compact layout
        self._top_thr = np.zeros((0, 7), dtype=np.float32)  # compact layout
        self._entry = np.zeros((0, 8), dtype=np.uint32)  # compact layout

    # ----------------------------------------------------------------------------------------
    @classmethod
    def from_sklearn(cls, forest: Any) -> "CompiledForest":
        from sklearn.ensemble import IsolationForest

        if not isinstance(forest, IsolationForest):
            raise TypeError(f"expected a fitted sklearn IsolationForest, got {type(forest).__name__}")
        if not hasattr(forest, "estimators_"):
            raise ValueError("the IsolationForest is not fitted")

        n_features = int(forest.n_features_in_)
        trees = [est.tree_ for est in forest.estimators_]
        subsample = int(forest._max_features) != n_features
        feature_sets = forest.estimators_features_

        # Leaf values exactly as sklearn adds them: depth (root = 1) + c(n_node_samples) - 1.
        stored_depths = getattr(forest, "_decision_path_lengths", None)
        stored_apl = getattr(forest, "_average_path_length_per_tree", None)

        per_tree = []
        for t, tree_ in enumerate(trees):
            levels = _tree_levels(tree_)
            if stored_depths is not None and stored_apl is not None:
                dpl = np.asarray(stored_depths[t])
                apl = np.asarray(stored_apl[t])
            else:
                dpl = np.zeros(tree_.node_count, dtype=np.int64)
                for k, ids in enumerate(levels):
                    dpl[ids] = k + 1
                apl = _average_path_length(tree_.n_node_samples)
            value = dpl + apl - 1.0
            feature = np.asarray(tree_.feature, dtype=np.intp).copy()
            inner = tree_.children_left != -1
            if subsample:
                feature[inner] = np.asarray(feature_sets[t], dtype=np.intp)[feature[inner]]
            feature[~inner] = 0
            per_tree.append((tree_, levels, value, feature, _float32_floor(tree_.threshold)))

        model = cls()
        model.n_features_in_ = n_features
        model.n_estimators = len(trees)
        model.max_samples = int(forest._max_samples)
        model._denominator = len(forest.estimators_) * _average_path_length(np.array([model.max_samples]))
        model._block = _BLOCK
        max_depth = max((len(levels) - 1 for _, levels, _, _, _ in per_tree), default=0)
        if max_depth <= _MAX_COMPLETE_DEPTH:
            model._build_complete(per_tree)
        else:
            model._build_compact(per_tree)
        return model

    def _build_complete(self, per_tree: list) -> None:
        feats, thrs, leaves, depths = [], [], [], []
        for tree_, levels, value, feature, thr32 in per_tree:
            d = max(len(levels) - 1, _TOP)
            f_heap, t_heap, bottom = _heap(tree_, feature, thr32, d)
            feats.append(f_heap)
            thrs.append(t_heap)
            leaves.append(value[bottom].astype(np.float64))
            depths.append(d)
        self.layout = "complete"
        self._feat_off = np.concatenate(feats).astype(np.uint32) * np.uint32(self._block)
        self._thr = np.concatenate(thrs)
        self._leaf = np.concatenate(leaves)
        self._depth = np.asarray(depths, dtype=np.int64)
        self._node_off = np.concatenate([[0], np.cumsum([a.size for a in feats])[:-1]]).astype(np.uint64)
        self._leaf_off = np.concatenate([[0], np.cumsum([a.size for a in leaves])[:-1]]).astype(np.uint64)

    def _build_compact(self, per_tree: list) -> None:
        feats, thrs, lefts, leaves, roots, depths = [], [], [], [], [], []
        top_feats, top_thrs, entries = [], [], []
        base = 0
        for tree_, levels, value, feature, thr32 in per_tree:
            order = np.concatenate(levels)  # breadth first; children of a node are adjacent
            new_id = np.empty(tree_.node_count, dtype=np.intp)
            new_id[order] = np.arange(order.size) + base
            left = tree_.children_left[order]
            inner = left != -1
            feats.append(np.where(inner, feature[order], 0))
            thrs.append(np.where(inner, thr32[order], np.float32(np.inf)).astype(np.float32))
            lefts.append(np.where(inner, new_id[np.where(inner, left, 0)], new_id[order]))
            leaves.append(np.where(inner, 0.0, value[order]))
            roots.append(base)
            depths.append(len(levels) - 1)
            f_top, t_top, bottom = _heap(tree_, feature, thr32, _TOP)
            top_feats.append(f_top)
            top_thrs.append(t_top)
            entries.append(new_id[bottom])
            base += order.size
        self.layout = "compact"
        self._feat_off = np.concatenate(feats).astype(np.uint32) * np.uint32(self._block)
        self._thr = np.concatenate(thrs)
        self._left = np.concatenate(lefts).astype(np.uint32)
        self._leaf = np.concatenate(leaves).astype(np.float64)
        self._root = np.asarray(roots, dtype=np.uint64)
        self._depth = np.asarray(depths, dtype=np.int64)
        self._steps = np.maximum(self._depth - _TOP, 0)
        self._top_feat_off = np.stack(top_feats).astype(np.uint32) * np.uint32(self._block)
        self._top_thr = np.stack(top_thrs)
        self._entry = np.stack(entries).astype(np.uint32)

    # ----------------------------------------------------------------------------------------
    def score_samples(self, X: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
        """Same as ``IsolationForest.score_samples`` (lower = more abnormal), for finite X.

        Raises ValueError on NaN or +-inf, naming the column (and row) of the first one in
        row-major order; the pipeline imputes before scoring.
        """
        X = self._check_input(X)
        n = X.shape[0]
        out = np.empty(n, dtype=np.float64)
        chunk_rows = max(int(chunk_rows), 1)
        for start in range(0, n, chunk_rows):
            stop = min(n, start + chunk_rows)
            Xc = X[start:stop]
            if Xc.dtype not in (np.float32, np.float64):
                Xc = np.ascontiguousarray(Xc, dtype=np.float32)  # sklearn casts to float32 too
            elif not Xc.flags.c_contiguous:
                Xc = np.ascontiguousarray(Xc)
            depths = out[start:stop]
            bad = self._depths_into(Xc, depths)
            if bad >= 0:
                row, col = divmod(bad, Xc.shape[1])
                value = Xc[row, col]
                raise ValueError(
                    f"X contains a non-finite value ({value}) in column {col} (row {start + row}); "
                    "impute missing values before scoring"
                )
            # Exactly sklearn's final step (IsolationForest._compute_score_samples), negated.
            denominator = self._denominator
            scores = 2 ** (-np.divide(depths, denominator, out=np.ones_like(depths), where=denominator != 0))
            np.negative(scores, out=depths)
        return out

    def _depths_into(self, Xc: np.ndarray, depths: np.ndarray) -> int:
        if _numba is not None:
            if self.layout == "complete":
                return int(
                    _kernel_complete(
                        Xc,
                        self._feat_off,
                        self._thr,
                        self._leaf,
                        self._node_off,
                        self._leaf_off,
                        self._depth,
                        _LUT,
                        self._block,
                        depths,
                    )
                )
            return int(
                _kernel_compact(
                    Xc,
                    self._top_feat_off,
                    self._top_thr,
                    self._entry,
                    self._feat_off,
                    self._thr,
                    self._left,
                    self._leaf,
                    self._steps,
                    _LUT,
                    self._block,
                    depths,
                )
            )
        bad = _first_nonfinite(Xc)
        if bad >= 0:
            return bad
        depths[:] = _depths_numpy(self, np.ascontiguousarray(Xc, dtype=np.float32))
        return -1

    def _check_input(self, X: Any) -> np.ndarray:
        if not isinstance(X, np.ndarray):
            X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D array of shape (n_samples, {self.n_features_in_}), got shape {X.shape}")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but the forest was fitted with {self.n_features_in_}")
        if X.dtype.kind not in "fiub":
            X = X.astype(np.float32)
        return X

    def __repr__(self) -> str:
        return (
            f"CompiledForest(n_estimators={self.n_estimators}, n_features_in_={self.n_features_in_}, "
            f"max_samples={self.max_samples}, layout={self.layout!r}, backend={BACKEND!r})"
        )
