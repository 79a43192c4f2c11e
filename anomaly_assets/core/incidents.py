"""Incidents of one day: device and cohort incidents together, continuing from the day before.

Processing is one day at a time: the state at the end of a day (open incidents, the last
samples of the hysteresis window, cooldowns) is a plain JSON-able dict per (kind, subject), so
the next day continues incidents that span midnight. Incident ids are a hash of (kind, subject,
start timestamp), so processing the same day again yields the same ids.

The parts live beside this module: the thresholds and severity levels in
:mod:`~anomaly_assets.core.incident_rules`, the incident's id, columns and row in
:mod:`~anomaly_assets.core.incident_records`, device incidents (hysteresis and cooldown) in
:mod:`~anomaly_assets.core.incident_hysteresis`, cohort incidents in
:mod:`~anomaly_assets.core.incident_cohorts`, and consecutive days a chunk of devices at a time in
:mod:`~anomaly_assets.core.incident_days`. No Dagster import here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from anomaly_assets.core.incident_cohorts import attach_to_cohorts, detect_cohort_incidents
from anomaly_assets.core.incident_hysteresis import detect_device_incidents
from anomaly_assets.core.incident_rules import IncidentRules


@dataclasses.dataclass
class DayResult:
    incidents: pd.DataFrame  # every incident touched (opened, continued or closed) by the day
    states: dict[tuple[str, str], dict[str, Any]]  # (kind, subject) -> state at the day's end
    suppressed_samples: int  # anomalous samples that fell into a device's cooldown


def split_states(states: dict[tuple[str, str], dict]) -> tuple[dict[str, dict], dict[str, dict]]:
    """The device states and the cohort states of a day's end state, each by subject."""
    device_states = {subject: s for (kind, subject), s in states.items() if kind == "device"}
    cohort_states = {subject: s for (kind, subject), s in states.items() if kind == "cohort"}
    return device_states, cohort_states


def day_result(
    devices: pd.DataFrame,
    cohorts: pd.DataFrame,
    device_states: dict[str, dict],
    cohort_states: dict[str, dict],
    suppressed: int,
) -> DayResult:
    """A day's device and cohort incidents and end states as one result: the device incidents
    attached to the cohort incidents they overlap, the cohort incidents first."""
    devices = attach_to_cohorts(devices, cohorts)
    frames = [frame for frame in (cohorts, devices) if len(frame)]
    incidents = pd.concat(frames, ignore_index=True) if frames else devices
    states = {("device", k): v for k, v in device_states.items()} | {("cohort", k): v for k, v in cohort_states.items()}
    return DayResult(incidents=incidents.reset_index(drop=True), states=states, suppressed_samples=suppressed)


def detect_incidents(
    scored: pd.DataFrame,
    previous_states: dict[tuple[str, str], dict],
    rules: IncidentRules,
    partition: str,
    day_end: pd.Timestamp,
) -> DayResult:
    """Device and cohort incidents of one day, continuing from the previous day's end state."""
    device_states, cohort_states = split_states(previous_states)
    devices, device_end_states, suppressed = detect_device_incidents(scored, device_states, rules, partition, day_end)
    cohorts, cohort_end_states, _ = detect_cohort_incidents(scored, cohort_states, rules, partition, day_end)
    return day_result(devices, cohorts, device_end_states, cohort_end_states, suppressed)
