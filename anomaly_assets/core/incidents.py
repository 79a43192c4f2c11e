"""Incidents from scored rows: per-device hysteresis and cooldown, and cohort-level incidents.

A device incident opens when ``open_k`` of the device's last ``open_n`` samples are anomalous and
closes after ``close_m`` consecutive normal samples (or when the device sends nothing for
``stale_after_minutes``). After closing, the device cannot open a new incident for
``cooldown_minutes``; anomalous samples inside the cooldown are counted as suppressed.

A cohort incident fires when, in one time bucket, an unusual share of a cohort's reporting devices
is flagged (a bad firmware release): ``cohort_min_share`` of at least ``cohort_min_devices``
devices, with at least ``cohort_min_flagged_devices`` flagged; a device counts as flagged in a
bucket with at least ``cohort_min_device_samples`` anomalous samples there. Consecutive firing buckets form
one incident, which closes after ``cohort_close_after_buckets`` quiet buckets. Device incidents
of that cohort overlapping it are attached to it (``cohort_incident_id``) and not alerted alone.

Processing is one day at a time: the state at the end of a day (open incidents, the last
samples of the hysteresis window, cooldowns) is a plain JSON-able dict, so the next day continues
incidents that span midnight. Incident ids are a hash of (kind, subject, start timestamp), so
processing the same day again yields the same ids. No Dagster import here.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd

SEVERITY_LEVELS = ("low", "medium", "high", "critical")
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
REQUIRED_SCORED_COLUMNS = ("device_id", "timestamp", "cohort", "score", "severity", "is_anomaly")
FEATURE_COLUMNS = ("top_feature_1", "top_feature_2", "top_feature_3")
FEATURE_WEIGHTS = (3, 2, 1)  # a sample's first feature counts more than its third
DEVICE_IDS_LIMIT = 50  # a cohort incident lists at most this many device ids


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


def incident_id(kind: str, subject: str, started_at: pd.Timestamp) -> str:
    """Stable id: the same subject starting at the same instant is the same incident."""
    key = f"{kind}|{subject}|{_utc(started_at).isoformat()}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclasses.dataclass
class DayResult:
    incidents: pd.DataFrame  # every incident touched (opened, continued or closed) by the day
    states: dict[tuple[str, str], dict[str, Any]]  # (kind, subject) -> state at the day's end
    suppressed_samples: int  # anomalous samples that fell into a device's cooldown


# --------------------------------------------------------------------------------------------
# device incidents


def _utc(value: Any) -> pd.Timestamp:
    if isinstance(value, str):
        return _utc_text(value)
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


@functools.lru_cache(maxsize=1 << 16)
def _utc_text(text: str) -> pd.Timestamp:
    """A state's ISO timestamps are parsed again for every sample that looks at them: once each."""
    stamp = pd.Timestamp(text)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _iso(value: pd.Timestamp | None) -> str | None:
    return None if value is None else _utc(value).isoformat()


def _new_incident(device_id: str, cohort: str | None, window: list[list], partition: str, meta: dict) -> dict:
    first = next(i for i, entry in enumerate(window) if entry[1])
    span = window[first:]
    started = _utc(span[0][0])
    incident = {
        "incident_id": incident_id("device", device_id, started),
        "device_id": device_id,
        "cohort": cohort,
        "started_at": _iso(started),
        "opened_at": span[-1][0],
        "last_anomaly_at": None,
        "last_seen_at": span[-1][0],
        "samples": 0,
        "anomalous_samples": 0,
        "severity_sum": 0.0,
        "max_severity": 0.0,
        "max_score": -np.inf,
        "features": {},
        "normal_run": 0,
        "first_partition": partition,
        **meta,
    }
    for entry in span:
        _add_sample(incident, entry)
    return incident


def _add_sample(incident: dict, entry: list) -> None:
    """entry: [iso timestamp, is_anomaly, severity, score, feature_1, feature_2, feature_3]."""
    incident["samples"] += 1
    incident["last_seen_at"] = entry[0]
    if not entry[1]:
        incident["normal_run"] += 1
        return
    incident["normal_run"] = 0
    incident["anomalous_samples"] += 1
    incident["last_anomaly_at"] = entry[0]
    incident["severity_sum"] += float(entry[2])
    incident["max_severity"] = max(incident["max_severity"], float(entry[2]))
    incident["max_score"] = max(incident["max_score"], float(entry[3]))
    for name, weight in zip(entry[4:7], FEATURE_WEIGHTS):
        if name:
            incident["features"][name] = incident["features"].get(name, 0) + weight


def _top_features(features: dict[str, int], limit: int = 3) -> str:
    ranked = sorted(features.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(name for name, _ in ranked[:limit])


def _close(incident: dict, at: str, reason: str, rules: IncidentRules) -> str:
    incident["status"] = "closed"
    incident["ended_at"] = at
    incident["close_reason"] = reason
    return _iso(_utc(at) + rules.cooldown)


def _incident_row(incident: dict, partition: str, rules: IncidentRules) -> dict:
    """The columns device and cohort incidents share."""
    anomalous = incident["anomalous_samples"]
    return {
        "incident_id": incident["incident_id"],
        "cohort": incident["cohort"],
        "status": incident.get("status", "open"),
        "severity_level": rules.level(incident["max_severity"]),
        "started_at": _utc(incident["started_at"]),
        "opened_at": _utc(incident["opened_at"]),
        "last_anomaly_at": _utc(incident["last_anomaly_at"]),
        "ended_at": _utc(incident["ended_at"]) if incident.get("ended_at") else pd.NaT,
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


def _device_row(incident: dict, partition: str, rules: IncidentRules) -> dict:
    return {
        **_incident_row(incident, partition, rules),
        "kind": "device",
        "device_id": incident["device_id"],
        "samples": incident["samples"],
        "devices": 1,
        "cohort_devices": None,
        "peak_share": None,
        "device_ids": incident["device_id"],
    }


def _expire(state: dict, now: pd.Timestamp, rules: IncidentRules, touched: dict) -> None:
    """Close an open incident whose device went quiet, drop an old window, end a past cooldown."""
    incident = state.get("open")
    if incident is not None and now - _utc(incident["last_seen_at"]) > rules.stale_after:
        state["cooldown_until"] = _close(incident, incident["last_seen_at"], "no_data", rules)
        touched[incident["incident_id"]] = incident
        state["open"] = None
    window = state.get("window") or []
    if window and now - _utc(window[-1][0]) > rules.stale_after:
        state["window"] = []
    if state.get("cooldown_until") and now >= _utc(state["cooldown_until"]):
        state["cooldown_until"] = None


def _utc_times(stamps: pd.Series) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(stamps)
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


def _idle(state: dict) -> bool:
    """No open incident, no cooldown, no anomalous sample in the window."""
    return state.get("open") is None and not state.get("cooldown_until") and not any(e[1] for e in state.get("window") or [])


def track_device(
    device_id: str,
    samples: pd.DataFrame,
    state: dict | None,
    rules: IncidentRules,
    partition: str,
    day_end: pd.Timestamp,
) -> tuple[list[dict], dict | None, int]:
    """Run one device's samples (sorted by time) through the hysteresis state machine.

    Returns the incidents it touched (as incident rows), its state at ``day_end`` (None when
    there is nothing to carry over) and how many anomalous samples fell into a cooldown.
    """
    state = json.loads(json.dumps(state)) if state else {"window": [], "cooldown_until": None, "open": None}
    touched: dict[str, dict] = {}
    if state.get("open") is not None:
        touched[state["open"]["incident_id"]] = state["open"]
    suppressed = 0
    times = list(_utc_times(samples["timestamp"]))  # boxed at once: far quicker than one at a time
    flags = samples["is_anomaly"].to_numpy(dtype=bool)
    flagged_at = np.flatnonzero(flags)
    severity = samples["severity"].to_numpy(dtype=float)
    score = samples["score"].to_numpy(dtype=float)
    features = [samples[c].tolist() if c in samples else [None] * len(samples) for c in FEATURE_COLUMNS]
    cohort = samples["cohort"].iloc[0] if len(samples) else (state.get("open") or {}).get("cohort")
    meta = {
        "model_name": samples["model_name"].iloc[-1] if "model_name" in samples and len(samples) else None,
        "model_version": str(samples["model_version"].iloc[-1]) if "model_version" in samples and len(samples) else None,
    }
    i = 0
    while i < len(times):
        if not flags[i] and _idle(state):
            # Until the next anomalous sample an idle device only fills its window with normal
            # samples, and of those only the last open_n can still be in it then: skip the rest.
            following = flagged_at[np.searchsorted(flagged_at, i) :]
            resume = int(following[0]) - rules.open_n if len(following) else len(times)
            if resume > i:
                state["window"], i = [], resume
                continue
        now, stamp = times[i], times[i].isoformat()
        entry = [stamp, bool(flags[i]), float(severity[i]), float(score[i]), features[0][i], features[1][i], features[2][i]]
        i += 1
        _expire(state, now, rules, touched)
        incident = state.get("open")
        if incident is not None:
            _add_sample(incident, entry)
            if meta["model_version"]:
                incident.update(meta)
            if incident["normal_run"] >= rules.close_m:
                state["cooldown_until"] = _close(incident, stamp, "recovered", rules)
                state["open"] = None
            continue
        if state.get("cooldown_until"):
            suppressed += int(entry[1])
            continue
        window = (state.get("window") or []) + [entry]
        window = window[-rules.open_n :]
        if sum(1 for e in window if e[1]) >= rules.open_k:
            incident = _new_incident(device_id, cohort, window, partition, meta)
            state["open"], state["window"] = incident, []
            touched[incident["incident_id"]] = incident
        else:
            state["window"] = window
    _expire(state, _utc(day_end), rules, touched)
    rows = [_device_row(incident, partition, rules) for incident in touched.values()]
    if state.get("window") and not any(e[1] for e in state["window"]):
        state["window"] = []
    keep = state.get("open") is not None or bool(state.get("window")) or bool(state.get("cooldown_until"))
    return rows, (state if keep else None), suppressed


def detect_device_incidents(
    scored: pd.DataFrame,
    previous_states: dict[str, dict],
    rules: IncidentRules,
    partition: str,
    day_end: pd.Timestamp,
) -> tuple[pd.DataFrame, dict[str, dict], int]:
    """Device incidents of one day; ``previous_states`` is the state at the previous day's end."""
    missing = [c for c in REQUIRED_SCORED_COLUMNS if c not in scored]
    if missing:
        raise ValueError(f"scored rows lack columns {missing} needed for incidents (have {list(scored.columns)})")
    rows: list[dict] = []
    states: dict[str, dict] = {}
    suppressed = 0
    flagged_devices = set(scored.loc[scored["is_anomaly"].astype(bool), "device_id"])
    active = flagged_devices | set(previous_states)
    frame = scored.loc[scored["device_id"].isin(active)].sort_values(["device_id", "timestamp"], kind="stable")
    groups = dict(tuple(frame.groupby("device_id", sort=True)))
    empty = frame.iloc[0:0]
    for device_id in sorted(active):
        touched, state, quiet = track_device(
            device_id, groups.get(device_id, empty), previous_states.get(device_id), rules, partition, day_end
        )
        rows.extend(touched)
        suppressed += quiet
        if state is not None:
            states[device_id] = state
    return incident_frame(rows), states, suppressed


def incident_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(INCIDENT_COLUMNS))
    for column in ("started_at", "opened_at", "last_anomaly_at", "ended_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


# --------------------------------------------------------------------------------------------
# cohort incidents


def cohort_buckets(scored: pd.DataFrame, rules: IncidentRules) -> pd.DataFrame:
    """Per (cohort, bucket): reporting devices, flagged devices, their share and whether it fires."""
    return cohort_buckets_from_counts([cohort_bucket_counts(scored, rules)], rules)


BUCKET_COLUMNS = ["cohort", "bucket", "devices", "flagged_devices", "share", "fires"]


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
        **_incident_row(incident, partition, rules),
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
            if incident is not None and bucket - _utc(incident["last_anomaly_at"]) >= quiet_after:
                incident["status"], incident["ended_at"], incident["close_reason"] = "closed", incident["last_anomaly_at"], "recovered"
                incident = None
            if incident is None:
                incident = {
                    "incident_id": incident_id("cohort", cohort, bucket),
                    "cohort": cohort,
                    "started_at": _iso(bucket),
                    "opened_at": _iso(bucket + rules.bucket),
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
            incident["last_anomaly_at"] = _iso(bucket + rules.bucket)
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
            if _utc(day_end) - _utc(incident["last_anomaly_at"]) >= quiet_after:
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


def detect_incidents(
    scored: pd.DataFrame,
    previous_states: dict[tuple[str, str], dict],
    rules: IncidentRules,
    partition: str,
    day_end: pd.Timestamp,
) -> DayResult:
    """Device and cohort incidents of one day, continuing from the previous day's end state."""
    device_states = {subject: s for (kind, subject), s in previous_states.items() if kind == "device"}
    cohort_states = {subject: s for (kind, subject), s in previous_states.items() if kind == "cohort"}
    devices, device_end_states, suppressed = detect_device_incidents(scored, device_states, rules, partition, day_end)
    cohorts, cohort_end_states, _ = detect_cohort_incidents(scored, cohort_states, rules, partition, day_end)
    devices = attach_to_cohorts(devices, cohorts)
    frames = [frame for frame in (cohorts, devices) if len(frame)]
    incidents = pd.concat(frames, ignore_index=True) if frames else devices
    states = {("device", k): v for k, v in device_end_states.items()} | {("cohort", k): v for k, v in cohort_end_states.items()}
    return DayResult(incidents=incidents.reset_index(drop=True), states=states, suppressed_samples=suppressed)
