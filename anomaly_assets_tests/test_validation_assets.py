"""validated_telemetry in Dagster: asset checks, the quarantine table, runs that must fail.

Each test materializes raw_telemetry and validated_telemetry (and device_features where the test
is about what happens downstream) for one partition, with a source that delivers a hand-built
bad frame, a results store on a temporary SQLite file and parquet files under tmp_path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import dagster as dg

from anomaly_assets.resources.sources import InventorySource
import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core import generator
from anomaly_assets.core.contract import TelemetryContract, load_contract
from anomaly_assets.defs.features.assets import device_features
from anomaly_assets.defs.ingestion.assets import FAMILY_CHECKS, raw_telemetry, validated_telemetry
from anomaly_assets.defs.inventory.assets import device_inventory
from anomaly_assets.resources import ChunkWorkers, PartitionedParquetIOManager, ResultsStore, TelemetrySource
from anomaly_assets.resources.results_store import quarantined_telemetry

PARTITION = "2026-11-02"
DAY = dt.date(2026, 11, 2)


def clean_frame(day: dt.date = DAY) -> pd.DataFrame:
    return generator.generate_day(generator.FleetConfig(n_devices=4, device_fault_rate=0.0), day)


def few_bad_rows(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["device_id"] = frame["device_id"].astype(object)
    frame.loc[0, "device_id"] = None
    frame.loc[1, "battery_level_pct"] = 140.0
    frame.loc[2, "timestamp"] = frame.loc[2, "timestamp"] - pd.Timedelta(days=3)
    frame.loc[3, "data_used_mb_today"] = -1.0  # out of range and going backwards
    return pd.concat([frame, frame.iloc[[10]]], ignore_index=True)


def thirty_percent_bad(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[frame.sample(frac=0.3, random_state=5).index, "cpu_util_pct"] = 180.0
    return frame


FRAMES: dict[str, Callable[[], pd.DataFrame]] = {
    "clean": clean_frame,
    "few_bad_rows": lambda: few_bad_rows(clean_frame()),
    "thirty_percent_bad": lambda: thirty_percent_bad(clean_frame()),
    "missing_column": lambda: clean_frame().drop(columns=["memory_used_pct"]),
    "metric_as_strings": lambda: clean_frame().assign(battery_temp_c=lambda f: f["battery_temp_c"].map("{:.1f} C".format)),
    "mixed_metric": lambda: clean_frame().astype({"reboots": object}).assign(
        reboots=lambda f: f["reboots"].where(f.index != 5, "ERR")
    ),
    "empty": lambda: clean_frame().iloc[0:0],
    "unknown_column": lambda: clean_frame().assign(firmware_build="A13.2"),
    "unicode_ids": lambda: clean_frame().assign(
        device_id=lambda f: f["device_id"].str.replace("dev-", "gerät-ü-设备-📱-") + np.where(f.index == 0, "x" * 600, "")
    ),
}


class HandBuiltSource(TelemetrySource):
    """Delivers one of FRAMES, restricted to the requested window, for any partition."""

    kind: str = "clean"
    unknown_columns: str = "drop"

    def contract(self) -> TelemetryContract:
        return load_contract().replace(unknown_columns=self.unknown_columns)

    def label_columns(self) -> tuple[str, ...]:
        return generator.LABEL_COLUMNS

    def describe(self) -> str:
        return f"hand-built source ({self.kind})"

    def read_window(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        return FRAMES[self.kind]()


def run(tmp_path, kind: str, assets=(raw_telemetry, validated_telemetry), run_config=None, **source):
    resources = {
        "telemetry_source": HandBuiltSource(kind=kind, **source),
        "results_store": ResultsStore(url=f"sqlite:///{tmp_path}/results.db"),
        "io_manager": PartitionedParquetIOManager(base_path=str(tmp_path / "parquet")),
        "inventory_source": InventorySource(),  # not configured: enrichment skipped
        "chunk_workers": ChunkWorkers(),
    }
    result = dg.materialize(
        [device_inventory, *assets], partition_key=PARTITION, resources=resources, raise_on_error=False, run_config=run_config
    )
    return result, resources["results_store"]


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def quarantine(store: ResultsStore) -> pd.DataFrame:
    return store.read_frame("select * from quarantined_telemetry where partition_date = :d", {"d": PARTITION})


def validated_file(tmp_path):
    return tmp_path / "parquet" / "validated_telemetry" / f"{PARTITION}.parquet"


def failure_message(result: dg.ExecuteInProcessResult, node: str) -> str:
    failure = result.failure_data_for_node(node)
    assert failure is not None, f"{node} did not fail"
    return failure.user_failure_data.description if failure.user_failure_data else failure.error.message


def test_clean_partition_materializes_with_every_check_passing(tmp_path):
    result, store = run(tmp_path, "clean", assets=(raw_telemetry, validated_telemetry, device_features))
    assert result.success
    evaluations = checks(result)
    assert set(evaluations) == {*FAMILY_CHECKS.values(), "bad_row_share_within_limit", "rows_accounted_for"}
    assert all(c.passed for c in evaluations.values())
    metadata = result.asset_materializations_for_node("validated_telemetry")[0].metadata
    raw_rows = len(clean_frame())
    assert metadata["dagster/row_count"].value == metadata["raw_rows"].value == raw_rows
    assert metadata["quarantined_rows"].value == 0
    assert len(pd.read_parquet(validated_file(tmp_path))) == raw_rows
    assert (tmp_path / "parquet" / "device_features" / f"{PARTITION}.parquet").exists()
    assert store.count(quarantined_telemetry, [PARTITION]) == 0


def test_bad_rows_are_quarantined_with_rule_and_reason_and_counted(tmp_path):
    result, store = run(tmp_path, "few_bad_rows")
    assert result.success  # 5 of ~1150 rows: below the 5% limit
    rows = quarantine(store)
    assert sorted(rows["rule"]) == sorted(
        [
            "keys.device_id.not_null",
            "ranges.battery_level_pct",
            "window.timestamp_in_partition",
            "ranges.data_used_mb_today",
            "uniqueness.exact_duplicate",
        ]
    )
    assert rows["reason"].str.len().gt(0).all() and rows["row_json"].str.startswith("{").all()
    assert "also broke: counters.data_used_mb_today" in rows.loc[rows["rule"] == "ranges.data_used_mb_today", "reason"].item()
    evaluations = checks(result)
    assert evaluations["rows_accounted_for"].passed
    accounted = evaluations["rows_accounted_for"].metadata
    assert accounted["raw"].value == accounted["valid"].value + accounted["quarantined"].value == len(few_bad_rows(clean_frame()))
    assert accounted["quarantined"].value == 5
    for family in ("keys", "window", "uniqueness", "ranges", "counters"):
        check = evaluations[FAMILY_CHECKS[family]]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN, family
        assert check.metadata["unexpected_rows"].value > 0
        assert "|" in check.metadata["sample"].value  # a markdown table of failing rows
    assert evaluations[FAMILY_CHECKS["schema"]].passed
    ranges = evaluations[FAMILY_CHECKS["ranges"]]
    assert "ranges.battery_level_pct" in ranges.description and "140.0" in ranges.description
    # re-materializing replaces the partition's quarantine rows, never duplicates them
    again, store = run(tmp_path, "few_bad_rows")
    assert again.success and store.count(quarantined_telemetry, [PARTITION]) == 5


def test_thirty_percent_bad_rows_block_the_run_before_features(tmp_path):
    result, store = run(tmp_path, "thirty_percent_bad", assets=(raw_telemetry, validated_telemetry, device_features))
    assert not result.success
    share = checks(result)["bad_row_share_within_limit"]
    assert not share.passed and share.severity == dg.AssetCheckSeverity.ERROR
    assert "ranges.cpu_util_pct" in share.description and "cpu_util_pct=180.0 outside [0, 100]" in share.description
    assert "(30.0%)" in share.description and "limit 5.0%" in share.description
    assert store.count(quarantined_telemetry, [PARTITION]) == round(0.3 * len(clean_frame()))
    assert not (tmp_path / "parquet" / "device_features").exists()  # features were never built


@pytest.mark.parametrize(
    ("kind", "rule", "observed"),
    [
        ("missing_column", "schema.column_exists.memory_used_pct", "the column is missing"),
        ("metric_as_strings", "schema.type.battery_temp_c", "observed str"),
    ],
)
def test_a_broken_schema_fails_the_run_naming_rule_and_column(tmp_path, kind, rule, observed):
    result, store = run(tmp_path, kind, assets=(raw_telemetry, validated_telemetry, device_features))
    assert not result.success
    message = failure_message(result, "validated_telemetry")
    assert rule in message and observed in message and "hand-built source" in message
    schema = checks(result)[FAMILY_CHECKS["schema"]]
    assert not schema.passed and schema.severity == dg.AssetCheckSeverity.ERROR
    assert rule in schema.description
    assert not validated_file(tmp_path).exists()
    assert not (tmp_path / "parquet" / "device_features").exists()
    if kind == "metric_as_strings":
        assert "'2" in message or "'3" in message  # example values, e.g. '29.1 C'


def test_a_cell_that_is_not_a_number_quarantines_its_row_only(tmp_path):
    """raw_telemetry stores the mixed column as text, as delivered; validation reads the cells
    that are numbers and quarantines the one that is not, naming column and value."""
    result, store = run(tmp_path, "mixed_metric")
    assert result.success
    raw = pd.read_parquet(tmp_path / "parquet" / "raw_telemetry" / f"{PARTITION}.parquet")
    assert raw["reboots"].iloc[5] == "ERR" and len(raw) == len(clean_frame())
    rows = quarantine(store)
    assert rows[["rule", "reason"]].values.tolist() == [["schema.type.reboots", "reboots='ERR' is not a number"]]
    assert len(pd.read_parquet(validated_file(tmp_path))) == len(raw) - 1


def test_an_empty_partition_fails_naming_source_and_window(tmp_path):
    result, _ = run(tmp_path, "empty", assets=(raw_telemetry, validated_telemetry, device_features))
    assert not result.success
    message = failure_message(result, "validated_telemetry")
    assert "hand-built source (empty) returned no rows for 2026-11-02" in message
    assert "[2026-11-02T00:00:00+00:00, 2026-11-03T00:00:00+00:00)" in message
    assert "allow_empty_partition" in message
    assert not validated_file(tmp_path).exists()
    assert not (tmp_path / "parquet" / "device_features").exists()


def test_an_allowed_empty_partition_succeeds_and_writes_nothing_downstream(tmp_path):
    allow = {"ops": {"validated_telemetry": {"config": {"allow_empty_partition": True}}}}
    result, store = run(tmp_path, "empty", assets=(raw_telemetry, validated_telemetry, device_features), run_config=allow)
    assert result.success
    assert not result.asset_materializations_for_node("validated_telemetry")
    assert not validated_file(tmp_path).exists()
    assert not (tmp_path / "parquet" / "device_features").exists()
    assert checks(result)["rows_accounted_for"].passed
    assert store.count(quarantined_telemetry, [PARTITION]) == 0


@pytest.mark.parametrize("policy", ["drop", "keep"])
def test_an_unknown_column_is_dropped_or_kept_and_said_in_metadata(tmp_path, policy):
    result, _ = run(tmp_path, "unknown_column", unknown_columns=policy)
    assert result.success
    metadata = result.asset_materializations_for_node("validated_telemetry")[0].metadata
    assert metadata["unknown_columns"].value == ["firmware_build"]
    assert metadata["unknown_columns_policy"].value.startswith("kept" if policy == "keep" else "dropped")
    assert ("firmware_build" in pd.read_parquet(validated_file(tmp_path)).columns) == (policy == "keep")
    raw_file = tmp_path / "parquet" / "raw_telemetry" / f"{PARTITION}.parquet"
    assert "firmware_build" in pd.read_parquet(raw_file).columns


def test_unicode_ids_survive_and_overlong_ids_are_quarantined(tmp_path):
    result, store = run(tmp_path, "unicode_ids")
    assert result.success
    valid = pd.read_parquet(validated_file(tmp_path))
    assert valid["device_id"].str.startswith("gerät-ü-设备-📱-").all()
    rows = quarantine(store)
    assert rows["rule"].tolist() == ["keys.device_id.max_length"]
    assert rows["device_id"].item().endswith("x" * 600) and "设备" in rows["row_json"].item()


def run_range(tmp_path, frame: pd.DataFrame):
    FRAMES["range"] = lambda: frame
    resources = {
        "telemetry_source": HandBuiltSource(kind="range"),
        "results_store": ResultsStore(url=f"sqlite:///{tmp_path}/results.db"),
        "io_manager": PartitionedParquetIOManager(base_path=str(tmp_path / "parquet")),
        "inventory_source": InventorySource(),  # not configured: enrichment skipped
        "chunk_workers": ChunkWorkers(),
    }
    tags = {"dagster/asset_partition_range_start": "2026-11-02", "dagster/asset_partition_range_end": "2026-11-03"}
    result = dg.materialize([device_inventory, raw_telemetry, validated_telemetry], resources=resources, tags=tags)
    return result, resources["results_store"]


def test_a_range_run_validates_and_quarantines_each_day_on_its_own(tmp_path):
    second = clean_frame(DAY + dt.timedelta(days=1))
    second.loc[7, "battery_level_pct"] = 150.0
    result, store = run_range(tmp_path, pd.concat([clean_frame(DAY), second], ignore_index=True))
    assert result.success
    rows = store.read_frame("select partition_date, rule from quarantined_telemetry")
    assert rows.to_dict("records") == [{"partition_date": "2026-11-03", "rule": "ranges.battery_level_pct"}]
    metadata = {
        m.partition: m.metadata for m in result.asset_materializations_for_node("validated_telemetry")
    }
    assert metadata["2026-11-02"]["quarantined_rows"].value == 0
    assert metadata["2026-11-03"]["quarantined_rows"].value == 1
    for day, expected in (("2026-11-02", len(clean_frame())), ("2026-11-03", len(second) - 1)):
        assert len(pd.read_parquet(tmp_path / "parquet" / "validated_telemetry" / f"{day}.parquet")) == expected
    # Each check's result is recorded per day, naming its partition (not one result for the range).
    evaluations = {(c.check_name, c.partition): c for c in result.get_asset_check_evaluations()}
    names = [*FAMILY_CHECKS.values(), "bad_row_share_within_limit", "rows_accounted_for"]
    assert set(evaluations) == {(name, day) for name in names for day in ("2026-11-02", "2026-11-03")}
    assert [day for (name, day), c in evaluations.items() if not c.passed] == ["2026-11-03"]
    assert evaluations[("metrics_in_range", "2026-11-03")].metadata["quarantined_rows"].value == 1
    accounted = evaluations[("rows_accounted_for", "2026-11-03")]
    assert {k: v.value for k, v in accounted.metadata.items()} == {"raw": len(second), "valid": len(second) - 1, "quarantined": 1}
    assert all(c.target_materialization_data is not None for c in evaluations.values())


def test_a_stray_row_in_a_range_run_is_quarantined_with_the_first_day(tmp_path):
    two_days = pd.concat([clean_frame(DAY), clean_frame(DAY + dt.timedelta(days=1))], ignore_index=True)
    stray = two_days.iloc[[0]].assign(timestamp=pd.Timestamp("2026-12-25", tz="UTC"))
    result, store = run_range(tmp_path, pd.concat([two_days, stray], ignore_index=True))
    rows = store.read_frame("select partition_date, rule from quarantined_telemetry")
    assert rows.to_dict("records") == [{"partition_date": PARTITION, "rule": "window.timestamp_in_partition"}]
