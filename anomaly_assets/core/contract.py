"""The telemetry contract: what a valid telemetry row is, declared in one readable file.

The packaged contract lives in ``anomaly_assets/contracts/telemetry_contract.yaml``; its
comments explain every field. :func:`load_contract` reads and checks it strictly (an unknown
field or an impossible value is an error naming the field), so a typo never silently disables a
rule. :mod:`anomaly_assets.core.validation` turns a contract into Great Expectations
expectations, one per rule.

Fixed by the architecture (not configurable): the key columns ``device_id`` (text) and
``timestamp`` (tz-aware, UTC), which are never null and unique together, and the window rule
(a partition holds the rows of its own UTC day).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

DEVICE_ID = "device_id"
TIMESTAMP = "timestamp"
KEY_COLUMNS: tuple[str, str] = (DEVICE_ID, TIMESTAMP)
# Set by a source on a row it could not deliver whole (a CSV row cut off mid-way): the row is
# kept as far as it goes and quarantined with this text as its reason.
SOURCE_ERROR = "source_error"
UNKNOWN_COLUMN_POLICIES = ("drop", "keep")
DEFAULT_CONTRACT_PATH = Path(__file__).resolve().parent.parent / "contracts" / "telemetry_contract.yaml"

# The one accepted type per role; the contract file names them so a reader sees them.
KEY_TYPES = {DEVICE_ID: "string", TIMESTAMP: "timestamp_utc"}


class ContractError(ValueError):
    """The contract file is malformed: the message names the field and what is wrong."""


@dataclasses.dataclass(frozen=True)
class TelemetryContract:
    """The rules one day of telemetry must satisfy. Build it with :func:`load_contract`."""

    cohort_columns: tuple[str, ...]
    metrics: tuple[str, ...]
    # metric -> (low, high), inclusive; NaN metric values are allowed (sensor dropouts are data).
    ranges: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    max_bad_row_share: float = 0.05
    # Metrics that accumulate over a device's UTC day and must not decrease within it.
    counters: tuple[str, ...] = ()
    # Known columns that may be present (e.g. labels): passed through, not checked.
    optional_columns: tuple[str, ...] = ()
    device_id_max_length: int = 512
    # Every metric value must be finite and within +-limit, with or without a range: beyond it
    # (inf, 1e308) derived features overflow. Declared ranges are narrowed to it.
    metric_limit: float = 1e15
    unknown_columns: str = "drop"
    name: str = "telemetry"
    version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "cohort_columns", tuple(self.cohort_columns))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "counters", tuple(self.counters))
        object.__setattr__(self, "optional_columns", tuple(self.optional_columns))
        object.__setattr__(self, "ranges", {m: (float(lo), float(hi)) for m, (lo, hi) in self.ranges.items()})
        named = [*KEY_COLUMNS, *self.cohort_columns, *self.metrics, *self.optional_columns]
        repeated = sorted({c for c in named if named.count(c) > 1})
        if repeated:
            raise ContractError(f"columns named more than once in the contract: {repeated}")
        unknown = sorted((set(self.ranges) | set(self.counters)) - set(self.metrics))
        if unknown:
            raise ContractError(f"ranges/counters name columns that are not metrics: {unknown}")
        for metric, (low, high) in self.ranges.items():
            if math.isnan(low) or math.isnan(high) or low > high:
                raise ContractError(f"metrics.{metric}: min {low} must not exceed max {high}")
        if not 0.0 <= self.max_bad_row_share <= 1.0:
            raise ContractError(f"max_bad_row_share must lie in [0, 1], got {self.max_bad_row_share}")
        if self.unknown_columns not in UNKNOWN_COLUMN_POLICIES:
            raise ContractError(
                f"unknown_columns must be one of {UNKNOWN_COLUMN_POLICIES}, got {self.unknown_columns!r}"
            )
        if not (math.isfinite(self.metric_limit) and self.metric_limit > 0):
            raise ContractError(f"metric_limit must be a positive finite number, got {self.metric_limit}")
        if self.device_id_max_length < 1:
            raise ContractError(f"keys.device_id.max_length must be at least 1, got {self.device_id_max_length}")

    @property
    def required_columns(self) -> tuple[str, ...]:
        return (*KEY_COLUMNS, *self.cohort_columns, *self.metrics)

    @property
    def known_columns(self) -> tuple[str, ...]:
        return (*self.required_columns, *self.optional_columns, SOURCE_ERROR)

    def metric_bounds(self, metric: str) -> tuple[float, float]:
        """The inclusive bounds a metric's values must lie in: its range within +-metric_limit."""
        low, high = self.ranges.get(metric, (-math.inf, math.inf))
        return max(low, -self.metric_limit), min(high, self.metric_limit)

    @property
    def unique_key(self) -> tuple[str, str]:
        return KEY_COLUMNS

    def replace(self, **changes: Any) -> TelemetryContract:
        """A copy with some fields changed (e.g. a stricter ``max_bad_row_share`` in a test)."""
        return dataclasses.replace(self, **changes)

    def to_mapping(self) -> dict[str, Any]:
        """The contract in the file's shape (for metadata and round trips)."""
        metrics: dict[str, dict[str, Any]] = {}
        for metric in self.metrics:
            spec: dict[str, Any] = {}
            if metric in self.ranges:
                spec["min"], spec["max"] = self.ranges[metric]
            if metric in self.counters:
                spec["counter"] = True
            metrics[metric] = spec
        return {
            "name": self.name,
            "version": self.version,
            "keys": {
                DEVICE_ID: {"type": KEY_TYPES[DEVICE_ID], "max_length": self.device_id_max_length},
                TIMESTAMP: {"type": KEY_TYPES[TIMESTAMP]},
            },
            "cohort_columns": list(self.cohort_columns),
            "metrics": metrics,
            "optional_columns": list(self.optional_columns),
            "unknown_columns": self.unknown_columns,
            "max_bad_row_share": self.max_bad_row_share,
            "metric_limit": self.metric_limit,
        }


_TOP_LEVEL = {
    "name",
    "version",
    "keys",
    "cohort_columns",
    "metrics",
    "optional_columns",
    "unknown_columns",
    "max_bad_row_share",
    "metric_limit",
}
_METRIC_FIELDS = {"min", "max", "counter"}


def contract_from_mapping(spec: Mapping[str, Any], source: str = "contract") -> TelemetryContract:
    """Check a parsed contract file field by field and build the contract."""
    if not isinstance(spec, Mapping):
        raise ContractError(f"{source}: expected a mapping at the top level, got {type(spec).__name__}")
    unknown = sorted(set(spec) - _TOP_LEVEL)
    if unknown:
        raise ContractError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(_TOP_LEVEL)}")
    missing = sorted({"keys", "metrics"} - set(spec))
    if missing:
        raise ContractError(f"{source}: missing field(s) {missing}")

    keys = spec["keys"]
    if not isinstance(keys, Mapping) or set(keys) != set(KEY_COLUMNS):
        raise ContractError(f"{source}: keys must declare exactly {list(KEY_COLUMNS)}, got {list(keys or [])}")
    max_length = 512
    for column, declared in keys.items():
        declared = dict(declared or {})
        if declared.get("type", KEY_TYPES[column]) != KEY_TYPES[column]:
            raise ContractError(
                f"{source}: keys.{column}.type is {declared['type']!r}; only {KEY_TYPES[column]!r} is supported"
            )
        allowed = {"type", "max_length"} if column == DEVICE_ID else {"type"}
        extra = sorted(set(declared) - allowed)
        if extra:
            raise ContractError(f"{source}: unknown field(s) {extra} in keys.{column}; known: {sorted(allowed)}")
        if column == DEVICE_ID and "max_length" in declared:
            max_length = _integer(declared["max_length"], f"{source}: keys.device_id.max_length")

    metrics_spec = spec["metrics"]
    if not isinstance(metrics_spec, Mapping) or not metrics_spec:
        raise ContractError(
            f"{source}: metrics must map each metric name to its rule, e.g. 'cpu: {{min: 0, max: 100}}'"
        )
    ranges: dict[str, tuple[float, float]] = {}
    counters: list[str] = []
    for metric, declared in metrics_spec.items():
        declared = dict(declared or {})
        extra = sorted(set(declared) - _METRIC_FIELDS)
        if extra:
            raise ContractError(
                f"{source}: unknown field(s) {extra} in metrics.{metric}; known: {sorted(_METRIC_FIELDS)}"
            )
        if ("min" in declared) != ("max" in declared):
            raise ContractError(f"{source}: metrics.{metric} needs both min and max (use -.inf or .inf for no bound)")
        if "min" in declared:
            ranges[str(metric)] = (
                _number(declared["min"], f"{source}: metrics.{metric}.min"),
                _number(declared["max"], f"{source}: metrics.{metric}.max"),
            )
        counter = declared.get("counter", False)
        if not isinstance(counter, bool):
            raise ContractError(f"{source}: metrics.{metric}.counter must be true or false, got {counter!r}")
        if counter:
            counters.append(str(metric))

    try:
        return TelemetryContract(
            cohort_columns=tuple(_names(spec.get("cohort_columns", []), f"{source}: cohort_columns")),
            metrics=tuple(str(m) for m in metrics_spec),
            ranges=ranges,
            max_bad_row_share=_number(spec.get("max_bad_row_share", 0.05), f"{source}: max_bad_row_share"),
            metric_limit=_number(spec.get("metric_limit", 1e15), f"{source}: metric_limit"),
            counters=tuple(counters),
            optional_columns=tuple(_names(spec.get("optional_columns", []), f"{source}: optional_columns")),
            device_id_max_length=max_length,
            unknown_columns=str(spec.get("unknown_columns", "drop")),
            name=str(spec.get("name", "telemetry")),
            version=_integer(spec.get("version", 1), f"{source}: version"),
        )
    except ContractError as error:
        raise ContractError(f"{source}: {error}") from None


@functools.lru_cache(maxsize=8)
def _load(path: str) -> TelemetryContract:
    file = Path(path)
    try:
        spec = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(f"contract file {file} does not exist") from None
    except yaml.YAMLError as error:
        raise ContractError(f"contract file {file} is not valid YAML: {error}") from None
    return contract_from_mapping(spec, source=str(file))


def load_contract(path: str | Path | None = None) -> TelemetryContract:
    """The contract in ``path`` (default: the packaged ``telemetry_contract.yaml``)."""
    return _load(str(Path(path) if path is not None else DEFAULT_CONTRACT_PATH))


def _names(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ContractError(f"{where} must be a list of column names, got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"{where} must be a number, got {value!r}")
    return float(value)


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"{where} must be an integer, got {value!r}")
    return value
