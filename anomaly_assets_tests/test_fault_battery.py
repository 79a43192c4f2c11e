"""The fault battery: bad input and faults through the real sources and the real assets.

Every delivered row is kept (source rows for the window = raw rows = valid + quarantined), each
bad row is quarantined under the rule that names its problem, and no planted secret appears in
stdout/stderr, the Dagster event log, compute logs, the results database or an error message.

Row-level faults are planted on their own devices of one delivered day and run through each real
source that can carry them (CSV, parquet, SQLite, PostgreSQL); faults that concern a whole
delivery (a text column, a cut-off file, a missing column, an empty or corrupt file) and the
secrets each get their own run. ``KINDS`` lists every kind the battery covers.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from anomaly_assets.core import generator
from anomaly_assets.defs.ingestion.assets import FAMILY_CHECKS, raw_telemetry, validated_telemetry
from anomaly_assets.defs.inventory.assets import device_inventory
from anomaly_assets.resources import ChunkWorkers, PartitionedParquetIOManager, ResultsStore
from anomaly_assets.resources.sources import (
    ColumnMapping,
    FileTelemetrySource,
    InventorySource,
    OdbcTelemetrySource,
    SqlTelemetrySource,
)
from anomaly_assets_tests.conftest import free_port, require_service
from anomaly_assets_tests.test_sources import odbc_driver

PARTITION = "2026-11-02"
DAY = pd.Timestamp(PARTITION, tz="UTC")
DEVICES = 30  # 8,640 rows a day at 5-minute samples
SECRET = "Pl4nted-S3cret-x9"
# The delivery's own column names; rules come from telemetry_contract.yaml by contract name, and
# fan_rpm is a metric the YAML contract does not know (so it has no range, only the finite limit).
MAPPING = ColumnMapping(
    device_id="asset_tag",
    timestamp="ts",
    cohorts={"manufacturer": "maker", "model": "hw_model", "os_version": "os"},
    metrics={**{m: m for m in generator.METRICS if m != "cpu_util_pct"}, "cpu_util_pct": "cpu", "fan_rpm": "fan_rpm"},
)
SOURCE_KINDS = ("csv", "parquet", "sqlite", "postgres")
TEXTUAL = ("csv", "parquet", "sqlite")  # sources whose timestamp column is text


def clean_delivery() -> pd.DataFrame:
    """One day of the synthetic fleet in the delivery's shape, timestamps as naive UTC text."""
    frame = generator.generate_day(generator.FleetConfig(n_devices=DEVICES, device_fault_rate=0.0), DAY.date())
    frame = frame.drop(columns=list(generator.LABEL_COLUMNS))
    frame = frame.rename(columns={"device_id": "asset_tag", "timestamp": "ts", "manufacturer": "maker", "model": "hw_model", "os_version": "os", "cpu_util_pct": "cpu"})
    frame["fan_rpm"] = 2000.0 + np.arange(len(frame)) % 300
    frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%d %H:%M:%S")
    return frame.astype({c: object for c in ("ts", "cpu", "fan_rpm", "asset_tag")})


@dataclasses.dataclass(frozen=True)
class Fault:
    """Planted on rows 100.. of device ``device`` (its own device); ``rule``/``reason`` of each
    quarantined row; ``quarantined`` rows expected (0: the rows are valid); ``sources`` that can
    carry it; ``extra_rows`` rows it adds that belong to another day."""

    name: str
    device: int
    plant: Callable[[pd.DataFrame, pd.Index], pd.DataFrame]
    rule: str | None
    reason: str | None
    quarantined: int
    sources: tuple[str, ...] = SOURCE_KINDS
    other_day_rows: int = 0
    by_rule: bool = False  # the device id itself is the fault: match the quarantine by rule


def _set(column: str, value):
    def plant(frame: pd.DataFrame, rows: pd.Index) -> pd.DataFrame:
        frame.loc[rows, column] = value
        return frame

    return plant


def _counter_falls(frame: pd.DataFrame, rows: pd.Index) -> pd.DataFrame:
    frame.loc[rows[:1], "data_used_mb_today"] = frame.loc[rows[0] - 1, "data_used_mb_today"] - 50.0
    return frame


def _exact_copy(frame: pd.DataFrame, rows: pd.Index) -> pd.DataFrame:
    return pd.concat([frame, frame.loc[rows[:1]]], ignore_index=True)


def _conflicting_copy(frame: pd.DataFrame, rows: pd.Index) -> pd.DataFrame:
    return pd.concat([frame, frame.loc[rows[:1]].assign(battery_temp_c=55.5)], ignore_index=True)


def _next_day_row(frame: pd.DataFrame, rows: pd.Index) -> pd.DataFrame:
    return pd.concat([frame, frame.loc[rows[:1]].assign(ts="2026-11-03 00:05:00")], ignore_index=True)


ROW_FAULTS = (
    Fault("text cell 'N/A' in a numeric column", 1, _set("cpu", "N/A"), "schema.type.cpu_util_pct", "cpu_util_pct='N/A' is not a number", 4, TEXTUAL),
    Fault("text cell 'abc' in a numeric column", 2, _set("cpu", "abc"), "schema.type.cpu_util_pct", "cpu_util_pct='abc' is not a number", 3, TEXTUAL),
    Fault("unreadable timestamp", 3, _set("ts", "not a time"), "keys.timestamp.readable", "timestamp 'not a time' is not a readable date and time", 2, TEXTUAL),
    Fault("impossible date 2026-13-45", 4, _set("ts", "2026-13-45 10:00:00"), "keys.timestamp.readable", "timestamp '2026-13-45 10:00:00' is not a readable", 2, ("csv", "parquet")),
    Fault("epoch-number timestamp", 5, _set("ts", "1793577600"), "keys.timestamp.readable", "timestamp '1793577600' is not a readable", 2, TEXTUAL),
    Fault("blank timestamp", 6, _set("ts", ""), "keys.timestamp.not_null", "timestamp is missing or blank", 2, TEXTUAL),
    Fault("missing timestamp", 7, _set("ts", None), "keys.timestamp.not_null", "timestamp is missing or blank", 2),
    Fault("timestamp in 1970", 8, _set("ts", "1970-01-01 00:00:00"), "window.timestamp_in_partition", "timestamp 1970-01-01 00:00:00+00:00 outside", 1),
    Fault("timestamp in 9999", 9, _set("ts", "9999-12-31 23:59:59"), "window.timestamp_in_partition", "timestamp 9999-12-31 23:59:59+00:00 outside", 1),
    Fault("inf", 10, _set("cpu", np.inf), "ranges.cpu_util_pct", "cpu_util_pct=inf outside [0, 100]", 2),
    Fault("-inf", 11, _set("cpu", -np.inf), "ranges.cpu_util_pct", "cpu_util_pct=-inf outside [0, 100]", 2),
    Fault("inf with no range", 12, _set("fan_rpm", np.inf), "ranges.fan_rpm", "fan_rpm=inf outside [-1e+15, 1e+15]", 2),
    Fault("1e308 with no range", 13, _set("fan_rpm", 1e308), "ranges.fan_rpm", "fan_rpm=1e+308 outside [-1e+15, 1e+15]", 2),
    Fault("counter falls mid-day", 14, _counter_falls, "counters.data_used_mb_today", "decreased from", 1),
    Fault("value out of range", 15, _set("battery_level_pct", 150.0), "ranges.battery_level_pct", "battery_level_pct=150.0 outside [0, 100]", 3),
    Fault("missing device id", 16, _set("asset_tag", None), "keys.device_id.not_null", "device_id is null", 2, by_rule=True),
    Fault("blank device id", 17, _set("asset_tag", "   "), "keys.device_id.not_blank", "device_id '   ' is empty or whitespace", 2, by_rule=True),
    Fault("device id too long", 18, _set("asset_tag", "d" * 600), "keys.device_id.max_length", "device_id has 600 characters (limit 512)", 2, by_rule=True),
    Fault("exact duplicate row", 19, _exact_copy, "uniqueness.exact_duplicate", "exact copy of an earlier row", 1),
    Fault("conflicting rows for one key", 20, _conflicting_copy, "uniqueness.device_id_timestamp", "conflicting rows", 2),
    Fault("injection-shaped device id", 21, _set("asset_tag", "x'; DROP TABLE telemetry; --"), None, None, 0, by_rule=True),
    Fault("timestamp with a UTC offset", 22, _set("ts", "2026-11-02T10:20:00+02:00"), None, None, 0, ("csv", "parquet")),
    Fault("sensor dropout (missing value)", 23, _set("cpu", None), None, None, 0),
    Fault("a row of the next day", 24, _next_day_row, None, None, 0, ("csv", "parquet"), other_day_rows=1),
)


def faulty_delivery(kind: str) -> tuple[pd.DataFrame, list[Fault]]:
    frame = clean_delivery()
    devices = frame["asset_tag"].unique()
    faults = [f for f in ROW_FAULTS if kind in f.sources]
    for fault in faults:
        rows = frame.index[frame["asset_tag"] == devices[fault.device]][100 : 100 + max(fault.quarantined, 1)]
        if fault.name == "timestamp in 1970" or fault.name == "timestamp in 9999":
            rows = rows[:1]
        frame = fault.plant(frame, rows)
    return frame, faults


# ----------------------------------------------------------------------------- delivering


def deliver(kind: str, frame: pd.DataFrame, tmp_path: Path, postgres_url: str | None = None):
    """Write ``frame`` where the source ``kind`` reads it; returns the source resource."""
    if kind == "csv":
        path = tmp_path / "delivery" / "fleet.csv"
        path.parent.mkdir(exist_ok=True)
        frame.to_csv(path, index=False)
        return FileTelemetrySource(glob=str(path), mapping=MAPPING, chunk_rows=2_000)
    if kind == "parquet":
        path = tmp_path / "delivery" / "fleet.parquet"
        path.parent.mkdir(exist_ok=True)
        # a string column where text cells are planted, as a parquet writer would deliver it
        frame.astype({"ts": "str", "cpu": "str", "asset_tag": "str"}).replace({"nan": None, "None": None}).to_parquet(path, index=False)
        return FileTelemetrySource(glob=str(path), mapping=MAPPING, chunk_rows=2_000)
    if kind == "sqlite":
        path = tmp_path / "delivery.db"
        columns = list(frame.columns)
        types = {c: "TEXT" if c in ("asset_tag", "ts", "maker", "hw_model", "os") else "REAL" for c in columns}
        with sqlite3.connect(path) as connection:  # typed columns; SQLite keeps 'N/A' in a REAL column as text
            connection.execute(f"CREATE TABLE telemetry ({', '.join(f'{c} {types[c]}' for c in columns)})")
            records = frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None)
            connection.executemany(f"INSERT INTO telemetry VALUES ({', '.join('?' * len(columns))})", records)
        return SqlTelemetrySource(url=f"sqlite:///{path}", table="telemetry", mapping=MAPPING, naive_utc_parameters=True, chunk_rows=2_000)
    if kind == "postgres":
        typed = frame.assign(ts=pd.to_datetime(frame["ts"], utc=True), cpu=frame["cpu"].astype(float), fan_rpm=frame["fan_rpm"].astype(float))
        engine = sa.create_engine(postgres_url)
        typed.to_sql("telemetry", engine, index=False)  # timestamptz, double precision, text
        engine.dispose()
        return SqlTelemetrySource(url=postgres_url, table="telemetry", mapping=MAPPING, chunk_rows=2_000)
    raise ValueError(kind)


def materialize(tmp_path: Path, source, instance: dg.DagsterInstance | None = None) -> tuple[dg.ExecuteInProcessResult, ResultsStore]:
    store = ResultsStore(url=f"sqlite:///{tmp_path}/results.db")
    result = dg.materialize(
        [device_inventory, raw_telemetry, validated_telemetry],
        partition_key=PARTITION,
        instance=instance,
        raise_on_error=False,
        resources={
            "telemetry_source": source,
            "results_store": store,
            "io_manager": PartitionedParquetIOManager(base_path=str(tmp_path / "parquet")),
            "inventory_source": InventorySource(),
            "chunk_workers": ChunkWorkers(),
        },
    )
    return result, store


def parquet_rows(tmp_path: Path, asset: str) -> pd.DataFrame:
    path = tmp_path / "parquet" / asset / f"{PARTITION}.parquet"
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def quarantine(store: ResultsStore) -> pd.DataFrame:
    return store.read_frame("select * from quarantined_telemetry where partition_date = :d", {"d": PARTITION})


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def failure_message(result: dg.ExecuteInProcessResult, node: str) -> str:
    failure = result.failure_data_for_node(node)
    assert failure is not None, f"{node} did not fail"
    if failure.user_failure_data:
        return failure.user_failure_data.description
    error, messages = failure.error, []
    while error is not None:  # the step error and what caused it
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


# ----------------------------------------------------------------------------- row faults, per source


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_row_faults_are_kept_and_quarantined_with_their_rule(kind, tmp_path, request):
    url = request.getfixturevalue("postgres_database") if kind == "postgres" else None
    frame, faults = faulty_delivery(kind)
    source = deliver(kind, frame, tmp_path, url)
    result, store = materialize(tmp_path, source)
    assert result.success, result.all_node_events

    delivered = len(frame) - sum(f.other_day_rows for f in faults)
    raw, valid, rows = parquet_rows(tmp_path, "raw_telemetry"), parquet_rows(tmp_path, "validated_telemetry"), quarantine(store)
    assert len(raw) == delivered, "raw_telemetry holds every row the source delivered for the day"
    assert len(valid) + len(rows) == delivered, "nothing lost: raw = valid + quarantined"
    accounted = checks(result)["rows_accounted_for"]
    assert accounted.passed and accounted.metadata["raw"].value == delivered

    devices = clean_delivery()["asset_tag"].unique()
    for fault in faults:
        mine = rows.loc[rows["rule"] == fault.rule] if fault.by_rule else rows.loc[rows["device_id"] == devices[fault.device]]
        assert len(mine) == fault.quarantined, f"{kind}: {fault.name}: {mine[['rule', 'reason']].values.tolist()}"
        if fault.quarantined:
            assert set(mine["rule"]) == {fault.rule}, f"{kind}: {fault.name}"
            assert mine["reason"].str.contains(fault.reason, regex=False).all(), f"{kind}: {fault.name}: {list(mine['reason'])}"
    assert len(rows) == sum(f.quarantined for f in faults), rows["rule"].value_counts().to_dict()
    # Quarantined rows keep the row as delivered; values of valid rows are read, not changed.
    assert rows["row_json"].str.len().gt(0).all()
    if kind in ("csv", "parquet"):
        unreadable = rows.loc[rows["rule"] == "keys.timestamp.readable"]
        assert set(unreadable["timestamp"]) >= {"not a time", "1793577600"}
        offset = valid.loc[valid["device_id"] == devices[22]]
        assert pd.Timestamp("2026-11-02 08:20", tz="UTC") in set(offset["timestamp"])  # row 100: 08:20 UTC
    assert "x'; DROP TABLE telemetry; --" in set(valid["device_id"])
    assert valid["cpu_util_pct"].dtype == np.float64 and valid["cpu_util_pct"].isna().sum() >= 1  # the dropout


# ----------------------------------------------------------------------------- whole deliveries


def test_a_metric_column_of_text_fails_the_schema_and_raw_keeps_it(tmp_path):
    frame = clean_delivery()
    frame["cpu"] = [f"{v:.1f}%" for v in pd.to_numeric(frame["cpu"])]
    result, store = materialize(tmp_path, deliver("csv", frame, tmp_path))
    assert not result.success
    message = failure_message(result, "validated_telemetry")
    assert "schema.type.cpu_util_pct" in message and "observed str" in message and "%" in message
    schema = checks(result)[FAMILY_CHECKS["schema"]]
    assert not schema.passed and schema.severity == dg.AssetCheckSeverity.ERROR
    raw = parquet_rows(tmp_path, "raw_telemetry")
    assert len(raw) == len(frame) and raw["cpu_util_pct"].str.endswith("%").all()  # stored as delivered
    assert parquet_rows(tmp_path, "validated_telemetry").empty


def test_a_csv_cut_off_mid_row_quarantines_the_partial_row(tmp_path):
    frame = clean_delivery()
    path = tmp_path / "delivery" / "fleet.csv"
    path.parent.mkdir()
    frame.to_csv(path, index=False)
    head, last = path.read_text().rstrip("\n").rsplit("\n", 1)
    fields = last.split(",")
    path.write_text(head + "\n" + ",".join(fields[:3]) + "," + fields[3][:2])  # cut off in its 4th field
    result, store = materialize(tmp_path, FileTelemetrySource(glob=str(path), mapping=MAPPING))
    assert result.success
    rows = quarantine(store)
    assert rows["rule"].tolist() == ["keys.row_well_formed"]
    reason = rows["reason"].item()
    assert f"has 4 field(s), the header {len(frame.columns)}" in reason and "fleet.csv line" in reason
    assert len(parquet_rows(tmp_path, "raw_telemetry")) == len(frame)
    assert len(parquet_rows(tmp_path, "validated_telemetry")) == len(frame) - 1


def test_a_missing_mapped_column_fails_raw_naming_it(tmp_path):
    frame = clean_delivery().drop(columns=["memory_used_pct"])
    result, _ = materialize(tmp_path, deliver("csv", frame, tmp_path))
    assert not result.success
    message = failure_message(result, "raw_telemetry")
    assert "memory_used_pct" in message and "fleet.csv" in message
    assert parquet_rows(tmp_path, "raw_telemetry").empty


@pytest.mark.parametrize("content", [b"asset_tag,ts,maker\n", b"\x89PNG\r\n\x1a\n\x00\x00garbage\xff\xfe"], ids=["header only", "corrupt"])
def test_empty_or_corrupt_files_fail_naming_the_problem(tmp_path, content):
    path = tmp_path / "fleet.csv"
    path.write_bytes(content)
    result, _ = materialize(tmp_path, FileTelemetrySource(glob=str(path), mapping=MAPPING))
    assert not result.success
    message = failure_message(result, "raw_telemetry")
    assert "fleet.csv" in message
    assert parquet_rows(tmp_path, "raw_telemetry").empty and parquet_rows(tmp_path, "validated_telemetry").empty


# ----------------------------------------------------------------------------- secrets


def local_instance(tmp_path: Path) -> dg.DagsterInstance:
    """A Dagster instance on disk (event log, compute logs), as a deployment has."""
    (tmp_path / "dagster").mkdir(exist_ok=True)
    return dg.DagsterInstance.local_temp(str(tmp_path / "dagster"))


def everything_recorded(instance: dg.DagsterInstance, root: Path, store: ResultsStore | None, captured: str) -> str:
    """Every text the platform wrote: output, every event of every run, compute logs, tables."""
    from dagster._serdes import serialize_value

    texts = [captured]
    for record in instance.get_runs():
        texts += [serialize_value(entry) for entry in instance.all_logs(record.run_id)]
    texts += [p.read_text(errors="replace") for p in root.rglob("*") if p.is_file() and p.suffix in (".out", ".err", ".log", ".txt")]
    if store is not None:
        with store.engine.connect() as connection:
            for table in sa.inspect(store.engine).get_table_names():
                texts.append(repr(connection.execute(sa.text(f'select * from "{table}"')).fetchall()))
    return "\n".join(texts)


def test_a_source_url_with_the_password_in_its_query_leaks_nowhere(tmp_path, postgres_databases, capfd):
    url = postgres_databases()
    frame, _ = faulty_delivery("postgres")
    deliver("postgres", frame, tmp_path, url)
    secret_url = f"{url}?password={SECRET}&connect_timeout=5"
    instance = local_instance(tmp_path)
    source = SqlTelemetrySource(url=secret_url, table="telemetry", mapping=MAPPING)
    assert SECRET not in source.describe()
    result, store = materialize(tmp_path, source, instance)
    assert result.success
    out = capfd.readouterr()
    recorded = everything_recorded(instance, tmp_path / "dagster", store, out.out + out.err)
    assert "password=***" in recorded  # the source is named, its secret masked
    assert SECRET not in recorded


@pytest.mark.parametrize("kind", ["sql user:password", "sql ?password=", "odbc PWD="])
def test_an_unreachable_source_fails_without_its_secret(tmp_path, kind, capfd):
    port = free_port()
    if kind.startswith("odbc"):
        driver = odbc_driver()
        require_service(driver is not None, "the psqlODBC driver is not installed (apt-get install odbc-postgresql)")
        source = OdbcTelemetrySource(
            connection_string=f"DRIVER={{{driver}}};SERVER=127.0.0.1;PORT={port};DATABASE=x;UID=u;PWD={SECRET};",
            table="telemetry",
            mapping=MAPPING,
            timeout_seconds=3,
        )
    elif "?" in kind:
        source = SqlTelemetrySource(url=f"postgresql+psycopg2://reader@127.0.0.1:{port}/fleet?password={SECRET}", table="t", mapping=MAPPING)
    else:
        source = SqlTelemetrySource(url=f"postgresql+psycopg2://reader:{SECRET}@127.0.0.1:{port}/fleet", table="t", mapping=MAPPING)
    instance = local_instance(tmp_path)
    result, store = materialize(tmp_path, source, instance)
    assert not result.success
    message = failure_message(result, "raw_telemetry")
    assert f"127.0.0.1:{port}" in message
    out = capfd.readouterr()
    assert SECRET not in everything_recorded(instance, tmp_path / "dagster", store, out.out + out.err + message)


def test_a_webhook_url_with_credentials_and_a_token_path_leaks_nowhere(tmp_path, monkeypatch, capfd):
    from anomaly_assets.resources import incident_store
    from anomaly_assets.resources.alert_router import AlertRouter
    from anomaly_assets_tests.incident_helpers import AlertingHarness, device_rows, scored, write_scored_partitions

    token = "T0KEN-B00-" + SECRET
    monkeypatch.setenv("FAULT_WEBHOOK_URL", f"http://hookuser:{SECRET}@127.0.0.1:{free_port()}/services/{token}")
    channels = '{"channels": [{"name": "ops", "type": "webhook", "url_env": "FAULT_WEBHOOK_URL", "retries": 1, "backoff_seconds": 0.01, "timeout_seconds": 2}]}'
    harness = AlertingHarness(tmp_path, AlertRouter(channels=channels))
    harness.instance = local_instance(tmp_path)
    write_scored_partitions(harness.parquet, scored(device_rows("dev-a", "Acme|A|1", "2026-11-08 08:00", "0011111000000000", severity=95)))
    result = harness.run(partition_key="2026-11-08")
    assert result.success  # a failing channel is recorded, and retried next run
    log = incident_store.read_log(harness.store, "ops")
    assert log["status"].tolist() == ["failed"]
    assert "http://127.0.0.1:" in log["detail"].item() and "/..." in log["detail"].item()
    out = capfd.readouterr()
    recorded = everything_recorded(harness.instance, tmp_path / "dagster", harness.store, out.out + out.err)
    assert SECRET not in recorded and token not in recorded and "hookuser" not in log["detail"].item()


def test_mlflow_down_fails_fast_and_honestly_without_its_credentials(tmp_path):
    from anomaly_assets.resources.model_registry import MlflowModelRegistry
    from anomaly_assets.resources.registry_client import RegistryError

    port = free_port()  # nothing listens: an outage
    uri = f"http://fleet:{SECRET}@127.0.0.1:{port}"
    registry = MlflowModelRegistry(tracking_uri=uri, request_timeout_seconds=5)
    with pytest.raises(RegistryError) as caught:  # never "no champion yet", which would let a version through
        registry.alias_version("champion")
    assert f"127.0.0.1:{port}" in str(caught.value) and SECRET not in str(caught.value)
    with pytest.raises(RegistryError):
        registry.champion_history()

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    env.update(
        ANOMALY_ASSETS_ENV="production",
        MLFLOW_TRACKING_URI=uri,
        ANOMALY_ASSETS_RESULTS_URL=f"sqlite:///{tmp_path}/results.db",
        ANOMALY_ASSETS_STORAGE_PATH=str(tmp_path / "storage"),
        ANOMALY_ASSETS_MLFLOW_TIMEOUT_SECONDS="5",
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "anomaly_assets.cli", "model", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - started
    assert done.returncode != 0
    assert elapsed < 2 * 5 + 20, f"model list took {elapsed:.0f} s against a server that is down"  # bounded; imports aside
    assert f"127.0.0.1:{port}" in done.stderr and "***" in done.stderr
    assert SECRET not in done.stdout + done.stderr


# ----------------------------------------------------------------------------- the kinds covered

KINDS = (
    *(f.name for f in ROW_FAULTS),
    "a metric column of text",
    "a CSV cut off mid-row",
    "a missing mapped column",
    "an empty file",
    "a corrupt file",
    "source URL password as a query parameter",
    "source URL password in the user part (unreachable)",
    "ODBC PWD= (unreachable)",
    "webhook URL with user:pass@ and a token path",
    "MLflow tracking URI with credentials, server down",
)

