"""Row-level validation of one telemetry window with Great Expectations 1.x.

The telemetry contract (:mod:`anomaly_assets.core.contract`) becomes two expectation suites,
one expectation per rule, run on an ephemeral GX context with a pandas data source:

1. the *schema* suite on the frame as delivered: every required column exists and has the
   contract's type. A missing column, or a column whose type is wrong as a whole (a metric
   arriving as strings), breaks the schema: :class:`SchemaError` names the rules, the columns
   and example values, and no row is split. Individual values of the wrong type inside a mixed
   (``object``) column are row-level failures instead, and those rows are quarantined.
2. the *row* suite on a narrow typed frame: keys, window, uniqueness, ranges and counters.

Rows are quarantined from GX's own ``unexpected_index_list`` (result format ``COMPLETE``), so
what GX reports and what is quarantined cannot disagree. For speed, each suite first runs with
result format ``BOOLEAN_ONLY`` and only the rules that failed run again with ``COMPLETE``; suites
are built once per contract and window, and GX's verdict on a zero-row frame (the schema suite)
is kept per set of column types. The one deliberate narrowing is
uniqueness: GX reports every row of a duplicated group; of exact copies the first one is kept
and the others quarantined, and conflicting rows for one (device_id, timestamp) are all
quarantined, since there is no way to pick one.

Each quarantined row carries the first rule it broke (in family order) and a reason, and
nothing is dropped silently: ``len(raw) == len(valid) + len(quarantined)`` always holds.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from anomaly_assets.core.contract import DEVICE_ID, KEY_COLUMNS, TIMESTAMP, TelemetryContract

__all__ = [
    "FAMILIES",
    "FAMILY_DESCRIPTIONS",
    "QUARANTINE_COLUMNS",
    "RuleResult",
    "SchemaError",
    "TelemetryContract",
    "ValidationResult",
    "validate_telemetry",
]

QUARANTINE_COLUMNS = ("partition_date", "device_id", "timestamp", "rule", "reason", "row_json")
# Rule families in the order rules are applied: a quarantined row names the first rule it broke.
FAMILIES = ("schema", "keys", "window", "uniqueness", "ranges", "counters")
FAMILY_DESCRIPTIONS = {
    "schema": "required columns exist and have the contract's type",
    "keys": "device_id and timestamp are present; device_id is not blank and not too long",
    "window": "timestamps lie inside the partition's UTC day",
    "uniqueness": "one row per (device_id, timestamp)",
    "ranges": "metric values lie within the contract's physical ranges",
    "counters": "counters do not decrease within a device-day",
}
METRIC_TYPES = ["float64", "int64", "float", "int"]  # a metric value must be one of these
# Derived columns of the frame the row suite runs on (never part of the output):
PREVIOUS_PREFIX = "__previous__"  # + counter: its previous value within the device-day
FINGERPRINT = "__row_fingerprint"  # the whole delivered row's hash class; NaN unless its key repeats
BLANK = r"^[ \t\r\n\f\v]*$"  # empty or only (ASCII) whitespace; pyarrow runs \s ten times slower
SAMPLE_SIZE = 5
_RESULT_FORMAT = {"result_format": "COMPLETE", "return_unexpected_index_query": False}
_QUICK_FORMAT = {"result_format": "BOOLEAN_ONLY"}  # whether each rule holds, nothing more


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


# --------------------------------------------------------------------------- GX plumbing


class _GX:
    """One ephemeral GX context per process: a pandas data source with one dataframe asset."""

    _lock = threading.Lock()
    _instance: _GX | None = None

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.expectations.expectation import Expectation
        from great_expectations.validator.v1_validator import Validator

        self.gx = gx
        self.validator = Validator
        self.expectation_class = Expectation
        # GX fingerprints every pandas batch below this size for its batch markers, which nothing
        # here reads; hashing each batch cost ~0.4 s per million rows.
        from great_expectations.execution_engine import pandas_execution_engine

        if hasattr(pandas_execution_engine, "HASH_THRESHOLD"):
            pandas_execution_engine.HASH_THRESHOLD = 0
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = self.context.data_sources.add_pandas("telemetry")
        self.batch_definition = source.add_dataframe_asset("telemetry_window").add_batch_definition_whole_dataframe(
            "whole_window"
        )

    @classmethod
    def get(cls) -> _GX:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def suites(self, name: str, rules: Sequence[_Rule]) -> tuple[_Suite, ...]:
        """Rules grouped into suites of the columns they read (GX copies its whole batch frame
        for each column expectation, so narrow batches are much faster); rules that only read a
        column's type run on a zero-row frame with the same dtypes."""
        groups: dict[tuple[str, bool], list[_Rule]] = {}
        for rule in rules:
            groups.setdefault((rule.suite, rule.needs_rows), []).append(rule)
        return tuple(
            _Suite(
                name=f"{name}.{suite_name}",
                rules=tuple(group),
                columns=tuple(dict.fromkeys(c for r in group for c in r.columns)),
                needs_rows=needs_rows,
                suite=self.gx.ExpectationSuite(
                    name=f"{name}.{suite_name}", expectations=[r.expectation for r in group]
                ),
            )
            for (suite_name, needs_rows), group in groups.items()
        )

    def run(self, frame: pd.DataFrame, suites: Sequence[_Suite]) -> dict[str, Any]:
        """Validate ``suites`` on ``frame``; results keyed by rule name.

        A suite that reads rows runs twice at most: first asking GX only whether each rule holds
        (result format ``BOOLEAN_ONLY``: no unexpected values or indices to collect), then the
        rules that failed again with ``COMPLETE`` results, whose ``unexpected_index_list`` the
        quarantine is taken from. A rule that holds has no unexpected rows to report, and on
        clean data the second run never happens."""
        results: dict[str, Any] = {}
        for suite in suites:
            columns = [c for c in suite.columns if c in frame.columns]
            if not suite.needs_rows:  # the outcome depends only on the columns and their dtypes
                dtypes = frame.dtypes
                key = tuple((c, str(dtypes[c]), repr(dtypes[c]), type(dtypes[c])) for c in columns)
                outcome = suite.typed_outcomes.get(key)
                if outcome is None:  # GX decides it once per set of dtypes
                    outcome = self._validate(frame[columns].iloc[:0], suite.suite, _RESULT_FORMAT)
                    suite.typed_outcomes.put(key, outcome)
                results.update({r.expectation_config.meta["rule"]: r for r in outcome.results})
                continue
            outcome = self._validate(frame[columns], suite.suite, _QUICK_FORMAT)
            results.update({r.expectation_config.meta["rule"]: r for r in outcome.results})
            failed = tuple(r.expectation_config.meta["rule"] for r in outcome.results if not r.success)
            if failed:
                detail = suite.subset(failed, self.gx)
                outcome = self._validate(frame[[c for c in detail.columns if c in frame]], detail.suite, _RESULT_FORMAT)
                results.update({r.expectation_config.meta["rule"]: r for r in outcome.results})
        return results

    def _validate(self, data: pd.DataFrame, suite: Any, result_format: dict[str, Any]) -> Any:
        # A validator of the batch definition builds the batch once (Batch.validate builds it twice).
        validator = self.validator(
            batch_definition=self.batch_definition, batch_parameters={"dataframe": data}, result_format=result_format
        )
        with _GX._lock, self._configurations_memoized():  # the data source and its batch cache are shared
            return validator.validate_expectation_suite(suite)

    @contextlib.contextmanager
    def _configurations_memoized(self) -> Any:
        """For one validation call, each expectation object's ``configuration`` is built once.

        GX rebuilds an expectation's configuration (a pydantic ``dict()``, a regex on the class
        name and a new ExpectationConfiguration) on every read of the property, about 90 times
        per expectation and validation: ~40% of a validation's fixed cost. The expectations GX
        reads it from are its own, created from the suite for this one call and not changed
        during it, so the value is the same on every read. The memo holds each object (its id
        cannot be reused meanwhile) and is dropped with the property restored when the call
        ends. The property is the class's, so this relies on this module being the process's
        one caller of GX validations, serialized by ``_GX._lock``."""
        expectation = self.expectation_class
        original = expectation.__dict__.get("configuration")
        if not isinstance(original, property):  # another GX release: validate without the memo
            yield
            return
        memo: dict[int, tuple[Any, Any]] = {}

        def configuration(instance: Any) -> Any:
            found = memo.get(id(instance))
            if found is None or found[0] is not instance:
                found = memo[id(instance)] = (instance, original.fget(instance))
            return found[1]

        expectation.configuration = property(configuration, doc=original.__doc__)
        try:
            yield
        finally:
            expectation.configuration = original
            memo.clear()


class _Cache:
    """A small thread-safe LRU mapping."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: dict[Any, Any] = {}
        self.lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self.lock:
            value = self.items.pop(key, None)
            if value is not None:
                self.items[key] = value
            return value

    def put(self, key: Any, value: Any) -> Any:
        with self.lock:
            self.items.pop(key, None)
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.pop(next(iter(self.items)))
            return value


@dataclasses.dataclass(frozen=True, eq=False)
class _Suite:
    name: str
    rules: tuple[_Rule, ...]
    columns: tuple[str, ...]
    needs_rows: bool
    suite: Any  # a GX ExpectationSuite, reused across calls
    # GX's outcomes of a suite that reads only column types, by the columns' dtypes
    typed_outcomes: _Cache = dataclasses.field(default_factory=lambda: _Cache(16))
    # suites of some of its rules (e.g. the ones that failed, to run again with complete results)
    subsets: _Cache = dataclasses.field(default_factory=lambda: _Cache(64))

    def subset(self, names: tuple[str, ...], gx: Any) -> _Suite:
        found = self.subsets.get(names)
        if found is None:
            rules = tuple(r for r in self.rules if r.name in names)
            found = _Suite(
                name=self.name,
                rules=rules,
                columns=tuple(dict.fromkeys(c for r in rules for c in r.columns)),
                needs_rows=True,
                suite=gx.ExpectationSuite(name=self.name, expectations=[copy.copy(r.expectation) for r in rules]),
            )
            self.subsets.put(names, found)
        return found


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Rules and their GX suites, built once per contract and window (or column types)."""

    rules: tuple[_Rule, ...]
    suites: tuple[_Suite, ...]


_PLANS = _Cache(128)


def _plan(key: tuple[Any, ...], build: Callable[[], list[_Rule]], name: str) -> _Plan:
    plan = _PLANS.get(key)
    if plan is None:
        rules = tuple(build())
        plan = _PLANS.put(key, _Plan(rules, _GX.get().suites(name, rules)))
    return plan


@dataclasses.dataclass(frozen=True)
class _Rule:
    name: str
    family: str
    description: str
    expectation: Any
    columns: tuple[str, ...]
    # reason(frame, row positions) -> one text per row, for the quarantine table
    reason: Callable[[pd.DataFrame, np.ndarray], pd.Series]
    # narrow(frame, row positions GX flagged) -> positions to quarantine (default: all of them)
    narrow: Callable[[pd.DataFrame, np.ndarray], np.ndarray] | None = None
    suite: str = ""  # rules of one suite run together on a frame of just their columns
    needs_rows: bool = True  # False: the rule reads only the columns' types


def _expectation(kind: str, rule: str, **kwargs: Any) -> Any:
    import great_expectations.expectations as gxe

    return getattr(gxe, kind)(meta={"rule": rule}, **kwargs)


def _text(values: pd.Series) -> pd.Series:
    return values.astype("object").map(repr).astype("str")


# --------------------------------------------------------------------------- the rules


def _schema_rules(frame: pd.DataFrame, contract: TelemetryContract) -> list[_Rule]:
    rules = [
        _Rule(
            name=f"schema.column_exists.{column}",
            family="schema",
            description=f"column {column} exists",
            expectation=_expectation("ExpectColumnToExist", f"schema.column_exists.{column}", column=column),
            columns=(column,),
            reason=lambda f, idx: pd.Series("missing column", index=idx),
            suite="schema",
            needs_rows=False,
        )
        for column in contract.required_columns
    ]
    for column in contract.required_columns:
        if column not in frame.columns:
            continue
        name = f"schema.type.{column}"
        if column in contract.metrics:
            expectation = _expectation("ExpectColumnValuesToBeInTypeList", name, column=column, type_list=METRIC_TYPES)
            description = f"{column} is a number (float or integer)"
        elif column == TIMESTAMP:
            dtype = frame[column].dtype
            unit = dtype.unit if isinstance(dtype, pd.DatetimeTZDtype) else "ns"
            expectation = _expectation("ExpectColumnTypeToBe", name, column=column, type_=f"datetime64[{unit}, UTC]")
            description = f"{column} is a timezone-aware UTC datetime"
        else:
            expectation = _expectation("ExpectColumnTypeToBe", name, column=column, type_="str")
            description = f"{column} is text"
        rules.append(
            _Rule(
                name=name,
                family="schema",
                description=description,
                expectation=expectation,
                columns=(column,),
                reason=lambda f, idx, c=column: f"{c}=" + _text(f[c].iloc[idx]) + " is not a number",
                # A mixed (object) column is checked value by value; any other by its dtype.
                suite="schema_values" if frame[column].dtype == object else "schema",
                needs_rows=frame[column].dtype == object,
            )
        )
    return rules


def _row_rules(contract: TelemetryContract, window_start: pd.Timestamp, window_end: pd.Timestamp) -> list[_Rule]:
    limit = contract.device_id_max_length
    window = f"[{window_start.isoformat()}, {window_end.isoformat()})"
    rules = [
        _Rule(
            "keys.device_id.not_null",
            "keys",
            "device_id is present",
            _expectation("ExpectColumnValuesToNotBeNull", "keys.device_id.not_null", column=DEVICE_ID),
            (DEVICE_ID,),
            lambda f, idx: pd.Series("device_id is null", index=idx),
            suite="keys",
        ),
        _Rule(
            "keys.device_id.not_blank",
            "keys",
            "device_id is not empty or only whitespace",
            _expectation(
                "ExpectColumnValuesToNotMatchRegex", "keys.device_id.not_blank", column=DEVICE_ID, regex=BLANK
            ),
            (DEVICE_ID,),
            lambda f, idx: "device_id " + _text(f[DEVICE_ID].iloc[idx]) + " is empty or whitespace",
            suite="keys",
        ),
        _Rule(
            "keys.device_id.max_length",
            "keys",
            f"device_id has at most {limit} characters",
            _expectation(
                "ExpectColumnValueLengthsToBeBetween", "keys.device_id.max_length", column=DEVICE_ID, max_value=limit
            ),
            (DEVICE_ID,),
            lambda f, idx: "device_id has "
            + f[DEVICE_ID].iloc[idx].str.len().astype("int64").astype("str")
            + f" characters (limit {limit})",
            suite="keys",
        ),
        _Rule(
            "keys.timestamp.not_null",
            "keys",
            "timestamp is present",
            _expectation("ExpectColumnValuesToNotBeNull", "keys.timestamp.not_null", column=TIMESTAMP),
            (TIMESTAMP,),
            lambda f, idx: pd.Series("timestamp is null (NaT)", index=idx),
            suite="keys",
        ),
        _Rule(
            "window.timestamp_in_partition",
            "window",
            f"timestamp in {window}",
            _expectation(
                "ExpectColumnValuesToBeBetween",
                "window.timestamp_in_partition",
                column=TIMESTAMP,
                min_value=window_start.to_pydatetime(),
                max_value=window_end.to_pydatetime(),
                strict_max=True,
            ),
            (TIMESTAMP,),
            lambda f, idx: "timestamp " + f[TIMESTAMP].iloc[idx].astype("str") + f" outside {window}",
            suite="keys",
        ),
        _Rule(
            "uniqueness.exact_duplicate",
            "uniqueness",
            "no row is an exact copy of another (the first copy is kept)",
            _expectation("ExpectColumnValuesToBeUnique", "uniqueness.exact_duplicate", column=FINGERPRINT),
            (FINGERPRINT,),
            lambda f, idx: pd.Series("exact copy of an earlier row (the first copy is kept)", index=idx),
            narrow=_extra_copies,
            suite="keys",
        ),
        _Rule(
            "uniqueness.device_id_timestamp",
            "uniqueness",
            "one row per (device_id, timestamp)",
            _expectation(
                "ExpectCompoundColumnsToBeUnique",
                "uniqueness.device_id_timestamp",
                column_list=list(KEY_COLUMNS),
                ignore_row_if="any_value_is_missing",  # a row without keys is the keys rules' business
            ),
            KEY_COLUMNS,
            lambda f, idx: pd.Series("conflicting rows for the same device_id and timestamp", index=idx),
            narrow=_conflicting_rows,
            suite="keys",
        ),
    ]
    for metric in contract.metrics:
        if metric not in contract.ranges:
            continue
        low, high = contract.ranges[metric]
        rules.append(
            _Rule(
                f"ranges.{metric}",
                "ranges",
                f"{metric} within [{low:g}, {high:g}]",
                _expectation(
                    "ExpectColumnValuesToBeBetween", f"ranges.{metric}", column=metric, min_value=low, max_value=high
                ),
                (metric,),
                lambda f, idx, m=metric, lo=low, hi=high: f"{m}="
                + f[m].iloc[idx].astype("str")
                + f" outside [{lo:g}, {hi:g}]",
                suite="ranges",
            )
        )
    for counter in contract.counters:
        previous = PREVIOUS_PREFIX + counter
        rules.append(
            _Rule(
                f"counters.{counter}",
                "counters",
                f"{counter} does not decrease within a device-day",
                _expectation(
                    "ExpectColumnPairValuesAToBeGreaterThanB",
                    f"counters.{counter}",
                    column_A=counter,
                    column_B=previous,
                    or_equal=True,
                    ignore_row_if="either_value_is_missing",
                ),
                (counter, previous),
                lambda f, idx, c=counter, p=previous: f"{c}="
                + f[c].iloc[idx].astype("str")
                + " decreased from "
                + f[p].iloc[idx].astype("str")
                + " earlier that day",
                suite="counters",
            )
        )
    return rules


def _extra_copies(frame: pd.DataFrame, flagged: np.ndarray) -> np.ndarray:
    """Of each group of identical rows (compared in full), every copy after the first."""
    return flagged[_duplicated(frame.iloc[flagged]).to_numpy()]


def _conflicting_rows(frame: pd.DataFrame, flagged: np.ndarray) -> np.ndarray:
    """Rows of a (device_id, timestamp) that holds more than one distinct row."""
    subset = frame.iloc[flagged]
    distinct = ~_duplicated(subset)
    per_key = distinct.groupby([subset[DEVICE_ID], subset[TIMESTAMP]], dropna=False).transform("sum")
    return flagged[(per_key > 1).to_numpy()]


# --------------------------------------------------------------------------- preparing frames


def _canonical(raw: pd.DataFrame, contract: TelemetryContract) -> pd.DataFrame:
    """Lossless representation changes before the schema suite: text columns to ``str``,
    tz-aware timestamps to UTC, numeric metrics to float64. Anything else stays as delivered,
    so the schema suite sees it."""
    frame = raw.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    for column in (DEVICE_ID, *contract.cohort_columns):
        if column in frame and (frame[column].dtype == object or isinstance(frame[column].dtype, pd.StringDtype)):
            if frame[column].dtype != "str":
                frame[column] = frame[column].astype("str")
    if TIMESTAMP in frame and isinstance(frame[TIMESTAMP].dtype, pd.DatetimeTZDtype):
        if str(frame[TIMESTAMP].dt.tz) != "UTC":
            frame[TIMESTAMP] = frame[TIMESTAMP].dt.tz_convert("UTC")
    for metric in contract.metrics:
        if metric in frame:
            dtype = frame[metric].dtype
            if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype) and dtype != np.float64:
                frame[metric] = frame[metric].astype(np.float64)
    return frame


def _row_frame(frame: pd.DataFrame, contract: TelemetryContract) -> pd.DataFrame:
    """The narrow frame the row suite runs on: keys, every metric as float64 (values of the
    wrong type, already flagged by the schema suite, become NaN), each counter's previous value
    in its device-day, and a fingerprint of the whole delivered row."""
    columns: dict[str, Any] = {DEVICE_ID: frame[DEVICE_ID], TIMESTAMP: frame[TIMESTAMP]}
    for metric in contract.metrics:
        values = frame[metric]
        if values.dtype != np.float64:
            values = pd.to_numeric(values.where(_is_number(values)), errors="coerce").astype(np.float64)
        columns[metric] = values
    keys = _KeyOrder(frame)
    for counter in contract.counters:
        columns[PREVIOUS_PREFIX + counter] = keys.previous_in_device_day(columns[counter].to_numpy(dtype=np.float64))
    columns[FINGERPRINT] = _fingerprint(frame, keys.duplicated())
    return pd.DataFrame(columns, copy=False)  # GX reads a few columns at a time: no need to consolidate


def _fingerprint(frame: pd.DataFrame, candidates: np.ndarray) -> np.ndarray:
    """A fingerprint of the whole delivered row for the ``candidates`` (row positions), NaN for
    every other row, which GX's uniqueness expectation then ignores.

    Exact copies share their (device_id, timestamp), so only rows whose key is duplicated can be
    copies: those are the candidates. Equal rows get equal fingerprints and, up to a 64-bit hash
    collision, different rows different ones (a dense number per distinct hash, exact in float64)."""
    out = np.full(len(frame), np.nan)
    if not len(candidates):
        return out
    if any(dtype == object for dtype in frame.dtypes):
        # pandas hashes a mixed column as text or as values depending on all of its values, so
        # hash the whole frame for the same fingerprints whichever rows are candidates
        hashes = _row_hashes(frame)[candidates]
    else:  # every other dtype is hashed value by value
        hashes = _row_hashes(frame.iloc[candidates])
    out[candidates] = pd.factorize(hashes)[0]
    return out


def _duplicated(rows: pd.DataFrame) -> pd.Series:
    """``rows.duplicated(keep="first")``; rows with unhashable cells (lists, dicts) compare as text,
    as their fingerprints do."""
    try:
        return rows.duplicated(keep="first")
    except TypeError:
        return rows.astype("str").duplicated(keep="first")


def _row_hashes(frame: pd.DataFrame) -> np.ndarray:
    try:
        return pd.util.hash_pandas_object(frame, index=False).to_numpy()
    except TypeError:  # unhashable cells (lists, dicts): hash their text
        return pd.util.hash_pandas_object(frame.astype("str"), index=False).to_numpy()


def _is_number(values: pd.Series) -> pd.Series:
    return values.map(lambda v: isinstance(v, int | float | np.integer | np.floating)).astype(bool)


class _KeyOrder:
    """The rows with both keys present, in (device_id, timestamp) order, stable for equal keys;
    the order rows usually arrive in already, which is then used as it is."""

    def __init__(self, frame: pd.DataFrame) -> None:
        device, stamp = frame[DEVICE_ID], frame[TIMESTAMP]
        self.n = len(frame)
        self.devices = device.factorize()[0]  # -1 for a missing device_id
        missing = (self.devices < 0) | stamp.isna().to_numpy()
        self.keyless = np.flatnonzero(missing)
        self.frame = frame
        if stamp.dt.unit != "ns":
            stamp = stamp.dt.as_unit("ns") if _fits_ns(stamp) else stamp.dt.as_unit("us")
        per_day = {"ns": 86_400 * 10**9, "us": 86_400 * 10**6}[stamp.dt.unit]
        ticks = stamp.to_numpy(dtype="datetime64[" + stamp.dt.unit + "]").view(np.int64)
        if len(self.keyless):
            self.rows = np.flatnonzero(~missing)
            devices, ticks = self.devices[self.rows], ticks[self.rows]
        else:
            self.rows = None  # every row
            devices = self.devices
        if len(devices) and _is_sorted(devices, ticks):
            self.order = None  # already in order
        else:
            self.order = _stable_order(devices, ticks)
            devices, ticks = devices[self.order], ticks[self.order]
        self.sorted_devices, self.sorted_ticks = devices, ticks
        days = ticks // per_day
        self.group_start = np.ones(len(devices), dtype=bool)  # the first row of a device-day
        self.group_start[1:] = (devices[1:] != devices[:-1]) | (days[1:] != days[:-1])

    def _positions(self) -> np.ndarray | None:
        """Frame positions of the sorted rows (None: the frame's own order)."""
        if self.order is None:
            return self.rows
        return self.order if self.rows is None else self.rows[self.order]

    def previous_in_device_day(self, values: np.ndarray) -> np.ndarray:
        """For each row, the last non-null value before it (by timestamp) from the same device
        on the same UTC day; NaN for the day's first value and for rows without keys."""
        positions = self._positions()
        ordered = values if positions is None else values[positions]
        m = len(ordered)
        if not m:
            return np.full(self.n, np.nan)
        index = np.arange(m)
        last = np.where(np.isnan(ordered), -1, index)
        np.maximum.accumulate(last, out=last)  # the latest non-null row so far
        start = np.maximum.accumulate(np.where(self.group_start, index, 0))  # its device-day's first row
        before = np.empty(m, dtype=np.int64)
        before[0] = -1
        before[1:] = last[:-1]
        shifted = np.where(before >= start, ordered[np.maximum(before, 0)], np.nan)
        if positions is None:
            return shifted
        previous = np.full(self.n, np.nan)
        previous[positions] = shifted
        return previous

    def duplicated(self) -> np.ndarray:
        """Positions of rows whose (device_id, timestamp) occurs more than once, as
        ``DataFrame.duplicated(keep=False)`` finds them (missing keys compare equal)."""
        devices, ticks = self.sorted_devices, self.sorted_ticks
        same = (devices[1:] == devices[:-1]) & (ticks[1:] == ticks[:-1])
        found: list[np.ndarray] = []
        if same.any():
            repeated = np.zeros(len(devices), dtype=bool)
            repeated[1:] |= same
            repeated[:-1] |= same
            positions = self._positions()
            found.append(np.flatnonzero(repeated) if positions is None else positions[repeated])
        if len(self.keyless):
            keyless = self.frame.iloc[self.keyless]
            found.append(self.keyless[keyless.duplicated([DEVICE_ID, TIMESTAMP], keep=False).to_numpy()])
        return np.sort(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)


def _stable_order(devices: np.ndarray, ticks: np.ndarray) -> np.ndarray:
    """The stable sort order by (device, tick); one sort of a combined key when it fits 63 bits."""
    if not len(devices):
        return np.empty(0, dtype=np.int64)
    low = int(ticks.min())
    span = int(ticks.max()) - low + 1
    if span * (int(devices.max()) + 1) < 2**63:
        return np.argsort(devices.astype(np.int64) * span + (ticks - low), kind="stable")
    return np.lexsort((ticks, devices))  # lexsort is stable too


def _is_sorted(devices: np.ndarray, ticks: np.ndarray) -> bool:
    step = devices[1:] - devices[:-1]
    return bool((step >= 0).all() and (ticks[1:][step == 0] >= ticks[:-1][step == 0]).all())


def _fits_ns(stamps: pd.Series) -> bool:
    low, high = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")
    stamps = stamps.dropna()
    return bool(((stamps >= low) & (stamps <= high)).all())


# --------------------------------------------------------------------------- the entry point


def validate_telemetry(
    raw: pd.DataFrame, contract: TelemetryContract, window_start: pd.Timestamp, window_end: pd.Timestamp
) -> ValidationResult:
    """Validate one window's rows against ``contract``; raise :class:`SchemaError` if the schema
    is broken, otherwise split the rows into valid and quarantined ones.

    ``ValidationResult.seconds`` excludes the one-time GX import and context setup of a process."""
    gx = _GX.get() if len(raw) else None
    started = time.perf_counter()
    window_start, window_end = _utc(window_start), _utc(window_end)
    frame = _canonical(raw, contract)
    unknown = tuple(c for c in frame.columns if c not in contract.known_columns)
    if gx is None:
        return _empty_result(frame, contract, unknown, window_start, started)

    key = repr(contract)  # a contract holds a dict, so it is not hashable itself
    types = tuple((c, str(frame[c].dtype), frame[c].dtype == object) for c in contract.required_columns if c in frame)
    schema = _plan(("schema", key, types), lambda: _schema_rules(frame, contract), f"{contract.name}.schema")
    schema_rules = list(schema.rules)
    present = [c for c in contract.required_columns if c in frame.columns]
    schema_outcome = gx.run(frame[present], schema.suites)
    schema_results = [_rule_result(rule, schema_outcome[rule.name], frame) for rule in schema_rules]
    broken = [r for r in schema_results if r.breaks_schema]
    if broken:
        raise SchemaError(
            f"telemetry breaks the contract's schema ({len(broken)} rule(s) failed): "
            + "; ".join(r.message() for r in broken)
            + f". Columns delivered: {list(frame.columns)}",
            schema_results,
        )

    rows = _row_frame(frame, contract)
    window = (window_start, window_end, window_start.isoformat(), window_end.isoformat())
    row_plan = _plan(
        ("rows", key, window), lambda: _row_rules(contract, window_start, window_end), f"{contract.name}.rows"
    )
    row_rules = list(row_plan.rules)
    row_outcome = gx.run(rows, row_plan.suites)
    row_results = [_rule_result(rule, row_outcome[rule.name], rows) for rule in row_rules]
    errors = [r for r in row_results if r.breaks_schema]
    if errors:  # a row-level expectation that could not run: fail loudly, never pass silently
        raise RuntimeError("validation could not evaluate: " + "; ".join(r.message() for r in errors))

    # Quarantine: each row names the first rule it broke (rules are in family order).
    rules = [*schema_rules, *row_rules]
    outcomes = {**schema_outcome, **row_outcome}
    n = len(frame)
    first = np.full(n, -1, dtype=np.int64)
    reasons = np.full(n, None, dtype=object)
    also: dict[int, list[str]] = {}
    for position, rule in enumerate(rules):
        flagged = _unexpected_rows(outcomes[rule.name])
        if rule.narrow is not None and len(flagged):
            flagged = rule.narrow(frame, flagged)
        if not len(flagged):
            continue
        fresh = flagged[first[flagged] < 0]
        if len(fresh):
            first[fresh] = position
            reasons[fresh] = rule.reason(frame if rule.family == "schema" else rows, fresh).to_numpy(dtype=object)
        for row in flagged[first[flagged] != position]:
            also.setdefault(int(row), []).append(rule.name)
    bad = first >= 0
    names = np.array([r.name for r in rules], dtype=object)
    first_rule = pd.Series(names[first[bad]], dtype="object")
    reason = pd.Series(reasons[bad], dtype="object")
    if also:
        extra = pd.Series({row: ", ".join(others) for row, others in also.items()}, dtype="object")
        extra = extra.reindex(np.flatnonzero(bad)).reset_index(drop=True)
        reason = reason.where(extra.isna(), reason + " (also broke: " + extra + ")")
    quarantined = _quarantine_frame(frame.loc[bad], first_rule, reason, window_start)
    counts = {str(k): int(v) for k, v in first_rule.value_counts().items()}
    results = [dataclasses.replace(r, quarantined_count=counts.get(r.rule, 0)) for r in [*schema_results, *row_results]]

    valid = frame.loc[~bad] if bad.any() else frame
    retyped = [m for m in contract.metrics if valid[m].dtype != np.float64]
    if retyped:
        valid = valid.assign(**{m: rows.loc[~bad, m] for m in retyped})
    if valid[TIMESTAMP].dt.unit != "ns":
        valid = valid.assign(**{TIMESTAMP: valid[TIMESTAMP].dt.as_unit("ns")})
    valid = _output_columns(valid.reset_index(drop=True), contract, unknown)
    if len(valid) + len(quarantined) != len(raw):
        raise AssertionError(
            f"validation lost rows: raw {len(raw)} != valid {len(valid)} + quarantined {len(quarantined)}"
        )
    return ValidationResult(
        valid=valid,
        quarantined=quarantined,
        rule_counts=counts,
        rule_results=tuple(results),
        unknown_columns=unknown,
        unknown_column_policy=contract.unknown_columns,
        seconds=time.perf_counter() - started,
    )


def _empty_result(
    frame: pd.DataFrame,
    contract: TelemetryContract,
    unknown: tuple[str, ...],
    window_start: pd.Timestamp,
    started: float,
) -> ValidationResult:
    """No rows: nothing to run row rules on; only the columns can be reported."""
    results = tuple(
        RuleResult(
            rule=f"schema.column_exists.{c}",
            family="schema",
            expectation="expect_column_to_exist",
            columns=(c,),
            description=f"column {c} exists",
            success=c in frame.columns,
            element_count=0,
            unexpected_count=0,
            breaks_schema=c not in frame.columns,
        )
        for c in contract.required_columns
    )
    return ValidationResult(
        valid=_output_columns(frame, contract, unknown),
        quarantined=_quarantine_frame(frame, pd.Series(dtype="object"), pd.Series(dtype="object"), window_start),
        rule_counts={},
        rule_results=results,
        unknown_columns=unknown,
        unknown_column_policy=contract.unknown_columns,
        seconds=time.perf_counter() - started,
    )


def _utc(value: pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _output_columns(frame: pd.DataFrame, contract: TelemetryContract, unknown: Sequence[str]) -> pd.DataFrame:
    return frame.drop(columns=list(unknown)) if contract.unknown_columns == "drop" and unknown else frame


def _unexpected_rows(outcome: Any) -> np.ndarray:
    indices = (outcome.result or {}).get("unexpected_index_list") or []
    if indices and isinstance(indices[0], dict):  # with unexpected_index_column_names
        indices = [i["index"] for i in indices]
    return np.asarray(sorted(int(i) for i in indices), dtype=np.int64)


def _rule_result(rule: _Rule, outcome: Any, frame: pd.DataFrame) -> RuleResult:
    result = outcome.result or {}
    exception = (outcome.exception_info or {}).get("exception_message") if outcome.exception_info else None
    row_level = result.get("unexpected_count") is not None
    column = rule.columns[0]
    sample: list[dict[str, Any]] = []
    observed = result.get("observed_value")
    if row_level:
        rows = _unexpected_rows(outcome)
        values = list(result.get("unexpected_list") or result.get("partial_unexpected_list") or [])
        for position, row in enumerate(rows[:SAMPLE_SIZE]):
            entry = {
                "row": int(row),
                "device_id": _plain(frame[DEVICE_ID].iat[row]) if DEVICE_ID in frame else None,
                "timestamp": _plain(frame[TIMESTAMP].iat[row]) if TIMESTAMP in frame else None,
            }
            if rule.family != "uniqueness" and position < len(values):  # the keys say it all there
                entry["value"] = _plain(values[position])
            sample.append(entry)
    elif not outcome.success and column not in frame.columns:
        observed = "missing"
    elif not outcome.success:
        observed = str(frame[column].dtype) if observed is None else observed
        sample = [{"value": _plain(v)} for v in frame[column].dropna().head(SAMPLE_SIZE)]
    if exception:
        observed = f"error: {exception}"
    return RuleResult(
        rule=rule.name,
        family=rule.family,
        expectation=outcome.expectation_config.type,
        columns=tuple(rule.columns),
        description=rule.description,
        success=bool(outcome.success),
        element_count=len(frame),
        unexpected_count=int(result.get("unexpected_count") or 0),
        observed=None if observed is None else str(observed),
        sample=tuple(sample),
        breaks_schema=not outcome.success and (not row_level or bool(exception)),
    )


def _plain(value: Any) -> Any:
    """A JSON-safe version of a cell value for metadata samples (long text is shortened)."""
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, bool | int):
        return value if isinstance(value, bool) else int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _quarantine_frame(
    rows: pd.DataFrame, rules: pd.Series, reasons: pd.Series, window_start: pd.Timestamp
) -> pd.DataFrame:
    """One row per quarantined row: its partition, keys as text, rule, reason and the whole row
    as delivered (JSON, one object per row, missing values as null)."""
    if not len(rows):
        return pd.DataFrame({c: pd.Series(dtype="object") for c in QUARANTINE_COLUMNS})
    rows = rows.reset_index(drop=True)
    as_text = {c: _nullable_text(rows[c]) for c in rows.columns if pd.api.types.is_datetime64_any_dtype(rows[c].dtype)}
    flat = rows.assign(**as_text)
    lines = flat.to_json(orient="records", lines=True, force_ascii=False, default_handler=str).rstrip("\n").split("\n")
    missing = pd.Series(None, index=rows.index, dtype="object")
    return pd.DataFrame(
        {
            "partition_date": window_start.strftime("%Y-%m-%d"),
            "device_id": _nullable_text(rows[DEVICE_ID]) if DEVICE_ID in rows else missing,
            "timestamp": as_text[TIMESTAMP]
            if TIMESTAMP in as_text
            else (_nullable_text(rows[TIMESTAMP]) if TIMESTAMP in rows else missing),
            "rule": rules.astype("object").to_numpy(),
            "reason": reasons.astype("object").to_numpy(),
            "row_json": lines,
        },
        columns=list(QUARANTINE_COLUMNS),
    )


def _nullable_text(values: pd.Series) -> pd.Series:
    """Each value as text, None where missing (a NULL in the results database)."""
    text = values.astype("str").astype("object")
    return text.where(values.notna().to_numpy(), None)
