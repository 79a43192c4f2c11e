"""Per-feature drift of a partition against the training reference stored with the model:
PSI on the reference's quantile bins, and the two-sample Kolmogorov-Smirnov statistic."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from anomaly_assets.core.kernels import add_bin_counts

DRIFT_COLUMNS = ("feature", "psi", "ks", "reference_median", "current_median", "drifted")


@dataclasses.dataclass
class DriftReference:
    features: list[str]
    edges: list[np.ndarray]  # per feature: bin edges, -inf and +inf at the ends
    proportions: list[np.ndarray]  # per feature: share of reference rows per bin
    sample: np.ndarray  # (rows, features) reference sample for the KS statistic
    medians: np.ndarray


def fit_drift_reference(
    frame: pd.DataFrame, features: list[str], bins: int = 10, sample_size: int = 5000, seed: int = 0
) -> DriftReference:
    values = frame[features].to_numpy(dtype=np.float64)
    edges, proportions = [], []
    for j in range(values.shape[1]):
        column = values[:, j][np.isfinite(values[:, j])]
        if len(column) == 0:
            column = np.zeros(1)
        cut = np.unique(np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1]))
        feature_edges = np.concatenate(([-np.inf], cut, [np.inf]))
        edges.append(feature_edges)
        proportions.append(_proportions(column, feature_edges))
    rng = np.random.default_rng(seed)
    take = rng.choice(len(values), size=min(sample_size, len(values)), replace=False) if len(values) else []
    return DriftReference(
        features=list(features),
        edges=edges,
        proportions=proportions,
        sample=values[take],
        medians=np.nanmedian(values, axis=0) if len(values) else np.zeros(len(features)),
    )


def _proportions(column: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # Right-closed bins, so a point mass (e.g. zero crashes) falls in one bin on both sides.
    counts = np.bincount(np.searchsorted(edges[1:-1], column, side="left"), minlength=len(edges) - 1)
    return counts / max(len(column), 1)


def feature_drift(
    reference: DriftReference, current: pd.DataFrame, psi_threshold: float = 0.2, sample_size: int = 5000, seed: int = 0
) -> pd.DataFrame:
    """One row per reference feature, most drifted first; ``drifted`` when PSI >= the threshold."""
    accumulator = CurrentDistribution(reference, keep_rows=max(len(current), 1))
    accumulator.add(current)
    return accumulator.drift(psi_threshold, sample_size, seed)


class CurrentDistribution:
    """The current side of ``feature_drift``, fed a chunk of rows at a time.

    PSI's bin counts are exact over every row. The KS statistic and the current median come from
    a uniform sample of at most ``keep_rows`` rows, which is every row (and so exact) for a
    partition up to that size: memory stays bounded for any fleet.
    """

    def __init__(self, reference: DriftReference, keep_rows: int = 200_000, seed: int = 0, keep_below: float = 1.0):
        self.reference = reference
        self.keep_rows = keep_rows
        # Rows whose random priority is at least this are never kept: a share of a partition
        # known to be large keeps only rows that can be among the partition's keep_rows smallest
        # (see ``keep_below``), instead of up to keep_rows of its own.
        self.keep_below = keep_below
        self.rows = 0
        self.counts = [np.zeros(len(edges) - 1, dtype=np.int64) for edges in reference.edges]
        self._kept = np.empty((0, len(reference.features)))
        self._priority = np.empty(0)
        self._rng = np.random.default_rng([seed, 1])  # its own stream: the KS sample's stays as before

    def add(self, current: pd.DataFrame) -> None:
        missing = [f for f in self.reference.features if f not in current]
        if missing:
            raise KeyError(f"current frame lacks drift-monitored features: {missing}")
        self.add_values(current[self.reference.features].to_numpy(dtype=np.float64))

    def add_values(self, values: np.ndarray) -> None:
        """Rows of the reference's features, in its order, as a float matrix."""
        add_bin_counts(values, self.reference.edges, self.counts)
        self.rows += len(values)
        # A uniform sample without replacement: the rows with the smallest random priorities,
        # kept in arrival order.
        priority = self._rng.random(len(values))
        if self.keep_below < 1.0:
            below = priority < self.keep_below
            values, priority = values[below], priority[below]
        kept = np.concatenate([self._kept, values])
        priority = np.concatenate([self._priority, priority])
        if len(kept) > self.keep_rows:
            chosen = np.sort(np.argpartition(priority, self.keep_rows)[: self.keep_rows])
            kept, priority = kept[chosen], priority[chosen]
        self._kept, self._priority = kept, priority

    def merge(self, other: CurrentDistribution) -> None:
        """Add what ``other`` (another share of the same partition's rows, fed elsewhere) saw:
        exact bin counts, and the rows with the smallest priorities of both samples, this one's
        first (merged in the rows' order, the sample is every row's, in order, up to ``keep_rows``)."""
        for mine, theirs in zip(self.counts, other.counts, strict=True):
            mine += theirs
        self.rows += other.rows
        kept = np.concatenate([self._kept, other._kept])
        priority = np.concatenate([self._priority, other._priority])
        if len(kept) > self.keep_rows:
            chosen = np.sort(np.argpartition(priority, self.keep_rows)[: self.keep_rows])
            kept, priority = kept[chosen], priority[chosen]
        self._kept, self._priority = kept, priority

    def drift(self, psi_threshold: float = 0.2, sample_size: int = 5000, seed: int = 0) -> pd.DataFrame:
        from scipy.stats import ks_2samp  # seconds to import: not in the workers that only accumulate

        reference, values = self.reference, self._kept
        rng = np.random.default_rng(seed)
        take = rng.choice(len(values), size=min(sample_size, len(values)), replace=False)
        rows = []
        for j, feature in enumerate(reference.features):
            counts = self.counts[j]
            expected = np.clip(reference.proportions[j], 1e-4, None)
            actual = np.clip(counts / max(int(counts.sum()), 1), 1e-4, None)
            psi = float(np.sum((actual - expected) * np.log(actual / expected)))
            ref_sample = reference.sample[:, j][np.isfinite(reference.sample[:, j])]
            cur_sample = values[take, j][np.isfinite(values[take, j])]
            ks = float(ks_2samp(ref_sample, cur_sample).statistic) if len(ref_sample) and len(cur_sample) else 0.0
            column = values[:, j][np.isfinite(values[:, j])]
            median = float(np.median(column)) if len(column) else np.nan
            rows.append((feature, psi, ks, float(reference.medians[j]), median, psi >= psi_threshold))
        table = pd.DataFrame(rows, columns=list(DRIFT_COLUMNS))
        return table.sort_values("psi", ascending=False, ignore_index=True)


def keep_below(partition_rows: int, keep_rows: int = 200_000) -> float:
    """A priority bound for the shares of a partition of ``partition_rows`` rows: with it, the
    shares together still keep at least ``keep_rows`` rows (the bound keeps 1.2 times that many
    plus 100 standard deviations, in expectation), so the merged sample is the same as without it;
    1.0 (keep every row) when the partition is not larger than the sample."""
    if partition_rows <= keep_rows:
        return 1.0
    return min(1.0, (1.2 * keep_rows + 100 * keep_rows**0.5) / partition_rows)


def drift_streak_end(drifted_counts: dict[str, int], min_features: int, consecutive: int) -> str | None:
    """The latest partition (``YYYY-MM-DD``) if it and the ``consecutive - 1`` calendar days before
    it each have at least ``min_features`` drifted features; otherwise None."""
    if not drifted_counts:
        return None
    latest = max(drifted_counts)
    days = [(pd.Timestamp(latest) - pd.Timedelta(days=i)).strftime("%Y-%m-%d") for i in range(consecutive)]
    return latest if all(drifted_counts.get(day, -1) >= min_features for day in days) else None
