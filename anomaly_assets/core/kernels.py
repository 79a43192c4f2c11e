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


_top_k_abs_z_compiled = numba.njit(cache=True, nogil=True)(_top_k_abs_z_loop) if numba is not None else None


def top_k_abs_z(matrix: np.ndarray, medians: np.ndarray, scales: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest |(x - median) / scale| per row, largest first."""
    k = min(k, matrix.shape[1])
    if _top_k_abs_z_compiled is None:
        return _top_k_abs_z_numpy(matrix, medians, scales, k)
    return _top_k_abs_z_compiled(
        np.ascontiguousarray(matrix, dtype=np.float64), medians.astype(np.float64), scales.astype(np.float64), k
    )


def _rolling_mean_var_loop(values, starts):
    """Mean and sample variance over rows ``starts[i]..i`` (NaN skipped), by running sums that
    restart whenever a window does not overlap the previous one (a new device, or a gap)."""
    n = values.shape[0]
    mean = np.full(n, np.nan)
    var = np.full(n, np.nan)
    count = 0
    total = 0.0
    squares = 0.0
    center = 0.0
    low = 0
    high = -1
    for i in range(n):
        start = starts[i]
        if start > high:  # no overlap with the previous window: start afresh, centred on this window
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
        if count > 0:
            m = total / count
            mean[i] = m + center
            if count > 1:
                v = (squares - total * m) / (count - 1)
                var[i] = v if v > 0.0 else 0.0
    return mean, var


_rolling_mean_var_compiled = numba.njit(cache=True, nogil=True)(_rolling_mean_var_loop) if numba is not None else None


def rolling_mean_var(values: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Compiled rolling mean and variance; None without numba (callers use their numpy path)."""
    if _rolling_mean_var_compiled is None:
        return None
    return _rolling_mean_var_compiled(np.ascontiguousarray(values, dtype=np.float64), starts.astype(np.int64))
