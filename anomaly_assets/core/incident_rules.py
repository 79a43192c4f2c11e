"""The rules incidents are detected with, and the severity levels incidents are ranked by.

:class:`IncidentRules` holds every threshold of device incidents (hysteresis, cooldown, going
stale), of cohort incidents (bucket, share, counts) and of an incident's severity level; it is
the run config of ``device_incidents`` once checked. The severity levels stand apart from the
detection code because alert routing and the explorer order incidents by them too. No Dagster
import here.
"""

from __future__ import annotations

import dataclasses
import functools

import pandas as pd

SEVERITY_LEVELS = ("low", "medium", "high", "critical")


@dataclasses.dataclass(frozen=True)
class IncidentRules:
    open_k: int = 3
    open_n: int = 6
    close_m: int = 6
    cooldown_minutes: float = 60.0
    stale_after_minutes: float = 360.0
    # severity (0-100, 50 at the model's threshold) at or above which an incident gets the level
    medium_at: float = 65.0
    high_at: float = 80.0
    critical_at: float = 90.0
    cohort_bucket_minutes: int = 60
    cohort_min_share: float = 0.3
    cohort_min_flagged_devices: int = 3
    cohort_min_devices: int = 3
    # A device counts as flagged in a bucket with this many anomalous samples: within the alert
    # budget one anomalous sample is already rare (a calm fleet has at most 2 such devices in any
    # cohort-hour; a firmware regression, 5-7 of 16).
    cohort_min_device_samples: int = 1
    cohort_close_after_buckets: int = 3

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.open_k <= self.open_n:
            problems.append(f"open_k must be between 1 and open_n ({self.open_n}), got {self.open_k}")
        if self.close_m < 1:
            problems.append(f"close_m must be at least 1, got {self.close_m}")
        if self.cooldown_minutes < 0 or self.stale_after_minutes <= 0:
            problems.append("cooldown_minutes must be >= 0 and stale_after_minutes > 0")
        if not self.medium_at <= self.high_at <= self.critical_at:
            problems.append(f"severity levels must rise: medium_at {self.medium_at} <= high_at {self.high_at} <= critical_at {self.critical_at}")
        if not 0 < self.cohort_min_share <= 1:
            problems.append(f"cohort_min_share must be in (0, 1], got {self.cohort_min_share}")
        if min(self.cohort_bucket_minutes, self.cohort_close_after_buckets, self.cohort_min_device_samples) < 1:
            problems.append("cohort_bucket_minutes, cohort_close_after_buckets and cohort_min_device_samples must be at least 1")
        if problems:
            raise ValueError("invalid incident rules: " + "; ".join(problems))

    @functools.cached_property  # read for every sample: built once
    def cooldown(self) -> pd.Timedelta:
        return pd.Timedelta(minutes=self.cooldown_minutes)

    @functools.cached_property  # read for every sample: built once
    def stale_after(self) -> pd.Timedelta:
        return pd.Timedelta(minutes=self.stale_after_minutes)

    @functools.cached_property  # read for every sample: built once
    def bucket(self) -> pd.Timedelta:
        return pd.Timedelta(minutes=self.cohort_bucket_minutes)

    def level(self, severity: float) -> str:
        if severity >= self.critical_at:
            return "critical"
        if severity >= self.high_at:
            return "high"
        if severity >= self.medium_at:
            return "medium"
        return "low"


def severity_rank(level: str) -> int:
    if level not in SEVERITY_LEVELS:
        raise ValueError(f"unknown severity level {level!r}; expected one of {SEVERITY_LEVELS}")
    return SEVERITY_LEVELS.index(level)
