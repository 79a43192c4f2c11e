"""Row-level validation of one telemetry window: valid rows continue, every failing row is kept
in a quarantine frame with the rule it broke and why. Nothing is dropped silently:
``len(raw) == len(valid) + len(quarantined)`` always holds."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

QUARANTINE_COLUMNS = ("partition_date", "device_id", "timestamp", "rule", "reason", "row_json")


class SchemaError(ValueError):
    """The frame cannot be validated row by row: a required column is missing."""


@dataclasses.dataclass(frozen=True)
class TelemetryContract:
    cohort_columns: tuple[str, ...]
    metrics: tuple[str, ...]
    # metric -> (low, high), inclusive; NaN metric values are allowed (sensor dropouts are data).
    ranges: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    max_bad_row_share: float = 0.05

    @property
    def required_columns(self) -> tuple[str, ...]:
        return ("device_id", "timestamp", *self.cohort_columns, *self.metrics)


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    valid: pd.DataFrame
    quarantined: pd.DataFrame
    rule_counts: dict[str, int]

    @property
    def bad_row_share(self) -> float:
        total = len(self.valid) + len(self.quarantined)
        return len(self.quarantined) / total if total else 0.0


def validate_telemetry(
    raw: pd.DataFrame, contract: TelemetryContract, window_start: pd.Timestamp, window_end: pd.Timestamp
) -> ValidationResult:
    missing = [c for c in contract.required_columns if c not in raw.columns]
    if missing:
        raise SchemaError(f"telemetry is missing required column(s) {missing}; got {list(raw.columns)}")
    frame = raw.reset_index(drop=True)
    reasons = pd.Series(pd.NA, index=frame.index, dtype="object")
    rules = pd.Series(pd.NA, index=frame.index, dtype="object")

    def flag(mask: np.ndarray | pd.Series, rule: str, reason: Sequence[str] | str) -> None:
        mask = np.asarray(mask, dtype=bool) & rules.isna().to_numpy()  # first broken rule wins
        rules[mask] = rule
        reasons[mask] = reason if isinstance(reason, str) else np.asarray(reason, dtype=object)[mask]

    device = frame["device_id"].astype("str")
    flag(frame["device_id"].isna() | (device.str.strip() == ""), "device_id_present", "device_id is null or empty")
    timestamps = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce")
    flag(timestamps.isna(), "timestamp_valid", "timestamp is missing or unparseable")
    outside = (timestamps < window_start) | (timestamps >= window_end)
    flag(
        outside.fillna(False),
        "timestamp_in_window",
        "timestamp " + timestamps.astype("str") + f" outside [{window_start}, {window_end})",
    )
    for metric in contract.metrics:
        numeric = pd.to_numeric(frame[metric], errors="coerce")
        not_numeric = numeric.isna() & frame[metric].notna()
        flag(not_numeric, "metric_numeric", f"{metric}=" + frame[metric].astype("str") + " is not a number")
        frame[metric] = numeric.astype(np.float64)
        if metric in contract.ranges:
            low, high = contract.ranges[metric]
            out_of_range = (numeric < low) | (numeric > high)
            flag(out_of_range, "metric_in_range", f"{metric}=" + numeric.astype("str") + f" outside [{low}, {high}]")
    frame["timestamp"] = timestamps.astype("datetime64[ns, UTC]")
    frame["device_id"] = device

    # Duplicates among rows that are otherwise valid: exact copies keep the first and quarantine
    # the rest; conflicting rows for one (device, timestamp) are all quarantined (no way to pick).
    candidates = rules.isna()
    keyed = frame.loc[candidates]
    key_dup = keyed.duplicated(["device_id", "timestamp"], keep=False)
    exact_extra = keyed.duplicated(keep="first")
    conflicting_keys = keyed.loc[key_dup & ~keyed.duplicated(keep=False)][["device_id", "timestamp"]]
    conflicting = keyed.set_index(["device_id", "timestamp"]).index.isin(
        conflicting_keys.set_index(["device_id", "timestamp"]).index
    )
    flag(frame.index.isin(keyed.index[exact_extra & ~conflicting]), "unique_device_timestamp", "exact duplicate row")
    flag(
        frame.index.isin(keyed.index[conflicting]),
        "unique_device_timestamp",
        "conflicting rows for the same device_id and timestamp",
    )

    bad = rules.notna().to_numpy()
    quarantined = _quarantine_frame(raw.reset_index(drop=True).loc[bad], rules[bad], reasons[bad], window_start)
    valid = frame.loc[~bad].reset_index(drop=True)
    counts = {str(k): int(v) for k, v in rules[bad].value_counts().items()}
    assert len(valid) + len(quarantined) == len(raw), "validation lost rows"
    return ValidationResult(valid=valid, quarantined=quarantined, rule_counts=counts)


def _quarantine_frame(rows: pd.DataFrame, rules: pd.Series, reasons: pd.Series, window_start: pd.Timestamp) -> pd.DataFrame:
    records = rows.astype("object").where(rows.notna(), None).to_dict("records")
    return pd.DataFrame(
        {
            "partition_date": window_start.strftime("%Y-%m-%d"),
            "device_id": rows["device_id"].astype("str").to_numpy() if len(rows) else [],
            "timestamp": rows["timestamp"].astype("str").to_numpy() if len(rows) else [],
            "rule": rules.astype("str").to_numpy(),
            "reason": reasons.astype("str").to_numpy(),
            "row_json": [json.dumps(r, default=str, ensure_ascii=False) for r in records],
        },
        columns=list(QUARANTINE_COLUMNS),
    )
