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

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from anomaly_assets.core.contract import DEVICE_ID, SOURCE_ERROR, TIMESTAMP, TelemetryContract
from anomaly_assets.core.validation.engine import _GX, _plan
from anomaly_assets.core.validation.frames import UNREADABLE_TIMESTAMP, _canonical, _row_frame
from anomaly_assets.core.validation.results import QUARANTINE_COLUMNS, RuleResult, SchemaError, ValidationResult
from anomaly_assets.core.validation.rules import _row_rules, _Rule, _schema_rules

SAMPLE_SIZE = 5
OPTIONAL_ROW_COLUMNS = frozenset({SOURCE_ERROR, UNREADABLE_TIMESTAMP})  # row-frame columns only some frames have


def validate_telemetry(
    raw: pd.DataFrame, contract: TelemetryContract, window_start: pd.Timestamp, window_end: pd.Timestamp
) -> ValidationResult:
    """Validate one window's rows against ``contract``; raise :class:`SchemaError` if the schema
    is broken, otherwise split the rows into valid and quarantined ones.

    ``ValidationResult.seconds`` excludes the one-time GX import and context setup of a process."""
    gx = _GX.get() if len(raw) else None
    started = time.perf_counter()
    window_start, window_end = _utc(window_start), _utc(window_end)
    frame, unreadable_text = _canonical(raw, contract)
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

    rows = _row_frame(frame, contract, unreadable_text)
    window = (window_start, window_end, window_start.isoformat(), window_end.isoformat())
    present = frozenset(rows.columns) & OPTIONAL_ROW_COLUMNS
    row_plan = _plan(
        ("rows", key, window, present),
        lambda: _row_rules(contract, window_start, window_end, present),
        f"{contract.name}.rows",
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
    delivered = frame.loc[bad]
    if unreadable_text is not None:  # quarantine the timestamp's text as delivered
        text = unreadable_text.loc[bad]
        delivered = delivered.assign(**{TIMESTAMP: _nullable_text(delivered[TIMESTAMP]).where(text.isna(), text)})
    quarantined = _quarantine_frame(delivered, first_rule, reason, window_start)
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
    dropped = [*(unknown if contract.unknown_columns == "drop" else ()), *([SOURCE_ERROR] if SOURCE_ERROR in frame else [])]
    return frame.drop(columns=dropped) if dropped else frame


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
