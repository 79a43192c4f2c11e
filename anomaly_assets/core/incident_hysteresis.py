"""Device incidents: each device's samples through a hysteresis state machine with a cooldown.

A device incident opens when ``open_k`` of the device's last ``open_n`` samples are anomalous and
closes after ``close_m`` consecutive normal samples (or when the device sends nothing for
``stale_after_minutes``). After closing, the device cannot open a new incident for
``cooldown_minutes``; anomalous samples inside the cooldown are counted as suppressed.

A device's incidents depend only on its own rows and its state at the previous day's end (open
incident, the last samples of the hysteresis window, cooldown), which is why devices can be
tracked a chunk at a time (:mod:`anomaly_assets.core.incident_days`). No Dagster import here.
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

REQUIRED_SCORED_COLUMNS = ("device_id", "timestamp", "cohort", "score", "severity", "is_anomaly")


def _new_incident(device_id: str, cohort: str | None, window: list[list], partition: str, meta: dict) -> dict:
    first = next(i for i, entry in enumerate(window) if entry[1])
    span = window[first:]
    started = to_utc(span[0][0])
    incident = {
        "incident_id": incident_id("device", device_id, started),
        "device_id": device_id,
        "cohort": cohort,
        "started_at": to_iso(started),
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


def _close(incident: dict, at: str, reason: str, rules: IncidentRules) -> str:
    incident["status"] = "closed"
    incident["ended_at"] = at
    incident["close_reason"] = reason
    return to_iso(to_utc(at) + rules.cooldown)


def _device_row(incident: dict, partition: str, rules: IncidentRules) -> dict:
    return {
        **common_incident_row(incident, partition, rules),
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
    if incident is not None and now - to_utc(incident["last_seen_at"]) > rules.stale_after:
        state["cooldown_until"] = _close(incident, incident["last_seen_at"], "no_data", rules)
        touched[incident["incident_id"]] = incident
        state["open"] = None
    window = state.get("window") or []
    if window and now - to_utc(window[-1][0]) > rules.stale_after:
        state["window"] = []
    if state.get("cooldown_until") and now >= to_utc(state["cooldown_until"]):
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
    _expire(state, to_utc(day_end), rules, touched)
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
