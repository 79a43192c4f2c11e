"""The telemetry contract and its execution with Great Expectations, on hand-built bad input.

Every bad input of issue 5 has a test here that fails if the behaviour is wrong; the asset-level
behaviour (checks, quarantine table, failing runs) is in test_validation_assets.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core import generator
from anomaly_assets.core.contract import (
    DEFAULT_CONTRACT_PATH,
    ContractError,
    TelemetryContract,
    contract_from_mapping,
    load_contract,
)
from anomaly_assets.core.validation import (
    FAMILIES,
    QUARANTINE_COLUMNS,
    SchemaError,
    ValidationResult,
    validate_telemetry,
)
from anomaly_assets.resources import SyntheticFleetSource
from anomaly_assets.resources.results_store import quarantined_telemetry

DAY = dt.date(2026, 11, 2)
START = pd.Timestamp("2026-11-02", tz="UTC")
END = pd.Timestamp("2026-11-03", tz="UTC")
CONTRACT = load_contract()


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    """Three devices, one day, no injected faults: 864 rows minus packet loss, all valid."""
    return generator.generate_day(generator.FleetConfig(n_devices=3, device_fault_rate=0.0), DAY)


def validate(frame: pd.DataFrame, contract: TelemetryContract = CONTRACT) -> ValidationResult:
    result = validate_telemetry(frame, contract, START, END)
    assert len(result.valid) + len(result.quarantined) == len(frame)
    assert sum(result.rule_counts.values()) == len(result.quarantined)
    return result


def quarantined_rules(result: ValidationResult) -> dict[str, str]:
    """device_id|timestamp -> rule, for the quarantined rows."""
    q = result.quarantined
    return dict(zip(q["device_id"].astype("str") + "|" + q["timestamp"].astype("str"), q["rule"], strict=True))


def rule(result: ValidationResult, name: str):
    return next(r for r in result.rule_results if r.rule == name)


# ---------------------------------------------------------------------------------- the contract


def test_packaged_contract_describes_the_synthetic_fleet():
    assert DEFAULT_CONTRACT_PATH.name == "telemetry_contract.yaml" and DEFAULT_CONTRACT_PATH.exists()
    assert CONTRACT.metrics == generator.METRICS
    assert CONTRACT.cohort_columns == generator.COHORT_COLUMNS
    assert CONTRACT.optional_columns == generator.LABEL_COLUMNS
    assert CONTRACT.counters == ("data_used_mb_today",)
    assert CONTRACT.ranges["battery_level_pct"] == (0.0, 100.0)
    assert CONTRACT.ranges["wifi_rssi_dbm"] == (-120.0, 0.0)
    assert set(CONTRACT.ranges) == set(generator.METRICS)
    assert CONTRACT.max_bad_row_share == 0.05
    assert CONTRACT.unknown_columns == "drop"
    assert SyntheticFleetSource().contract() == CONTRACT
    assert contract_from_mapping(CONTRACT.to_mapping()) == CONTRACT


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(max_bad_rows=0.1), "unknown field(s) ['max_bad_rows']"),
        (lambda s: s["metrics"]["cpu_util_pct"].update(mx=5), "unknown field(s) ['mx'] in metrics.cpu_util_pct"),
        (lambda s: s["metrics"]["cpu_util_pct"].pop("max"), "metrics.cpu_util_pct needs both min and max"),
        (lambda s: s["metrics"]["cpu_util_pct"].update(min=200), "min 200.0 must not exceed max 100.0"),
        (lambda s: s["metrics"]["cpu_util_pct"].update(max="1e6"), "metrics.cpu_util_pct.max must be a number"),
        (lambda s: s["metrics"]["reboots"].update(counter="yes"), "metrics.reboots.counter must be true or false"),
        (lambda s: s.update(max_bad_row_share=5), "max_bad_row_share must lie in [0, 1]"),
        (lambda s: s.update(unknown_columns="ignore"), "unknown_columns must be one of"),
        (lambda s: s["keys"]["timestamp"].update(type="string"), "keys.timestamp.type is 'string'"),
        (lambda s: s.update(cohort_columns=["model", "model"]), "columns named more than once"),
    ],
)
def test_a_malformed_contract_is_rejected_naming_the_field(change, message):
    spec = CONTRACT.to_mapping()
    change(spec)
    with pytest.raises(ContractError) as error:
        contract_from_mapping(spec)
    assert message in str(error.value)


def test_a_contract_file_is_read_from_a_path(tmp_path):
    path = tmp_path / "stricter.yaml"
    text = DEFAULT_CONTRACT_PATH.read_text().replace("max_bad_row_share: 0.05", "max_bad_row_share: 0.01")
    path.write_text(text.replace("battery_level_pct:  {min: 0, max: 100}", "battery_level_pct:  {min: 5, max: 100}"))
    contract = load_contract(path)
    assert contract.max_bad_row_share == 0.01
    assert contract.ranges["battery_level_pct"] == (5.0, 100.0)
    with pytest.raises(ContractError, match="does not exist"):
        load_contract(tmp_path / "missing.yaml")


# ---------------------------------------------------------------------------------- clean data


def test_clean_day_passes_unchanged_and_keeps_sensor_dropouts():
    raw = generator.generate_day(generator.FleetConfig(n_devices=40, device_fault_rate=0.5, seed=3), DAY)
    dropouts = int(raw["wifi_rssi_dbm"].isna().sum())
    assert dropouts > 0, "the fixture should contain dropped-out sensors"
    result = validate(raw)
    assert result.quarantined.empty and result.rule_counts == {}
    pd.testing.assert_frame_equal(result.valid, raw)
    assert int(result.valid["wifi_rssi_dbm"].isna().sum()) == dropouts  # NaN metrics are data
    assert all(r.success for r in result.rule_results)
    assert {r.family for r in result.rule_results} == set(FAMILIES)
    # one expectation per rule, each with its GX expectation type
    expectations = {r.rule: r.expectation for r in result.rule_results}
    assert expectations["ranges.battery_level_pct"] == "expect_column_values_to_be_between"
    assert expectations["uniqueness.device_id_timestamp"] == "expect_compound_columns_to_be_unique"
    assert expectations["counters.data_used_mb_today"] == "expect_column_pair_values_a_to_be_greater_than_b"
    assert expectations["window.timestamp_in_partition"] == "expect_column_values_to_be_between"
    assert expectations["schema.column_exists.device_id"] == "expect_column_to_exist"


def test_expectation_configurations_are_memoized_only_during_a_validation(clean, monkeypatch):
    """Each GX expectation's configuration is built once per validation call, and GX's own
    property is back in place afterwards, also when the validation fails."""
    from great_expectations.expectations.expectation import Expectation

    from anomaly_assets.core.validation.engine import _GX

    original = Expectation.__dict__["configuration"]
    broken = clean.assign(battery_level_pct=clean["battery_level_pct"].where(clean.index % 50 != 0, 500.0))
    first = validate(broken)
    assert Expectation.__dict__["configuration"] is original
    assert first.rule_counts == {"ranges.battery_level_pct": int((clean.index % 50 == 0).sum())}
    # The same outcome with GX building every configuration on each read, as it does itself.
    monkeypatch.setattr(_GX, "_configurations_memoized", lambda self: contextlib.nullcontext())
    unmemoized = validate(broken)
    pd.testing.assert_frame_equal(unmemoized.valid, first.valid)
    pd.testing.assert_frame_equal(unmemoized.quarantined, first.quarantined)
    assert unmemoized.rule_results == first.rule_results
    monkeypatch.undo()
    with pytest.raises(SchemaError):
        validate(clean.assign(cpu_util_pct="high"))
    assert Expectation.__dict__["configuration"] is original


def test_representation_changes_that_lose_nothing_are_accepted(clean):
    frame = clean.assign(
        timestamp=clean["timestamp"].dt.tz_convert("Europe/Berlin").dt.as_unit("us"),
        reboots=clean["reboots"].astype("int64"),
        device_id=clean["device_id"].astype(object),
    )
    result = validate(frame)
    assert result.quarantined.empty
    assert str(result.valid["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert result.valid["reboots"].dtype == np.float64
    pd.testing.assert_series_equal(result.valid["timestamp"], clean["timestamp"])


def test_an_empty_frame_is_an_empty_result(clean):
    result = validate(clean.iloc[0:0])
    assert result.valid.empty and result.quarantined.empty and result.bad_row_share == 0.0


# ---------------------------------------------------------------------------------- schema


def test_missing_column_breaks_the_schema_naming_rule_and_column(clean):
    with pytest.raises(SchemaError) as error:
        validate_telemetry(clean.drop(columns=["cpu_util_pct"]), CONTRACT, START, END)
    message = str(error.value)
    assert "schema.column_exists.cpu_util_pct" in message and "missing" in message
    assert [r.rule for r in error.value.failed_rules] == ["schema.column_exists.cpu_util_pct"]


def test_metric_arriving_as_text_breaks_the_schema_with_examples(clean):
    """A column none of whose cells reads as a number (here "87.3%") is text as a whole."""
    frame = clean.assign(battery_level_pct=clean["battery_level_pct"].astype("str") + "%")
    with pytest.raises(SchemaError) as error:
        validate_telemetry(frame, CONTRACT, START, END)
    (failed,) = error.value.failed_rules
    assert failed.rule == "schema.type.battery_level_pct"
    assert failed.observed == "str"
    assert failed.sample[0]["value"] == frame["battery_level_pct"].iloc[0]
    assert "schema.type.battery_level_pct" in str(error.value) and "observed str" in str(error.value)


def test_naive_timestamps_break_the_schema(clean):
    with pytest.raises(SchemaError, match=r"schema.type.timestamp .*observed datetime64\[ns\]"):
        validate_telemetry(clean.assign(timestamp=clean["timestamp"].dt.tz_localize(None)), CONTRACT, START, END)


def test_values_of_the_wrong_type_in_a_mixed_column_are_quarantined(clean):
    """Cells that are not numbers are quarantined one by one; a number delivered as text (as
    every CSV cell is) is that number."""
    frame = clean.copy()
    frame["cpu_util_pct"] = frame["cpu_util_pct"].astype(object)
    frame.loc[[3, 4, 6], "cpu_util_pct"] = ["n/a", " 42.5 ", "3.3%"]
    frame.loc[5, "cpu_util_pct"] = None
    result = validate(frame)
    assert result.rule_counts == {"schema.type.cpu_util_pct": 2}
    assert set(result.quarantined["reason"]) == {"cpu_util_pct='n/a' is not a number", "cpu_util_pct='3.3%' is not a number"}
    assert 42.5 in set(result.valid["cpu_util_pct"])
    assert result.valid["cpu_util_pct"].dtype == np.float64
    assert int(result.valid["cpu_util_pct"].isna().sum()) == 1  # None is a missing value, not a bad one


# ---------------------------------------------------------------------------------- row rules


def test_missing_or_blank_device_ids_are_quarantined(clean):
    frame = clean.copy()
    frame["device_id"] = frame["device_id"].astype(object)
    frame.loc[[0, 1, 2, 3], "device_id"] = [None, np.nan, "", " \t "]
    result = validate(frame)
    assert result.rule_counts == {"keys.device_id.not_null": 2, "keys.device_id.not_blank": 2}
    assert result.quarantined["device_id"].iloc[:2].isna().all()  # NULL in the database, not "nan"


def test_nat_timestamps_are_quarantined(clean):
    frame = clean.copy()
    frame.loc[[10, 11], "timestamp"] = pd.NaT
    result = validate(frame)
    assert result.rule_counts == {"keys.timestamp.not_null": 2}
    assert result.quarantined["reason"].eq("timestamp is missing or blank").all()


def test_timestamps_outside_the_window_are_quarantined_bounds_included_exactly(clean):
    frame = clean.copy()
    stamps = [START - pd.Timedelta("1ns"), END, END + pd.Timedelta(days=400), START, END - pd.Timedelta("1ns")]
    frame.loc[[0, 1, 2, 3, 4], "timestamp"] = stamps
    frame.loc[[0, 1, 2, 3, 4], "device_id"] = [f"clock-{i}" for i in range(5)]  # unique keys
    result = validate(frame)
    assert result.rule_counts == {"window.timestamp_in_partition": 3}
    assert sorted(result.quarantined["device_id"]) == ["clock-0", "clock-1", "clock-2"]
    assert "outside [2026-11-02T00:00:00+00:00, 2026-11-03T00:00:00+00:00)" in result.quarantined["reason"].iloc[0]


def test_exact_duplicates_keep_the_first_copy(clean):
    copies = pd.concat([clean, clean.iloc[[7, 7]], clean.iloc[[9]]], ignore_index=True)
    result = validate(copies)
    assert result.rule_counts == {"uniqueness.exact_duplicate": 3}
    assert len(result.valid) == len(clean)
    assert not result.valid.duplicated(["device_id", "timestamp"]).any()
    assert rule(result, "uniqueness.exact_duplicate").unexpected_count == 5  # GX sees every copy


def test_conflicting_duplicates_are_all_quarantined(clean):
    conflicting = clean.iloc[[20]].assign(cpu_util_pct=1.0)
    frame = pd.concat([clean, conflicting], ignore_index=True)
    result = validate(frame)
    assert result.rule_counts == {"uniqueness.device_id_timestamp": 2}
    key = (clean["device_id"].iloc[20], clean["timestamp"].iloc[20])
    assert not ((result.valid["device_id"] == key[0]) & (result.valid["timestamp"] == key[1])).any()


def test_out_of_range_values_are_quarantined_bounds_and_nan_are_valid(clean):
    frame = clean.copy()
    frame.loc[[0, 1, 2, 3, 4], "battery_level_pct"] = [150.0, -0.5, 0.0, 100.0, np.nan]
    frame.loc[5, "wifi_rssi_dbm"] = 12.0
    result = validate(frame)
    assert result.rule_counts == {"ranges.battery_level_pct": 2, "ranges.wifi_rssi_dbm": 1}
    assert "battery_level_pct=150.0 outside [0, 100]" in set(result.quarantined["reason"])
    check = rule(result, "ranges.battery_level_pct")
    assert check.unexpected_count == 2 and [s["value"] for s in check.sample] == [150.0, -0.5]


def test_a_counter_going_backwards_within_a_device_day_is_quarantined(clean):
    frame = clean.copy()
    device = frame["device_id"] == frame["device_id"].iloc[0]
    rows = frame.index[device]
    frame.loc[rows[100], "data_used_mb_today"] = 0.5  # drops, then the counter continues
    frame.loc[rows[150], "data_used_mb_today"] = np.nan  # a missing value is skipped, not compared
    shuffled = frame.sample(frac=1.0, random_state=1)  # order of delivery does not matter
    result = validate(shuffled)
    assert result.rule_counts == {"counters.data_used_mb_today": 1}
    (reason,) = result.quarantined["reason"]
    assert reason.startswith("data_used_mb_today=0.5 decreased from ")
    assert result.quarantined["timestamp"].iloc[0] == str(frame.loc[rows[100], "timestamp"])


def test_unicode_and_very_long_device_ids(clean):
    frame = clean.copy()
    frame["device_id"] = frame["device_id"].astype(object)
    unicode_id, longest_ok = "gerät-ü-设备-📱", "x" * CONTRACT.device_id_max_length
    too_long, huge = "y" * (CONTRACT.device_id_max_length + 1), "z" * 100_000
    frame.loc[[0, 1, 2, 3], "device_id"] = [unicode_id, longest_ok, too_long, huge]
    result = validate(frame)
    assert result.rule_counts == {"keys.device_id.max_length": 2}
    assert {unicode_id, longest_ok} <= set(result.valid["device_id"])
    assert set(result.quarantined["device_id"]) == {too_long, huge}
    assert "device_id has 100000 characters (limit 512)" in set(result.quarantined["reason"])
    assert len(json.dumps(rule(result, "keys.device_id.max_length").summary())) < 2000  # samples are shortened


def test_unknown_columns_are_dropped_or_kept_on_purpose(clean):
    frame = clean.assign(firmware_build="A13.2")
    dropped = validate(frame)
    assert dropped.unknown_columns == ("firmware_build",) and dropped.unknown_column_policy == "drop"
    assert "firmware_build" not in dropped.valid.columns and dropped.quarantined.empty
    kept = validate(frame, CONTRACT.replace(unknown_columns="keep"))
    assert kept.unknown_columns == ("firmware_build",) and kept.unknown_column_policy == "keep"
    assert kept.valid["firmware_build"].eq("A13.2").all()


def test_thirty_percent_bad_rows_exceed_the_limit(clean):
    frame = clean.copy()
    bad = frame.sample(frac=0.3, random_state=2).index
    frame.loc[bad, "memory_used_pct"] = 250.0
    result = validate(frame)
    assert result.rule_counts == {"ranges.memory_used_pct": len(bad)}
    assert result.bad_row_share == pytest.approx(len(bad) / len(frame))
    assert result.bad_row_share > CONTRACT.max_bad_row_share


# ---------------------------------------------------------------------------------- accounting


def dirty(clean: pd.DataFrame) -> pd.DataFrame:
    """Every kind of bad row at once: rows 0-7, an exact copy of row 8, a conflicting copy of row 9."""
    frame = clean.copy()
    frame["device_id"] = frame["device_id"].astype(object)
    frame.loc[0, "device_id"] = None
    frame.loc[1, ["device_id", "battery_level_pct"]] = ["", 300.0]  # two rules at once
    frame.loc[2, "timestamp"] = pd.NaT
    frame.loc[3, "timestamp"] = END + pd.Timedelta(hours=3)
    frame.loc[4, "cpu_util_pct"] = 101.0
    frame.loc[5, "data_used_mb_today"] = 0.0
    frame.loc[6, "device_id"] = "ä" * 600
    frame.loc[7, "reboots"] = -1.0
    extra = pd.concat([frame.iloc[[8]], frame.iloc[[9]].assign(net_rx_mb=9.0)], ignore_index=True)
    return pd.concat([frame, extra], ignore_index=True)


def test_quarantine_agrees_with_independent_pandas_masks(clean):
    """The quarantine comes from GX's unexpected rows; the same rules written as plain pandas
    masks here must find exactly the same rows."""
    frame = dirty(clean)
    result = validate(frame)
    device, stamp = frame["device_id"], frame["timestamp"]
    keyed = device.notna() & stamp.notna()
    order = frame.assign(_row=np.arange(len(frame))).sort_values(["device_id", "timestamp", "_row"])
    order = order.loc[keyed]
    previous = order.groupby(["device_id", order["timestamp"].dt.floor("D")])["data_used_mb_today"].transform(
        lambda s: s.ffill().shift(1)
    )
    masks = {
        "keys.device_id.not_null": device.isna(),
        "keys.device_id.not_blank": device.fillna("x").astype(str).str.strip().eq(""),
        "keys.device_id.max_length": device.fillna("").astype(str).str.len() > 512,
        "keys.timestamp.not_null": stamp.isna(),
        "window.timestamp_in_partition": (stamp < START) | (stamp >= END),
        "uniqueness.exact_duplicate": frame.duplicated(keep="first"),
        "uniqueness.device_id_timestamp": frame.duplicated(["device_id", "timestamp"], keep=False)
        & ~frame.duplicated(keep=False),
        "counters.data_used_mb_today": pd.Series(
            frame.index.isin(order.index[order["data_used_mb_today"] < previous]), index=frame.index
        ),
    }
    for metric, (low, high) in CONTRACT.ranges.items():
        masks[f"ranges.{metric}"] = (frame[metric] < low) | (frame[metric] > high)
    bad = pd.Series(False, index=frame.index)
    for name, mask in masks.items():
        mask = mask.fillna(False).astype(bool)
        bad |= mask
        if name.startswith("uniqueness."):
            continue  # GX counts every row of a duplicated group; the masks above count the quarantined ones
        assert rule(result, name).unexpected_count == int(mask.sum()), name
    assert int(bad.sum()) == len(result.quarantined) == 11  # rows 0-7, one extra copy, a conflicting pair
    assert sorted(result.quarantined["row_json"].map(lambda j: json.loads(j)["battery_level_pct"]).tolist(), key=str) == sorted(
        frame.loc[bad, "battery_level_pct"].tolist(), key=str
    )
    # each quarantined row names the first rule (in the contract's family order) it broke
    order_of_rules = [r.rule for r in result.rule_results if r.rule in masks]
    first_broken = [next(name for name in order_of_rules if masks[name].fillna(False).iloc[i]) for i in np.flatnonzero(bad)]
    assert result.rule_counts == dict(Counter(first_broken))


def test_every_quarantined_row_keeps_the_row_partition_rule_and_reason(clean):
    frame = dirty(clean)
    result = validate(frame)
    q = result.quarantined
    assert list(q.columns) == list(QUARANTINE_COLUMNS) == [c.name for c in quarantined_telemetry.columns]
    assert q["partition_date"].eq("2026-11-02").all()
    assert q["rule"].str.len().gt(0).all() and q["reason"].str.len().gt(0).all()
    rows = [json.loads(j) for j in q["row_json"]]
    assert {r["device_id"] for r in rows} >= {None, "", "ä" * 600}
    assert all(set(CONTRACT.required_columns) <= set(r) for r in rows)
    two_rules = q.loc[q["device_id"].eq("")]
    assert two_rules["rule"].item() == "keys.device_id.not_blank"
    assert "also broke: ranges.battery_level_pct" in two_rules["reason"].item()
    # family results: unexpected counts and a small sample for the asset checks
    keys = result.family_results("keys")
    assert sum(r.quarantined_count for r in keys) == 4  # null, blank, too long, NaT
    assert all(len(r.sample) <= 5 for r in result.rule_results)


def test_exact_copies_and_conflicts_with_and_without_keys_in_any_order(clean):
    """Only rows whose (device_id, timestamp) repeats can be copies, so only those are
    fingerprinted; copies and conflicts are still told apart, also for rows missing a key
    (missing keys compare equal here, as in ``DataFrame.duplicated``), in any delivery order."""
    frame = clean.copy()
    frame["device_id"] = frame["device_id"].astype(object)
    frame.loc[0, "device_id"] = None
    frame.loc[1, "timestamp"] = pd.NaT
    frame.loc[2, ["device_id", "timestamp"]] = [None, pd.NaT]
    extra = [
        frame.iloc[[5, 5]],  # two more exact copies of a keyed row
        frame.iloc[[6]].assign(cpu_util_pct=1.0),  # a conflicting row for another key
        frame.iloc[[0, 0]],  # copies of a row without device_id
        frame.iloc[[1]].assign(reboots=9.0),  # conflicts with a row without timestamp
        frame.iloc[[2]],  # a copy of a row without either key
    ]
    frame = pd.concat([frame, *extra], ignore_index=True)
    for order in (frame, frame.iloc[::-1], frame.sample(frac=1.0, random_state=4)):
        result = validate(order)
        assert result.rule_counts == {
            "keys.device_id.not_null": 5,  # rows 0, 2 and their three copies
            "keys.timestamp.not_null": 2,  # row 1 and its conflicting row
            "uniqueness.exact_duplicate": 2,  # the two extra copies of row 5
            "uniqueness.device_id_timestamp": 2,  # row 6 and its conflicting row
        }
        copies = rule(result, "uniqueness.exact_duplicate")
        # GX sees every row of a group of copies: row 5 (3x), row 0 (3x), row 2 (2x)
        assert copies.unexpected_count == 8 and copies.quarantined_count == 2
        conflicts = rule(result, "uniqueness.device_id_timestamp")
        assert conflicts.unexpected_count == 5  # rows with both keys only: row 5 (3x) and row 6 (2x)
        assert len(result.valid) == len(clean) - 4  # rows 0, 1, 2 and 6 lose; row 5 keeps one copy
        assert not result.valid.duplicated(["device_id", "timestamp"]).any()


def test_repeated_keys_with_unhashable_extra_cells_are_quarantined_not_crashing(clean):
    """An unknown column holding lists (e.g. JSON arrays from a source) next to repeated keys:
    copies and conflicts are still told apart, by the cells' text."""
    frame = clean.copy()
    frame["tags"] = [["a", str(i)] for i in range(len(frame))]
    frame = pd.concat(
        [frame, frame.iloc[[3]], frame.iloc[[4]].assign(tags=[["changed"]])], ignore_index=True
    )  # an exact copy of row 3; a row for row 4's key differing only in its list
    result = validate(frame)
    assert result.rule_counts == {"uniqueness.exact_duplicate": 1, "uniqueness.device_id_timestamp": 2}
    assert len(result.valid) + len(result.quarantined) == len(frame)
