"""The contract's rules as GX expectations, one per rule, each with its reason text."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from anomaly_assets.core.contract import DEVICE_ID, KEY_COLUMNS, SOURCE_ERROR, TIMESTAMP, TelemetryContract
from anomaly_assets.core.validation.frames import (
    BLANK,
    FINGERPRINT,
    PREVIOUS_PREFIX,
    UNREADABLE_TIMESTAMP,
    _duplicated,
)

METRIC_TYPES = ["float64", "int64", "float", "int"]  # a metric value must be one of these


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


def _row_rules(
    contract: TelemetryContract, window_start: pd.Timestamp, window_end: pd.Timestamp, present: frozenset[str] = frozenset()
) -> list[_Rule]:
    """The row suite's rules; ``present`` names the optional derived columns the row frame has
    (a source's row errors, unreadable timestamps), whose rules exist only then."""
    limit = contract.device_id_max_length
    window = f"[{window_start.isoformat()}, {window_end.isoformat()})"
    rules = []
    if SOURCE_ERROR in present:
        rules.append(
            _Rule(
                "keys.row_well_formed",
                "keys",
                "the source delivered the row whole",
                _expectation("ExpectColumnValuesToBeNull", "keys.row_well_formed", column=SOURCE_ERROR),
                (SOURCE_ERROR,),
                lambda f, idx: f[SOURCE_ERROR].iloc[idx].astype("str"),
                suite="keys",
            )
        )
    if UNREADABLE_TIMESTAMP in present:
        rules.append(
            _Rule(
                "keys.timestamp.readable",
                "keys",
                "timestamp reads as a date and time",
                _expectation("ExpectColumnValuesToBeNull", "keys.timestamp.readable", column=UNREADABLE_TIMESTAMP),
                (UNREADABLE_TIMESTAMP,),
                lambda f, idx: "timestamp " + _text(f[UNREADABLE_TIMESTAMP].iloc[idx]) + " is not a readable date and time",
                suite="keys",
            )
        )
    rules += [
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
            lambda f, idx: pd.Series("timestamp is missing or blank", index=idx),
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
    for metric in contract.metrics:  # every metric: finite and within +-metric_limit at least
        low, high = contract.metric_bounds(metric)
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
