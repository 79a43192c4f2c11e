"""The training window, read a chunk of whole devices at a time, and what training takes from it
in bounded memory.

- **Slices** (``slice_masks``): fit, then validation, then held out, each strictly later than
  the one before, per device. With more calendar days than ``validation_days + holdout_days``,
  the last ``holdout_days`` days are held back and the ``validation_days`` before them choose the
  threshold; a shorter history is cut per device by shares of its own time range. Both rules
  need only the window's days and each device's own rows, so a chunk of whole devices is sliced
  as the whole window would be.
- **The fitting sample** (``SamplePlan``): the fitting slice's rows, or above ``sample_rows`` a
  sample stratified by (cohort, day). Each stratum keeps its proportional share of the budget,
  and at least an equal share (capped at its size), so a small cohort is not drowned by a large
  one; each row is kept by a hash of its device and timestamp, so the sample does not depend on
  how the window was chunked.
- **The evaluation devices** (``SamplePlan.evaluated``): the devices whose validation and
  held-out rows choose the threshold and measure quality; every device up to
  ``evaluation_devices``, above it a uniform sample of devices (by a hash of the device id).

Every function here takes the detector's config (``core.detector.DetectorConfig``) for the
slice and sample settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from anomaly_assets.core.cohorts import cohort_index

# read(columns, days): the chunks, with only ``columns`` (None: all) and, where the source can
# leave them out cheaply, without rows on days other than ``days`` (None: every day).
ChunkReader = Callable[[Sequence[str] | None, Sequence[pd.Timestamp] | None], Iterable[pd.DataFrame]]


@dataclasses.dataclass
class TrainingWindow:
    """A training window as chunks of whole devices (``ChunkReader``), every device's rows of
    the window in exactly one chunk; ``days`` are the calendar days (UTC midnights) it has rows
    on, ascending (read from the chunks when not given)."""

    read: ChunkReader
    days: np.ndarray | None = None

    def __post_init__(self):
        if self.days is None:
            found: set = set()
            for chunk in self.read(["device_id", "timestamp"], None):
                if len(chunk):
                    found.update(chunk["timestamp"].dt.floor("D").unique())
            self.days = np.array(sorted(found))

    @classmethod
    def of_frame(cls, frame: pd.DataFrame) -> TrainingWindow:
        """A window already in memory: one chunk."""
        return cls(lambda columns, days: [frame if columns is None else frame[[c for c in columns if c in frame]]])

    def chunks(self, columns: Sequence[str] | None = None, days: Sequence[pd.Timestamp] | None = None) -> Iterator[pd.DataFrame]:
        """Each non-empty chunk, sorted by device and time; rows on other days than ``days`` may
        be left out (the slices are cut by ``slice_masks`` in any case)."""
        for chunk in self.read(columns, days):
            if len(chunk):
                yield _by_device_and_time(chunk)

    def slice_days(self, config: Any) -> tuple[list | None, list | None]:
        """The days that can hold (fitting rows, validation or held-out rows): None where a
        device's slices are cut by shares of its own history (every day can)."""
        later = config.validation_days + config.holdout_days
        if config.validation_days >= 1 and len(self.days) > later:
            return list(self.days[:-later]), list(self.days[-later:])
        return None, None


def _by_device_and_time(chunk: pd.DataFrame) -> pd.DataFrame:
    """The rows sorted by device, then time (stable); as they are when already so."""
    devices, _ = pd.factorize(chunk["device_id"], sort=True)
    ticks = _naive_utc(chunk["timestamp"]).view(np.int64)
    order = np.lexsort((ticks, devices))
    if (order == np.arange(len(order))).all():
        return chunk.reset_index(drop=True)
    return chunk.take(order).reset_index(drop=True)


def slice_masks(chunk: pd.DataFrame, days: np.ndarray, config: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit, validation, holdout) row masks of a chunk of whole devices; ``days``: the window's."""
    stamps = chunk["timestamp"]
    later = config.validation_days + config.holdout_days
    if config.validation_days >= 1 and len(days) > later:
        day = stamps.dt.floor("D")
        in_holdout = (day >= days[-config.holdout_days]).to_numpy() if config.holdout_days else np.zeros(len(chunk), bool)
        in_validation = (day >= days[-later]).to_numpy() & ~in_holdout
    else:
        if not 0 < config.validation_share < 1 - config.holdout_share:
            raise ValueError("validation_share and holdout_share must leave a share of each device's history to fit on")
        ticks = stamps.astype("int64").to_numpy().astype(np.float64)
        devices = chunk["device_id"].to_numpy()
        first = pd.Series(ticks).groupby(devices).transform("min").to_numpy()
        last = pd.Series(ticks).groupby(devices).transform("max").to_numpy()
        position = np.where(last > first, (ticks - first) / np.where(last > first, last - first, 1.0), 0.0)
        in_holdout = position > 1.0 - config.holdout_share if config.holdout_share > 0 else np.zeros(len(ticks), bool)
        in_validation = (position > 1.0 - config.holdout_share - config.validation_share) & ~in_holdout
    return ~(in_validation | in_holdout), in_validation, in_holdout


def _unit_hash(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per row, fixed by the row's values and ``seed``."""
    hashed = pd.util.hash_pandas_object(frame, index=False, hash_key=f"anomaly{seed:09d}"[:16]).to_numpy()
    return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _strata(rows: pd.DataFrame, cohort_columns: Sequence[str]) -> tuple[np.ndarray, pd.Index]:
    """Each row's stratum, as a position in the names ("cohort@YYYY-MM-DD") of the strata the
    rows hold: names are built once per stratum, not per row."""
    cohort, keys = cohort_index(rows, cohort_columns)
    day = _day_numbers(rows["timestamp"])
    codes, pairs = pd.factorize(cohort * 1_000_000 + (day - (day.min() if len(day) else 0)))
    first_day = day.min() if len(day) else 0
    names = [
        f"{keys.iloc[pair // 1_000_000]}@{(np.datetime64(int(first_day + pair % 1_000_000), 'D'))}" for pair in pairs
    ]
    return codes, pd.Index(names, dtype="str")


def _day_numbers(stamps: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 (UTC) of each timestamp."""
    return _naive_utc(stamps).astype("datetime64[D]").astype(np.int64)


def _naive_utc(stamps: pd.Series) -> np.ndarray:
    """The timestamps as naive UTC datetime64[ns] values."""
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps.to_numpy(dtype="datetime64[ns]")


@dataclasses.dataclass
class SamplePlan:
    """Which fitting rows the detectors, baselines and references are fitted on, and which
    devices the threshold and quality are measured on (module docstring)."""

    inclusion: pd.Series  # per stratum "cohort@day": the probability a fitting row is kept
    fit_rows: int  # the fitting slice's rows in the whole window
    devices: int
    evaluation_share: float  # the share of devices evaluated (1.0: all)
    seed: int

    @classmethod
    def build(cls, window: TrainingWindow, cohort_columns: Sequence[str], config: Any) -> SamplePlan:
        """One pass over the window's device, time and cohort columns, counting fitting rows."""
        counts: dict[str, int] = {}
        devices = 0
        for chunk in window.chunks(["device_id", "timestamp", *cohort_columns], window.slice_days(config)[0]):
            devices += chunk["device_id"].nunique()
            in_fit, _, _ = slice_masks(chunk, window.days, config)
            codes, names = _strata(chunk.loc[in_fit], cohort_columns)
            for stratum, n in zip(names, np.bincount(codes, minlength=len(names)), strict=True):
                counts[stratum] = counts.get(stratum, 0) + int(n)
        sizes = pd.Series(counts, dtype=np.int64).sort_index()
        return cls(
            inclusion=_inclusion(sizes, config.sample_rows),
            fit_rows=int(sizes.sum()),
            devices=devices,
            evaluation_share=min(1.0, config.evaluation_devices / devices) if devices else 1.0,
            seed=config.random_state,
        )

    @property
    def sampled(self) -> bool:
        return bool((self.inclusion < 1.0).any())

    def take(self, fit_rows: pd.DataFrame, cohort_columns: Sequence[str]) -> pd.DataFrame:
        """The sample's rows among a chunk's fitting rows (all of them below the budget)."""
        if not self.sampled or fit_rows.empty:
            return fit_rows
        codes, names = _strata(fit_rows, cohort_columns)
        probability = self.inclusion.reindex(names).fillna(1.0).to_numpy()[codes]
        return fit_rows.loc[_unit_hash(fit_rows[["device_id", "timestamp"]], self.seed) < probability]

    def evaluated(self, devices: pd.Series) -> np.ndarray:
        """Per row, whether its device is one of the evaluation devices."""
        return in_device_sample(devices, self.evaluation_share, self.seed + 1)


def in_device_sample(devices: pd.Series, share: float, seed: int) -> np.ndarray:
    """Per row, whether its device is in a uniform sample of ``share`` of the devices, fixed by a
    hash of the device id (so every chunk, and every day, agrees on the same devices)."""
    if share >= 1.0:
        return np.ones(len(devices), dtype=bool)
    return _unit_hash(devices.to_frame(), seed) < share


def _inclusion(sizes: pd.Series, budget: int) -> pd.Series:
    """Per stratum, the share of its rows kept: its proportional share of ``budget`` rows, and at
    least an equal share (up to its size); everything when the window is within budget."""
    total = int(sizes.sum())
    if total <= budget or not len(sizes):
        return pd.Series(1.0, index=sizes.index)
    quota = np.maximum(budget * sizes / total, np.minimum(sizes, budget / (2 * len(sizes))))
    return (quota / sizes).clip(upper=1.0)
