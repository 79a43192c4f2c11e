"""What a validation reports: the result types (a rule's outcome, a window's split into valid
and quarantined rows) and the error a broken schema raises."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pandas as pd

QUARANTINE_COLUMNS = ("partition_date", "device_id", "timestamp", "rule", "reason", "row_json")
# Rule families in the order rules are applied: a quarantined row names the first rule it broke.
FAMILIES = ("schema", "keys", "window", "uniqueness", "ranges", "counters")
FAMILY_DESCRIPTIONS = {
    "schema": "required columns exist and have the contract's type",
    "keys": "the row arrived whole; device_id and timestamp are present and readable; device_id is not blank and not too long",
    "window": "timestamps lie inside the partition's UTC day",
    "uniqueness": "one row per (device_id, timestamp)",
    "ranges": "metric values lie within the contract's physical ranges",
    "counters": "counters do not decrease within a device-day",
}


class SchemaError(ValueError):
    """The frame cannot be validated row by row: a required column is missing or mistyped."""

    def __init__(self, message: str, rule_results: Sequence[RuleResult] = ()) -> None:
        super().__init__(message)
        self.rule_results = tuple(rule_results)

    @property
    def failed_rules(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.rule_results if r.breaks_schema)


@dataclasses.dataclass(frozen=True)
class RuleResult:
    """The outcome of one rule (one GX expectation) on one window."""

    rule: str  # e.g. "ranges.battery_level_pct"
    family: str
    expectation: str  # the GX expectation type, e.g. "expect_column_values_to_be_between"
    columns: tuple[str, ...]
    description: str  # what the rule demands
    success: bool
    element_count: int
    unexpected_count: int  # rows GX found breaking the rule (0 for a column-level rule)
    quarantined_count: int = 0  # rows quarantined with this rule as the first rule they broke
    observed: str | None = None  # a column-level observation, e.g. the dtype found
    sample: tuple[dict[str, Any], ...] = ()  # a few failing rows: row, device_id, timestamp, value
    breaks_schema: bool = False  # a column-level failure: the frame cannot be split by rows

    def summary(self) -> dict[str, Any]:
        """JSON-ready for asset check metadata."""
        out: dict[str, Any] = {
            "rule": self.rule,
            "expectation": self.expectation,
            "success": self.success,
            "unexpected": self.unexpected_count,
            "quarantined": self.quarantined_count,
        }
        if self.observed is not None:
            out["observed"] = self.observed
        if self.sample:
            out["sample"] = list(self.sample)
        return out

    def message(self) -> str:
        """One line naming the rule, the count and example values."""
        if self.breaks_schema:
            what = "the column is missing" if self.observed == "missing" else f"observed {self.observed}"
        else:
            what = f"{self.unexpected_count} of {self.element_count} rows"
        examples = ", ".join(repr(s.get("value")) for s in self.sample[:3])
        return f"{self.rule} ({self.description}): {what}" + (f"; e.g. {examples}" if examples else "")


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    valid: pd.DataFrame
    quarantined: pd.DataFrame
    rule_counts: dict[str, int]  # first-broken rule -> quarantined rows; sums to len(quarantined)
    rule_results: tuple[RuleResult, ...] = ()
    unknown_columns: tuple[str, ...] = ()
    unknown_column_policy: str = "drop"
    seconds: float = 0.0
    valid_rows: int | None = None  # len(valid); kept by ``without_valid`` when the rows go elsewhere

    def __post_init__(self) -> None:
        if self.valid_rows is None:
            object.__setattr__(self, "valid_rows", len(self.valid))

    def without_valid(self) -> ValidationResult:
        """This result without its valid rows (written elsewhere): counts, rules and quarantine kept."""
        return dataclasses.replace(self, valid=self.valid.iloc[0:0].copy(), valid_rows=self.valid_rows)

    @property
    def raw_rows(self) -> int:
        return self.valid_rows + len(self.quarantined)

    @property
    def bad_row_share(self) -> float:
        total = self.raw_rows
        return len(self.quarantined) / total if total else 0.0

    def family_results(self, family: str) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.rule_results if r.family == family)
