"""Small compiled loops for the scoring hot path (numba), each with an exact numpy fallback."""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # the numpy fallback gives the same results, more slowly
    numba = None


def _top_k_abs_z_numpy(matrix: np.ndarray, medians: np.ndarray, scales: np.ndarray, k: int) -> np.ndarray:
    z = np.abs((matrix - medians[None, :]) / scales[None, :])
    # Stable sort on -z: ties go to the lower column index, the same rule as the compiled loop.
    return np.argsort(-z, axis=1, kind="stable")[:, :k]


def _top_k_abs_z_loop(matrix, medians, scales, k):
    n, m = matrix.shape
    out = np.empty((n, k), dtype=np.int64)
    best = np.empty(k)
    for i in range(n):
        for j in range(k):
            best[j] = -1.0
            out[i, j] = 0
        for c in range(m):
            z = abs((matrix[i, c] - medians[c]) / scales[c])
            if z > best[k - 1]:
                position = k - 1
                while position > 0 and z > best[position - 1]:
                    best[position] = best[position - 1]
                    out[i, position] = out[i, position - 1]
                    position -= 1
                best[position] = z
                out[i, position] = c
    return out


def _top_3_abs_z_loop(matrix, medians, scales):
    """``_top_k_abs_z_loop`` for k = 3, the explanation's case: the same comparisons in the same
    order, with the three best kept in scalars (registers) and each row's z computed first, in
    a loop the compiler vectorizes; ~30% faster."""
    n, m = matrix.shape
    out = np.empty((n, 3), dtype=np.int64)
    z = np.empty(m)
    for i in range(n):
        for c in range(m):
            z[c] = abs((matrix[i, c] - medians[c]) / scales[c])
        b0 = b1 = b2 = -1.0
        o0 = o1 = o2 = 0
        for c in range(m):
            v = z[c]
            if v > b2:
                if v > b1:
                    b2, o2 = b1, o1
                    if v > b0:
                        b1, o1 = b0, o0
                        b0, o0 = v, c
                    else:
                        b1, o1 = v, c
                else:
                    b2, o2 = v, c
        out[i, 0] = o0
        out[i, 1] = o1
        out[i, 2] = o2
    return out


_top_k_abs_z_compiled = numba.njit(cache=True, nogil=True)(_top_k_abs_z_loop) if numba is not None else None
_top_3_abs_z_compiled = numba.njit(cache=True, nogil=True)(_top_3_abs_z_loop) if numba is not None else None


def top_k_abs_z(matrix: np.ndarray, medians: np.ndarray, scales: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest |(x - median) / scale| per row, largest first."""
    k = min(k, matrix.shape[1])
    if _top_k_abs_z_compiled is None:
        return _top_k_abs_z_numpy(matrix, medians, scales, k)
    args = (np.ascontiguousarray(matrix, dtype=np.float64), medians.astype(np.float64), scales.astype(np.float64))
    if k == 3:
        return _top_3_abs_z_compiled(*args)
    return _top_k_abs_z_compiled(*args, k)


def _model_matrix_loop(src, kinds, sources, metric_src, z_cohort, hour, mean, std, b_cohort, low, high, width, medians, out):
    """Row-major model matrix from column sources, in row blocks (a cache-friendly transpose).

    ``kinds[j]``: 0 copies column ``sources[j]`` of ``src``; 1 is the cohort z-score of metric
    ``sources[j]`` (whose values are ``src[:, metric_src[sources[j]]]``); 2 its baseline
    exceedance. NaN becomes ``medians[j]``. The same float operations as the numpy path.
    """
    n, k = out.shape
    block = 512
    for start in range(0, n, block):
        stop = min(n, start + block)
        for j in range(k):
            kind = kinds[j]
            s = sources[j]
            fill = medians[j]
            if kind == 0:
                for i in range(start, stop):
                    v = src[i, s]
                    out[i, j] = fill if np.isnan(v) else v
            elif kind == 1:
                col = metric_src[s]
                for i in range(start, stop):
                    c = z_cohort[i]
                    h = hour[i]
                    v = (src[i, col] - mean[c, h, s]) / std[c, h, s]
                    out[i, j] = fill if np.isnan(v) else v
            else:
                col = metric_src[s]
                for i in range(start, stop):
                    c = b_cohort[i]
                    x = src[i, col]
                    hi = high[c, s]
                    lo = low[c, s]
                    if x > hi:
                        v = (x - hi) / width[c, s]
                    elif x < lo:
                        v = (x - lo) / width[c, s]
                    else:
                        v = 0.0
                    out[i, j] = fill if np.isnan(v) else v
    return out


_model_matrix_compiled = numba.njit(cache=True, nogil=True)(_model_matrix_loop) if numba is not None else None


def model_matrix_from_sources(
    src: np.ndarray,
    kinds: np.ndarray,
    sources: np.ndarray,
    metric_src: np.ndarray,
    z_cohort: np.ndarray,
    hour: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    b_cohort: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    width: np.ndarray,
    medians: np.ndarray,
) -> np.ndarray:
    """The (rows, len(kinds)) C-ordered model matrix; see ``_model_matrix_loop``."""
    n, k = src.shape[0], len(kinds)
    z_cohort, hour, b_cohort = (np.asarray(a, dtype=np.int64) for a in (z_cohort, hour, b_cohort))
    medians = np.asarray(medians, dtype=np.float64)
    if _model_matrix_compiled is not None:
        out = np.empty((n, k), dtype=np.float64)
        return _model_matrix_compiled(
            src, kinds.astype(np.int64), sources.astype(np.int64), metric_src.astype(np.int64), z_cohort, hour,
            mean, std, b_cohort, low, high, width, medians, out,
        )
    out = np.empty((n, k), dtype=np.float64, order="F")
    for j in range(k):
        kind, s = int(kinds[j]), int(sources[j])
        if kind == 0:
            column = src[:, s]
        elif kind == 1:
            column = (src[:, metric_src[s]] - mean[z_cohort, hour, s]) / std[z_cohort, hour, s]
        else:
            x = src[:, metric_src[s]]
            lo, hi, w = low[b_cohort, s], high[b_cohort, s], width[b_cohort, s]
            column = np.where(x > hi, (x - hi) / w, np.where(x < lo, (x - lo) / w, 0.0))
        out[:, j] = np.where(np.isnan(column), medians[j], column)
    return np.ascontiguousarray(out)


def _metric_features_loop(values, same_device, starts, rows, scale, out, c_value, c_delta, c_dev, c_std):
    """One metric's device features, written straight into the kept ``rows`` of ``out``: the
    value, the delta to the previous row of the same device, and per window (``starts[w]``) the
    deviation from the rolling mean and the rolling std, with float noise snapped to 0 relative
    to ``scale`` exactly as the numpy path of ``features.build_device_features`` does.

    Rolling sums run over each window, adding the rows that enter and removing those that leave,
    centred on the first finite value and restarted whenever a window does not overlap the
    previous one (a new device, or a gap), so rounding never accumulates across devices."""
    n_rows = rows.shape[0]
    for r in range(n_rows):
        i = rows[r]
        x = values[i]
        out[r, c_value] = x
        out[r, c_delta] = x - values[i - 1] if same_device[i] else np.nan
    var_floor = 1e-12 * scale * scale
    dev_floor = 1e-9 * scale
    n = values.shape[0]
    for w in range(starts.shape[0]):
        window_starts = starts[w]
        cd = c_dev[w]
        cs = c_std[w]
        count = 0
        total = 0.0
        squares = 0.0
        center = 0.0
        low = 0
        high = -1
        r = 0
        last = rows[n_rows - 1] if n_rows > 0 else -1
        for i in range(last + 1):
            start = window_starts[i]
            if start > high:
                count = 0
                total = 0.0
                squares = 0.0
                low = start
                high = start - 1
                center = 0.0
                for j in range(start, i + 1):
                    if np.isfinite(values[j]):
                        center = values[j]
                        break
            while low < start:
                x = values[low]
                if np.isfinite(x):
                    d = x - center
                    count -= 1
                    total -= d
                    squares -= d * d
                low += 1
            while high < i:
                high += 1
                x = values[high]
                if np.isfinite(x):
                    d = x - center
                    count += 1
                    total += d
                    squares += d * d
            if rows[r] != i:
                continue
            mean = np.nan
            var = np.nan
            if count > 0:
                m = total / count
                mean = m + center
                if count > 1:
                    v = (squares - total * m) / (count - 1)
                    var = v if v > 0.0 else 0.0
            d = values[i] - mean
            out[r, cd] = 0.0 if abs(d) <= dev_floor else d
            out[r, cs] = np.sqrt(0.0 if var <= var_floor else var)
            r += 1
    return n


def _window_starts_loop(order_key, width):
    """``np.searchsorted(order_key, order_key - width, side="right")`` for ascending keys."""
    n = order_key.shape[0]
    out = np.empty(n, dtype=np.int64)
    j = 0
    for i in range(n):
        target = order_key[i] - width
        while j < n and order_key[j] <= target:
            j += 1
        out[i] = j
    return out


_metric_features_compiled = numba.njit(cache=True, nogil=True)(_metric_features_loop) if numba is not None else None
_window_starts_compiled = numba.njit(cache=True, nogil=True)(_window_starts_loop) if numba is not None else None


def window_starts(order_key: np.ndarray, width: int) -> np.ndarray:
    """First row of each row's window ``(key - width, key]`` in an ascending int64 key."""
    if _window_starts_compiled is None or order_key.dtype != np.int64:
        return np.searchsorted(order_key, order_key - width, side="right")
    return _window_starts_compiled(np.ascontiguousarray(order_key), int(width))


def metric_features_into(
    values: np.ndarray,
    same_device: np.ndarray,
    starts: np.ndarray,
    rows: np.ndarray,
    scale: float,
    out: np.ndarray,
    c_value: int,
    c_delta: int,
    c_dev: np.ndarray,
    c_std: np.ndarray,
) -> bool:
    """Compiled per-metric features (see ``_metric_features_loop``); False without numba
    (the caller then uses its numpy path)."""
    if _metric_features_compiled is None:
        return False
    _metric_features_compiled(
        np.ascontiguousarray(values, dtype=np.float64), same_device, starts, rows, float(scale), out,
        int(c_value), int(c_delta), c_dev.astype(np.int64), c_std.astype(np.int64),
    )
    return True


def _bin_counts_loop(values, interior, lengths, counts):
    """Per column j: how many finite values fall in each bin of its interior edges
    ``interior[j, :lengths[j]]`` (bin i: i edges below the value, the edge itself in the lower
    bin), added to ``counts[j]``: ``np.searchsorted(edges, column, side="left")``'s bins."""
    n, m = values.shape
    for i in range(n):
        for j in range(m):
            v = values[i, j]
            if not np.isfinite(v):
                continue
            low, high = 0, lengths[j]
            while low < high:
                middle = (low + high) >> 1
                if interior[j, middle] < v:
                    low = middle + 1
                else:
                    high = middle
            counts[j, low] += 1


_bin_counts_compiled = numba.njit(cache=True, nogil=True)(_bin_counts_loop) if numba is not None else None


def add_bin_counts(values: np.ndarray, edges: list[np.ndarray], counts: list[np.ndarray]) -> None:
    """Add each column's histogram over its ``edges`` (-inf and +inf at the ends) to ``counts``;
    non-finite values are not counted. Row-major values are read in place, without a transposed copy."""
    if _bin_counts_compiled is None:
        by_column = np.ascontiguousarray(values.T)
        for j, column_edges in enumerate(edges):
            column = by_column[j][np.isfinite(by_column[j])]
            counts[j] += np.bincount(np.searchsorted(column_edges[1:-1], column, side="left"), minlength=len(column_edges) - 1)
        return
    widest = max((len(e) - 2 for e in edges), default=0)
    interior = np.full((len(edges), max(widest, 1)), np.inf)
    for j, column_edges in enumerate(edges):
        interior[j, : len(column_edges) - 2] = column_edges[1:-1]
    lengths = np.array([len(e) - 2 for e in edges], dtype=np.int64)
    table = np.zeros((len(edges), widest + 1), dtype=np.int64)
    _bin_counts_compiled(np.ascontiguousarray(values, dtype=np.float64), interior, lengths, table)
    for j, column_counts in enumerate(counts):
        column_counts += table[j, : len(column_counts)]
