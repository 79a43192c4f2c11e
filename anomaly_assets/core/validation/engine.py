"""The Great Expectations engine: one ephemeral GX context per process, expectation suites
built once per contract and window, and the caches that keep them."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from anomaly_assets.core.validation.rules import _Rule

_RESULT_FORMAT = {"result_format": "COMPLETE", "return_unexpected_index_query": False}
_QUICK_FORMAT = {"result_format": "BOOLEAN_ONLY"}  # whether each rule holds, nothing more


def prepare_context() -> None:
    """Create this process's GX context now (seconds), before the first validation waits for it."""
    _GX.get()


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
