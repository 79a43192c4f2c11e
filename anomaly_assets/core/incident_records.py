"""The incident record device and cohort incidents share: its id, its columns and its row.

An incident is tracked as a plain JSON-able dict (it is carried from one day to the next in the
incident state, timestamps as ISO text) and reported as a row of :data:`INCIDENT_COLUMNS`. Ids
are a hash of (kind, subject, start timestamp), so processing the same day again yields the same
ids. Both kinds weigh a sample's top features the same way and build the columns they share
with :func:`common_incident_row`. No Dagster import here.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import pandas as pd

from anomaly_assets.core.incident_rules import IncidentRules

INCIDENT_COLUMNS = (
    "incident_id",
    "kind",
    "device_id",
    "cohort",
    "status",
    "severity_level",
    "started_at",
    "opened_at",
    "last_anomaly_at",
    "ended_at",
    "close_reason",
    "samples",
    "anomalous_samples",
    "devices",
    "cohort_devices",
    "peak_share",
    "device_ids",
    "max_severity",
    "mean_severity",
    "max_score",
    "top_features",
    "cohort_incident_id",
    "first_partition",
    "last_partition",
    "model_name",
    "model_version",
)
FEATURE_COLUMNS = ("top_feature_1", "top_feature_2", "top_feature_3")
FEATURE_WEIGHTS = (3, 2, 1)  # a sample's first feature counts more than its third


def incident_id(kind: str, subject: str, started_at: pd.Timestamp) -> str:
    """Stable id: the same subject starting at the same instant is the same incident."""
    key = f"{kind}|{subject}|{to_utc(started_at).isoformat()}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def to_utc(value: Any) -> pd.Timestamp:
    if isinstance(value, str):
        return _utc_text(value)
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


@functools.lru_cache(maxsize=1 << 16)
def _utc_text(text: str) -> pd.Timestamp:
    """A state's ISO timestamps are parsed again for every sample that looks at them: once each."""
    stamp = pd.Timestamp(text)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def to_iso(value: pd.Timestamp | None) -> str | None:
    return None if value is None else to_utc(value).isoformat()


def _top_features(features: dict[str, int], limit: int = 3) -> str:
    ranked = sorted(features.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(name for name, _ in ranked[:limit])


def common_incident_row(incident: dict, partition: str, rules: IncidentRules) -> dict:
    """The columns device and cohort incidents share."""
    anomalous = incident["anomalous_samples"]
    return {
        "incident_id": incident["incident_id"],
        "cohort": incident["cohort"],
        "status": incident.get("status", "open"),
        "severity_level": rules.level(incident["max_severity"]),
        "started_at": to_utc(incident["started_at"]),
        "opened_at": to_utc(incident["opened_at"]),
        "last_anomaly_at": to_utc(incident["last_anomaly_at"]),
        "ended_at": to_utc(incident["ended_at"]) if incident.get("ended_at") else pd.NaT,
        "close_reason": incident.get("close_reason"),
        "anomalous_samples": anomalous,
        "max_severity": round(incident["max_severity"], 4),
        "mean_severity": round(incident["severity_sum"] / anomalous, 4) if anomalous else 0.0,
        "max_score": float(incident["max_score"]),
        "top_features": _top_features(incident["features"]),
        "cohort_incident_id": None,
        "first_partition": incident["first_partition"],
        "last_partition": partition,
        "model_name": incident.get("model_name"),
        "model_version": incident.get("model_version"),
    }


def incident_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(INCIDENT_COLUMNS))
    for column in ("started_at", "opened_at", "last_anomaly_at", "ended_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame
