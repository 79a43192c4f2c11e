"""Cohort incidents: an unusual share of a cohort's devices flagged in the same time bucket.

A cohort incident fires when, in one time bucket, an unusual share of a cohort's reporting devices
is flagged (a bad firmware release): ``cohort_min_share`` of at least ``cohort_min_devices``
devices, with at least ``cohort_min_flagged_devices`` flagged; a device counts as flagged in a
bucket with at least ``cohort_min_device_samples`` anomalous samples there. Consecutive firing buckets form
one incident, which closes after ``cohort_close_after_buckets`` quiet buckets. Device incidents
of that cohort overlapping it are attached to it (``cohort_incident_id``) and not alerted alone.

Unlike a device's, a cohort's incidents need every device of the cohort. The bucket table is
therefore built from per-(cohort, bucket) counts that chunks of whole devices add up
(:func:`cohort_bucket_counts`, :func:`add_bucket_counts`), and the incidents from that table and
the day's anomalous rows. No Dagster import here.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from anomaly_assets.core.incident_records import (
    FEATURE_COLUMNS,
    FEATURE_WEIGHTS,
    common_incident_row,
    incident_frame,
    incident_id,
    to_iso,
    to_utc,
)
from anomaly_assets.core.incident_rules import IncidentRules

BUCKET_COLUMNS = ["cohort", "bucket", "devices", "flagged_devices", "share", "fires"]
DEVICE_IDS_LIMIT = 50  # a cohort incident lists at most this many device ids


def cohort_buckets(scored: pd.DataFrame, rules: IncidentRules) -> pd.DataFrame:
    """Per (cohort, bucket): reporting devices, flagged devices, their share and whether it fires."""
    return cohort_buckets_from_counts([cohort_bucket_counts(scored, rules)], rules)


def cohort_bucket_counts(scored: pd.DataFrame, rules: IncidentRules) -> pd.DataFrame:
    """Per (cohort, bucket) of ``scored``: reporting devices and flagged devices. Counts of chunks
    holding disjoint sets of whole devices add up to the counts of all their rows."""
    if scored.empty:
        return _no_counts()
    frame = scored.assign(bucket=scored["timestamp"].dt.floor(f"{rules.cohort_bucket_minutes}min"))
    devices = frame.groupby(["cohort", "bucket"])["device_id"].nunique().rename("devices")
    per_device = frame.loc[frame["is_anomaly"].astype(bool)].groupby(["cohort", "bucket", "device_id"]).size()
    flagged = per_device.loc[per_device >= rules.cohort_min_device_samples].groupby(level=["cohort", "bucket"]).size()
    table = pd.concat([devices, flagged.rename("flagged_devices")], axis=1).fillna({"flagged_devices": 0}).reset_index()
    return table.astype({"devices": "int64", "flagged_devices": "int64"})


def _no_counts() -> pd.DataFrame:
    return pd.DataFrame({"cohort": [], "bucket": [], "devices": [], "flagged_devices": []})


def add_bucket_counts(counts: list[pd.DataFrame]) -> pd.DataFrame:
    """The sum of :func:`cohort_bucket_counts` tables (chunks of whole devices): one table."""
    counts = [c for c in counts if len(c)]
    if not counts:
        return _no_counts()
    table = counts[0] if len(counts) == 1 else pd.concat(counts).groupby(["cohort", "bucket"], as_index=False).sum()
    return table.astype({"devices": "int64", "flagged_devices": "int64"})


def cohort_buckets_from_counts(counts: list[pd.DataFrame], rules: IncidentRules) -> pd.DataFrame:
    """:func:`cohort_buckets` from the counts of chunks of whole devices."""
    table = add_bucket_counts(counts)
    if table.empty:
        return pd.DataFrame(columns=BUCKET_COLUMNS)
    table["share"] = table["flagged_devices"] / table["devices"]
    table["fires"] = (
        (table["devices"] >= rules.cohort_min_devices)
        & (table["flagged_devices"] >= rules.cohort_min_flagged_devices)
        & (table["share"] >= rules.cohort_min_share)
    )
    return table[BUCKET_COLUMNS].sort_values(["cohort", "bucket"], ignore_index=True)


def _cohort_row(incident: dict, partition: str, rules: IncidentRules) -> dict:
    device_ids = sorted(incident["device_ids"])
    return {
        **common_incident_row(incident, partition, rules),
        "kind": "cohort",
        "device_id": None,
        "samples": incident["buckets"],
        "devices": len(device_ids),
        "cohort_devices": incident["cohort_devices"],
        "peak_share": round(incident["peak_share"], 4),
        "device_ids": ", ".join(device_ids[:DEVICE_IDS_LIMIT]) + (" ..." if len(device_ids) > DEVICE_IDS_LIMIT else ""),
    }


def detect_cohort_incidents(
    scored: pd.DataFrame,
    previous_states: dict[str, dict],
    rules: IncidentRules,
    partition: str,
    day_end: pd.Timestamp,
) -> tuple[pd.DataFrame, dict[str, dict], pd.DataFrame]:
    """Cohort incidents of one day, the cohorts' state at the day's end, and the bucket table."""
    buckets = cohort_buckets(scored, rules)
    flagged = scored.loc[scored["is_anomaly"].astype(bool)]
    incidents, states = cohort_incidents_from_buckets(buckets, flagged, previous_states, rules, partition, day_end)
    return incidents, states, buckets


def cohort_incidents_from_buckets(
    buckets: pd.DataFrame,
    flagged: pd.DataFrame,
    previous_states: dict[str, dict],
    rules: IncidentRules,
    partition: str,
    day_end: pd.Timestamp,
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Cohort incidents of one day from its bucket table and its anomalous rows (in the order the
    day's rows are stored); with the cohorts' state at the day's end."""
    firing = buckets.loc[buckets["fires"]]
    if len(flagged):
        flagged = flagged.assign(bucket=flagged["timestamp"].dt.floor(f"{rules.cohort_bucket_minutes}min"))
    quiet_after = rules.bucket * rules.cohort_close_after_buckets
    touched: dict[str, dict] = {}
    states: dict[str, dict] = {}
    for cohort in sorted(set(firing["cohort"]) | set(previous_states)):
        incident = json.loads(json.dumps(previous_states[cohort]["open"])) if cohort in previous_states else None
        if incident is not None:
            touched[incident["incident_id"]] = incident
        cohort_firing = firing.loc[firing["cohort"] == cohort]
        cohort_flags = flagged.loc[flagged["cohort"] == cohort] if len(flagged) else flagged
        for bucket, devices, share in zip(cohort_firing["bucket"], cohort_firing["devices"], cohort_firing["share"]):
            if incident is not None and bucket - to_utc(incident["last_anomaly_at"]) >= quiet_after:
                incident["status"], incident["ended_at"], incident["close_reason"] = "closed", incident["last_anomaly_at"], "recovered"
                incident = None
            if incident is None:
                incident = {
                    "incident_id": incident_id("cohort", cohort, bucket),
                    "cohort": cohort,
                    "started_at": to_iso(bucket),
                    "opened_at": to_iso(bucket + rules.bucket),
                    "buckets": 0,
                    "anomalous_samples": 0,
                    "severity_sum": 0.0,
                    "max_severity": 0.0,
                    "max_score": -np.inf,
                    "features": {},
                    "device_ids": [],
                    "cohort_devices": 0,
                    "peak_share": 0.0,
                    "first_partition": partition,
                }
                touched[incident["incident_id"]] = incident
            rows = cohort_flags.loc[cohort_flags["bucket"] == bucket]
            per_device = rows["device_id"].value_counts()
            rows = rows.loc[rows["device_id"].isin(per_device.index[per_device >= rules.cohort_min_device_samples])]
            incident["buckets"] += 1
            incident["last_anomaly_at"] = to_iso(bucket + rules.bucket)
            incident["anomalous_samples"] += len(rows)
            incident["severity_sum"] += float(rows["severity"].sum())
            incident["max_severity"] = max(incident["max_severity"], float(rows["severity"].max()))
            incident["max_score"] = max(incident["max_score"], float(rows["score"].max()))
            incident["device_ids"] = sorted(set(incident["device_ids"]) | set(map(str, rows["device_id"])))
            incident["cohort_devices"] = max(incident["cohort_devices"], int(devices))
            incident["peak_share"] = max(incident["peak_share"], float(share))
            for column, weight in zip(FEATURE_COLUMNS, FEATURE_WEIGHTS):
                if column in rows:
                    for name, count in rows[column].dropna().value_counts().items():
                        incident["features"][name] = incident["features"].get(name, 0) + weight * int(count)
            if "model_version" in rows and len(rows):
                incident["model_name"] = rows["model_name"].iloc[-1] if "model_name" in rows else None
                incident["model_version"] = str(rows["model_version"].iloc[-1])
        if incident is not None:
            if to_utc(day_end) - to_utc(incident["last_anomaly_at"]) >= quiet_after:
                incident["status"], incident["ended_at"], incident["close_reason"] = "closed", incident["last_anomaly_at"], "recovered"
            else:
                states[cohort] = {"open": incident}
    rows = [_cohort_row(incident, partition, rules) for incident in touched.values()]
    return incident_frame(rows), states


def attach_to_cohorts(device_incidents: pd.DataFrame, cohort_incidents: pd.DataFrame) -> pd.DataFrame:
    """Set ``cohort_incident_id`` on device incidents of a cohort that overlap its cohort incident."""
    out = device_incidents.copy()
    if out.empty or cohort_incidents.empty:
        return out
    device_end = out["ended_at"].fillna(out["last_anomaly_at"])
    for cohort_incident in cohort_incidents.itertuples(index=False):
        end = cohort_incident.ended_at if pd.notna(cohort_incident.ended_at) else cohort_incident.last_anomaly_at
        overlaps = (
            (out["cohort"] == cohort_incident.cohort)
            & (out["started_at"] <= end)
            & (device_end >= cohort_incident.started_at)
            & out["cohort_incident_id"].isna()
        )
        out.loc[overlaps, "cohort_incident_id"] = cohort_incident.incident_id
    return out
