"""Retention rules: cut-off dates per table and which model versions to archive (no I/O)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping

# Results tables and their default maximum age in days (by the day the row belongs to).
DEFAULT_MAX_AGE_DAYS: dict[str, int] = {
    "anomaly_events": 90,
    "quarantined_telemetry": 30,
    "alert_delivery_log": 180,
    "incidents": 180,
    "incident_state": 14,
    "device_daily_summary": 365,
}


def cutoff(as_of: dt.date, max_age_days: int) -> str:
    """Rows of days before the returned ISO date are older than ``max_age_days``."""
    if max_age_days < 0:
        raise ValueError(f"max_age_days must be >= 0, got {max_age_days}")
    return (as_of - dt.timedelta(days=max_age_days)).isoformat()


def validate_ages(max_age_days: Mapping[str, int], known: Iterable[str]) -> None:
    known = sorted(known)
    unknown = sorted(set(max_age_days) - set(known))
    if unknown:
        raise ValueError(f"retention max_age_days names unknown tables {unknown}; known tables: {known}")
    negative = {k: v for k, v in max_age_days.items() if v < 0}
    if negative:
        raise ValueError(f"retention max_age_days must be >= 0, got {negative}")
    log, kept = max_age_days.get("alert_delivery_log"), max_age_days.get("incidents")
    if log is not None and kept is not None and log < kept:
        # a re-processed day would find incidents without their delivery rows and alert again
        raise ValueError(
            f"alert_delivery_log ({log} days) must be kept at least as long as incidents ({kept} days), "
            "or re-processing an old day would send its alerts again"
        )


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    version: str
    aliases: tuple[str, ...] = ()
    archived: bool = False


@dataclasses.dataclass(frozen=True)
class ArchivePlan:
    archive: list[str]  # versions to tag archived=true now
    already_archived: list[str]
    kept_recent: list[str]
    kept_aliased: list[str]


def plan_archive(versions: Iterable[VersionInfo], keep_last: int, protected_alias: str = "champion") -> ArchivePlan:
    """Archive every version older than the newest ``keep_last`` that carries no alias.

    The ``protected_alias`` (champion) is never archived, nor is any other aliased version (e.g.
    challenger), however old.
    """
    if keep_last < 0:
        raise ValueError(f"keep_last_versions must be >= 0, got {keep_last}")
    ordered = sorted(versions, key=lambda v: int(v.version), reverse=True)
    recent = [v.version for v in ordered[:keep_last]]
    archive, already, aliased = [], [], []
    for v in ordered[keep_last:]:
        if v.aliases:  # champion (protected_alias) or any other alias
            aliased.append(v.version)
        elif v.archived:
            already.append(v.version)
        else:
            archive.append(v.version)
    return ArchivePlan(archive=archive, already_archived=already, kept_recent=recent, kept_aliased=aliased)
