"""Incidents of consecutive days from chunks of whole devices, in memory bounded by the chunk.

A device's incidents depend only on its own rows and state, so each chunk of devices is tracked
through the run's days on its own, carrying its devices' state from day to day. A cohort incident
needs every device of the cohort: each chunk contributes its per-(cohort, bucket) device counts
and its anomalous rows, and the cohorts are tracked once all chunks are in. The result is the same
as :func:`anomaly_assets.core.incidents.detect_incidents` on all rows of each day at once, when
chunks arrive in the order the rows are stored (by device).

What stays in memory besides one chunk: the bucket counts (one table per day, summed as chunks
come), the incidents and end states of the devices that have one, and the anomalous rows, which
a cohort incident's figures (samples, severities, features, devices) are taken from. These grow
with the fleet but stay small: 0.3 million anomalous rows (1.1%) a day of the synthetic
100,000-device fleet take some 70 MB.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from anomaly_assets.core.incident_cohorts import (
    add_bucket_counts,
    cohort_bucket_counts,
    cohort_buckets_from_counts,
    cohort_incidents_from_buckets,
)
from anomaly_assets.core.incident_hysteresis import detect_device_incidents
from anomaly_assets.core.incident_records import incident_frame
from anomaly_assets.core.incident_rules import IncidentRules
from anomaly_assets.core.incidents import DayResult, day_result, split_states


def _plain(states: dict) -> dict:
    """A state as the incident_state table gives it back (JSON), so that carrying a state in
    memory from one day to the next equals storing and loading it."""
    return json.loads(json.dumps(states))


class IncidentDays:
    """Feed chunks of scored rows (whole devices, all of the run's days, a ``partition_date``
    column) with :meth:`add`; :meth:`results` then gives each day's :class:`DayResult`."""

    def __init__(
        self,
        days: Sequence[str],
        previous_states: dict[tuple[str, str], dict],
        rules: IncidentRules,
    ) -> None:
        self.days = list(days)
        self.rules = rules
        self.day_ends = {day: pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1) for day in self.days}
        self.initial_device_states, self.initial_cohort_states = split_states(previous_states)
        self.seen_devices: set[str] = set()
        self.device_frames: dict[str, list[pd.DataFrame]] = {day: [] for day in self.days}
        self.device_end_states: dict[str, dict[str, dict]] = {day: {} for day in self.days}
        self.suppressed = dict.fromkeys(self.days, 0)
        self.bucket_counts: dict[str, list[pd.DataFrame]] = {day: [] for day in self.days}
        self.flagged: dict[str, list[pd.DataFrame]] = {day: [] for day in self.days}
        self.open_device_incidents_entering = dict.fromkeys(self.days, 0)
        self._cohort_states_after: dict[str, dict] = {}

    def add(self, chunk: pd.DataFrame) -> None:
        devices = set(chunk["device_id"].dropna().astype("str").unique())
        self.seen_devices |= devices
        states = {d: self.initial_device_states[d] for d in sorted(devices) if d in self.initial_device_states}
        self._track(chunk, states)

    def _track(self, rows: pd.DataFrame, states: dict[str, dict]) -> None:
        by_day = rows["partition_date"] if len(rows) else pd.Series(dtype="object")
        for day in self.days:
            self.open_device_incidents_entering[day] += sum(1 for s in states.values() if s.get("open"))
            day_rows = rows.loc[by_day == day] if len(rows) else rows
            frame, states, quiet = detect_device_incidents(day_rows, states, self.rules, day, self.day_ends[day])
            states = _plain(states)
            self.device_frames[day].append(frame)
            self.device_end_states[day].update(states)
            self.suppressed[day] += quiet
            # Summed as they come: a table per (cohort, bucket), however many chunks.
            self.bucket_counts[day] = [add_bucket_counts([*self.bucket_counts[day], cohort_bucket_counts(day_rows, self.rules)])]
            flagged = day_rows.loc[day_rows["is_anomaly"].astype(bool)] if len(day_rows) else day_rows
            if len(flagged):
                self.flagged[day].append(flagged)

    def open_entering(self, day: str) -> int:
        """Incidents (device and cohort) open when ``day`` began."""
        position = self.days.index(day)
        cohorts = self.initial_cohort_states if position == 0 else self._cohort_states_after[self.days[position - 1]]
        return self.open_device_incidents_entering[day] + sum(1 for s in cohorts.values() if s.get("open"))

    def results(self) -> dict[str, DayResult]:
        """Each day's incidents and end states, the days in order."""
        # Devices with an open state that sent nothing in the run: their incidents still age.
        leftover = {d: s for d, s in sorted(self.initial_device_states.items()) if d not in self.seen_devices}
        if leftover:
            self._track(_no_rows(), leftover)
        out: dict[str, DayResult] = {}
        cohort_states = self.initial_cohort_states
        for day in self.days:
            buckets = cohort_buckets_from_counts(self.bucket_counts[day], self.rules)
            flagged = pd.concat(self.flagged[day], ignore_index=True) if self.flagged[day] else _no_rows()
            cohorts, cohort_states = cohort_incidents_from_buckets(
                buckets, flagged, cohort_states, self.rules, day, self.day_ends[day]
            )
            cohort_states = _plain(cohort_states)
            self._cohort_states_after[day] = cohort_states
            frames = [f for f in self.device_frames[day] if len(f)]
            if frames:  # in device order, as one call over all devices orders them
                devices = pd.concat(frames, ignore_index=True).sort_values("device_id", kind="stable", ignore_index=True)
                # Rebuilt from records, so each column's dtype is the one a single pass infers (a
                # chunk whose close reasons are all empty would otherwise make the column object).
                devices = incident_frame(devices.to_dict("records"))
            else:
                devices = detect_device_incidents(_no_rows(), {}, self.rules, day, self.day_ends[day])[0]
            device_states = dict(sorted(self.device_end_states[day].items()))
            out[day] = day_result(devices, cohorts, device_states, cohort_states, self.suppressed[day])
        return out


def _no_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "device_id": pd.Series(dtype="str"),
            "timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            "cohort": pd.Series(dtype="str"),
            "severity": pd.Series(dtype="float64"),
            "score": pd.Series(dtype="float64"),
            "is_anomaly": pd.Series(dtype="bool"),
            "partition_date": pd.Series(dtype="str"),
        }
    )
