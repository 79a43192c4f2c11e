"""Real telemetry sources against real servers: PostgreSQL through SQLAlchemy and through pyodbc
(psqlODBC), SQLite, CSV and parquet files; injection-shaped inputs; credential redaction;
device inventory enrichment and its skip-with-warning path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from anomaly_assets.core.inventory import join_inventory
from anomaly_assets.core.timestamps import parse_utc
from anomaly_assets.core.validation import validate_telemetry
from anomaly_assets.defs.inventory.assets import read_inventory
from anomaly_assets.redaction import redact
from anomaly_assets.resources.sources import (
    LABEL_COLUMN,
    ColumnMapping,
    FileTelemetrySource,
    InventorySource,
    OdbcTelemetrySource,
    SqlTelemetrySource,
    TelemetrySourceError,
)
from anomaly_assets_tests.conftest import require_service

EVIL = "x'; DROP TABLE t; --"
DAY = pd.Timestamp("2026-11-02", tz="UTC")
START, END = DAY, DAY + pd.Timedelta(days=1)
SECRET = "s3cr3t-Pw0rd"
MAPPING = ColumnMapping(
    device_id="dev",
    timestamp="ts",
    cohorts={"manufacturer": "maker"},
    metrics={"cpu_util_pct": "cpu", "memory_used_pct": "mem"},
    label="lbl",
    rules={"metrics": {"cpu_util_pct": {"min": 0, "max": 100}}},
)


def source_rows() -> pd.DataFrame:
    """3 devices (one with an injection-shaped id), hourly, over 3 days (the middle one is read)."""
    times = pd.date_range(DAY - pd.Timedelta(days=1), periods=72, freq="h", tz="UTC")
    rows = []
    for i, dev in enumerate(["dev-1", "dev-2", EVIL]):
        rows.append(
            pd.DataFrame(
                {
                    "dev": dev,
                    "ts": times,
                    "maker": ["Zebra", "Honeywell", "O'Brien; --"][i],
                    "cpu": np.linspace(10, 60, 72) + i,
                    "mem": 40.0 + i,
                    "lbl": (np.arange(72) % 17 == 0).astype(int),
                    "extra": "ignored",
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def expected_day() -> pd.DataFrame:
    rows = source_rows()
    return rows.loc[(rows["ts"] >= START) & (rows["ts"] < END)]


def check_frame(frame: pd.DataFrame, source) -> None:
    assert len(frame) == len(expected_day()) == 72
    assert set(frame["device_id"]) == {"dev-1", "dev-2", EVIL}
    columns = ["device_id", "timestamp", "manufacturer", "cpu_util_pct", "memory_used_pct", LABEL_COLUMN]
    assert list(frame.columns) == columns + (["source_error"] if isinstance(source, FileTelemetrySource) else [])
    stamps = parse_utc(frame["timestamp"])  # as delivered: a datetime column, or text (SQLite)
    assert stamps.notna().all()
    assert stamps.min() == START and stamps.max() == END - pd.Timedelta(hours=1)
    assert frame[LABEL_COLUMN].dtype == bool and frame[LABEL_COLUMN].any()
    evil = frame.loc[frame["device_id"] == EVIL]
    assert len(evil) == 24 and set(evil["manufacturer"]) == {"O'Brien; --"}
    # The same contract as the synthetic source: validation accepts every row.
    contract = source.contract()
    assert contract.metrics == ("cpu_util_pct", "memory_used_pct") and contract.cohort_columns == ("manufacturer",)
    assert source.label_columns() == (LABEL_COLUMN,)
    result = validate_telemetry(frame, contract, START, END)
    assert len(result.valid) == 72 and result.quarantined.empty


# ----------------------------------------------------------------------------- SQLite


def test_sqlite_table_and_query(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'telemetry.db'}"
    engine = sa.create_engine(url)
    rows = source_rows()
    rows.assign(ts=rows["ts"].dt.tz_localize(None)).to_sql("telemetry", engine, index=False)
    source = SqlTelemetrySource(url=url, table="telemetry", mapping=MAPPING, naive_utc_parameters=True, chunk_rows=10)
    check_frame(source.read_window(START, END), source)
    query = SqlTelemetrySource(
        url=url,
        query="SELECT dev, ts, maker, cpu, mem, lbl FROM telemetry WHERE ts >= :start AND ts < :end",
        mapping=MAPPING,
        naive_utc_parameters=True,
    )
    check_frame(query.read_window(START, END), query)
    # An injection-shaped table name is one quoted identifier: it fails to resolve, drops nothing.
    evil = SqlTelemetrySource(url=url, table='telemetry"; DROP TABLE telemetry; --', mapping=MAPPING)
    with pytest.raises(TelemetrySourceError, match="no such table"):
        evil.read_window(START, END)
    assert sa.inspect(engine).has_table("telemetry")
    engine.dispose()


def test_query_without_bound_window_is_refused(tmp_path: Path):
    source = SqlTelemetrySource(url=f"sqlite:///{tmp_path / 'x.db'}", query="SELECT * FROM t", mapping=MAPPING)
    with pytest.raises(ValueError, match=":start and :end"):
        source.read_window(START, END)


# ----------------------------------------------------------------------------- PostgreSQL


def test_postgres_through_sqlalchemy(postgres_database: str):
    engine = sa.create_engine(postgres_database)
    source_rows().to_sql("telemetry", engine, index=False)
    engine.dispose()
    source = SqlTelemetrySource(url=postgres_database, table="public.telemetry", mapping=MAPPING, chunk_rows=7)
    check_frame(source.read_window(START, END), source)
    with sa.create_engine(postgres_database).connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM telemetry")).scalar() == 216


def odbc_driver() -> str | None:
    try:
        import pyodbc
    except ImportError:
        return None
    return next((d for d in pyodbc.drivers() if d.startswith("PostgreSQL Unicode")), None)


def test_postgres_through_odbc(postgres_database: str):
    driver = odbc_driver()
    require_service(driver is not None, "pyodbc with the psqlODBC driver is not installed (apt-get install unixodbc odbc-postgresql)")
    engine = sa.create_engine(postgres_database)
    rows = source_rows()
    rows.assign(ts=rows["ts"].dt.tz_localize(None)).to_sql("telemetry", engine, index=False)  # timestamp (UTC)
    engine.dispose()
    url = sa.engine.make_url(postgres_database)
    connection_string = (
        f"DRIVER={{{driver}}};SERVER={url.host};PORT={url.port or 5432};DATABASE={url.database};UID={url.username};PWD={SECRET};"
    )
    source = OdbcTelemetrySource(connection_string=connection_string, table="telemetry", mapping=MAPPING, chunk_rows=5)
    assert SECRET not in source.describe()
    check_frame(source.read_window(START, END), source)
    query = OdbcTelemetrySource(
        connection_string=connection_string,
        query='SELECT dev, ts, maker, cpu, mem, lbl FROM telemetry WHERE ts >= ? AND ts < ?',
        mapping=MAPPING,
    )
    check_frame(query.read_window(START, END), query)
    evil = OdbcTelemetrySource(connection_string=connection_string, table='telemetry"; DROP TABLE telemetry; --', mapping=MAPPING)
    with pytest.raises(TelemetrySourceError) as caught:
        evil.read_window(START, END)
    assert SECRET not in str(caught.value)
    with sa.create_engine(postgres_database).connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM telemetry")).scalar() == 216


# ----------------------------------------------------------------------------- credentials


def test_unreachable_sql_source_names_host_not_password():
    url = f"postgresql+psycopg2://fleet_reader:{SECRET}@127.0.0.1:1/telemetry"
    source = SqlTelemetrySource(url=url, table="telemetry", mapping=MAPPING)
    with pytest.raises(TelemetrySourceError) as caught:
        source.read_window(START, END)
    message = str(caught.value)
    assert "127.0.0.1:1" in message and "'telemetry'" in message
    assert SECRET not in message and SECRET not in source.describe()
    assert SECRET not in redact(url) and "***" in redact(url)


def test_unreachable_odbc_source_names_host_not_password():
    assert redact(f"DRIVER={{x}};SERVER=h;PWD={SECRET};UID=u") == "DRIVER={x};SERVER=h;PWD=***;UID=u"
    assert SECRET not in redact(f"Server=h;Password={{{SECRET};x}}}};Uid=u")
    driver = odbc_driver()
    require_service(driver is not None, "pyodbc with the psqlODBC driver is not installed")
    source = OdbcTelemetrySource(
        connection_string=f"DRIVER={{{driver}}};SERVER=127.0.0.1;PORT=1;DATABASE=x;UID=u;PWD={SECRET};",
        table="telemetry",
        mapping=MAPPING,
        timeout_seconds=3,
    )
    with pytest.raises(TelemetrySourceError) as caught:
        source.read_window(START, END)
    assert "127.0.0.1:1" in str(caught.value) and SECRET not in str(caught.value)


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_files_by_glob(tmp_path: Path, fmt: str):
    rows = source_rows()
    for day, part in rows.groupby(rows["ts"].dt.strftime("%Y-%m-%d")):
        path = tmp_path / f"telemetry-{day}.{fmt}"
        part.to_csv(path, index=False) if fmt == "csv" else part.to_parquet(path, index=False)
    source = FileTelemetrySource(glob=str(tmp_path / f"telemetry-*.{fmt}"), mapping=MAPPING, chunk_rows=20)
    check_frame(source.read_window(START, END), source)
    with pytest.raises(TelemetrySourceError, match="no file matches"):
        FileTelemetrySource(glob=str(tmp_path / "nothing-*.csv"), mapping=MAPPING).read_window(START, END)


def test_parquet_row_groups_outside_the_window_are_skipped_but_unplaceable_rows_are_still_read(tmp_path: Path):
    """One parquet file holding three days, a row group per 12 hours: a day's window reads only
    its own groups, plus any group with a missing or implausible timestamp (rows no window can
    place, which every window takes for validation to quarantine). The rows are what reading the
    whole file and selecting the window gives."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from anomaly_assets.resources.sources import row_groups_for_window

    rows = source_rows().sort_values("ts", kind="stable").reset_index(drop=True)
    rows["ts"] = rows["ts"].astype("datetime64[us, UTC]")
    rows.loc[5, "ts"] = pd.NaT  # in the first day's first group
    rows.loc[200, "ts"] = pd.Timestamp("1900-01-01", tz="UTC")  # in the last day's second group
    path = tmp_path / "telemetry-all.parquet"
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path, row_group_size=36)  # 12 hours x 3 devices
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups == 6
    assert row_groups_for_window(parquet, "ts", START, END) == [0, 2, 3, 5]  # its day, the NaT's, the 1900's
    assert row_groups_for_window(parquet, "dev", START, END) == list(range(6))  # not a timestamp: every group

    source = FileTelemetrySource(glob=str(path), mapping=MAPPING, chunk_rows=20)
    whole = MAPPING.apply(rows.assign(source_error=None))
    stamps = whole["timestamp"]
    claimed = stamps.isna() | (stamps < pd.Timestamp("2000-01-01", tz="UTC")) | ((stamps >= START) & (stamps < END))
    expected = whole.loc[claimed.to_numpy()].reset_index(drop=True)
    got = source.read_window(START, END)
    assert len(got) == 24 * 3 + 2
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_dtype=False)


# ----------------------------------------------------------------------------- inventory


def test_inventory_join_and_skip_paths(tmp_path: Path):
    telemetry = source_rows().rename(columns={"dev": "device_id", "ts": "timestamp"})
    inventory = pd.DataFrame({"asset_tag": ["dev-1", EVIL, "dev-1"], "hw_model": ["TC52", "CT40", "TC57"], "site": ["A", "B", "C"]})
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    engine = sa.create_engine(url)
    inventory.to_sql("devices", engine, index=False)
    engine.dispose()
    source = InventorySource(url=url, table="devices", device_id="asset_tag", columns={"model": "hw_model"})
    frame, metadata = read_inventory(source)
    assert metadata["enriched"] and list(frame.columns) == ["device_id", "model"]
    joined, report = join_inventory(telemetry, frame, ["model"])
    assert len(joined) == len(telemetry)  # never duplicates rows
    assert set(joined.loc[joined["device_id"] == "dev-1", "model"]) == {"TC57"}  # last inventory row wins
    assert set(joined.loc[joined["device_id"] == EVIL, "model"]) == {"CT40"}
    assert set(joined.loc[joined["device_id"] == "dev-2", "model"]) == {"unknown"}
    assert report["devices_missing_from_inventory"] == 1

    # Not configured: skipped with a warning; the telemetry is unchanged.
    empty, metadata = read_inventory(InventorySource())
    assert not metadata["enriched"] and "not configured" in metadata["warning"] and empty.empty
    unchanged, report = join_inventory(telemetry, None)
    assert unchanged is telemetry and report == {"inventory_joined": False}

    # Unreachable: skipped with a redacted warning.
    down = InventorySource(url=f"postgresql+psycopg2://fleet:{SECRET}@127.0.0.1:1/fleet")
    empty, metadata = read_inventory(down)
    assert not metadata["enriched"] and "unreachable" in metadata["warning"]
    assert "127.0.0.1" in metadata["warning"] and SECRET not in metadata["warning"]


def test_a_delivered_attribute_survives_validation_and_the_inventory_fills_the_rest():
    from anomaly_assets.core.contract import load_contract
    from anomaly_assets.core.inventory import contract_knowing
    from anomaly_assets.core import generator

    day = generator.generate_day(generator.FleetConfig(n_devices=3, device_fault_rate=0.0), pd.Timestamp("2026-11-02").date())
    day["site"] = np.where(day["device_id"] == "dev-000001", "Bergen", None)
    contract = contract_knowing(load_contract(), ["site", "model"])
    assert contract.optional_columns[-1] == "site" and contract.cohort_columns == load_contract().cohort_columns
    result = validate_telemetry(day, contract, pd.Timestamp("2026-11-02", tz="UTC"), pd.Timestamp("2026-11-03", tz="UTC"))
    assert "site" in result.valid and not result.unknown_columns and len(result.quarantined) == 0
    inventory = pd.DataFrame({"device_id": ["dev-000000", "dev-000001"], "site": ["Lyon", "Oslo"]})
    joined, _ = join_inventory(result.valid, inventory, ["site"])
    assert joined.groupby("device_id")["site"].first().to_dict() == {"dev-000000": "Lyon", "dev-000001": "Bergen", "dev-000002": "unknown"}


def test_build_resources_selects_sql_source_from_env(tmp_path: Path, monkeypatch):
    from anomaly_assets.resources import build_resources
    from anomaly_assets.settings import Settings

    monkeypatch.setenv("ANOMALY_ASSETS_SOURCE_URL", f"sqlite:///{tmp_path / 'telemetry.db'}")
    monkeypatch.delenv("ANOMALY_ASSETS_INVENTORY_URL", raising=False)
    settings = Settings.from_env(
        {
            "ANOMALY_ASSETS_HOME": str(tmp_path),
            "ANOMALY_ASSETS_SOURCE": "sql",
            "ANOMALY_ASSETS_SOURCE_TABLE": "telemetry",
            "ANOMALY_ASSETS_SOURCE_MAPPING": '{"device_id": "dev", "timestamp": "ts", "metrics": {"cpu": "cpu"}}',
        }
    )
    resources = build_resources(settings)
    source = resources["telemetry_source"]
    assert isinstance(source, SqlTelemetrySource) and source.contract().metrics == ("cpu",)
    assert not resources["inventory_source"].configured()
    with pytest.raises(ValueError, match="ANOMALY_ASSETS_SOURCE must be one of"):
        Settings.from_env({"ANOMALY_ASSETS_SOURCE": "oracle"})


def test_device_inventory_asset_skips_with_warning_when_not_configured(tmp_path: Path):
    import dagster as dg

    from anomaly_assets.defs.inventory.assets import device_inventory

    result = dg.materialize(
        [device_inventory],
        resources={"inventory_source": InventorySource(), "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path))},
    )
    assert result.success
    metadata = result.asset_materializations_for_node("device_inventory")[0].metadata
    assert "not configured" in metadata["warning"].value and metadata["dagster/row_count"].value == 0


def test_inventory_attributes_reach_the_features_as_cohort_columns(tmp_path: Path):
    """device_inventory is upstream of validated_telemetry, which joins its named attributes onto
    the valid rows: raw_telemetry stays as delivered, validation counts and quarantines as before,
    and the features (and their cohorts) carry the attributes."""
    import dagster as dg

    from anomaly_assets.core.cohorts import cohort_keys
    from anomaly_assets.defs.features.assets import device_features, feature_spec
    from anomaly_assets.defs.ingestion.assets import raw_telemetry, validated_telemetry
    from anomaly_assets.defs.inventory.assets import device_inventory
    from anomaly_assets.resources import ChunkWorkers, PartitionedParquetIOManager, ResultsStore, SyntheticFleetSource

    url = f"sqlite:///{tmp_path}/inventory.db"
    engine = sa.create_engine(url)
    pd.DataFrame(
        {"device_id": ["dev-000000", "dev-000001"], "site_code": ["Lyon", "Oslo"], "fw": ["4.2.1", "4.3.0"], "serial": ["S1", "S2"]}
    ).to_sql("devices", engine, index=False)
    engine.dispose()
    resources = {
        "telemetry_source": SyntheticFleetSource(n_devices=3),
        "io_manager": PartitionedParquetIOManager(base_path=str(tmp_path / "parquet")),
        "results_store": ResultsStore(url=f"sqlite:///{tmp_path}/results.db"),
        "inventory_source": InventorySource(url=url, columns={"site": "site_code", "firmware": "fw"}),
        "chunk_workers": ChunkWorkers(),
    }
    chain = [device_inventory, raw_telemetry, validated_telemetry, device_features]
    result = dg.materialize(chain, partition_key="2026-11-02", resources=resources)
    stored = lambda asset: pd.read_parquet(tmp_path / "parquet" / asset / "2026-11-02.parquet")  # noqa: E731
    raw, valid, features = stored("raw_telemetry"), stored("validated_telemetry"), stored("device_features")
    assert "site" not in raw and "firmware" not in raw  # raw_telemetry: as delivered
    assert len(valid) == len(raw)  # nothing quarantined, nothing added or lost by the join
    for frame in (valid, features):
        attributes = frame.groupby("device_id")[["site", "firmware"]].first().to_dict("index")
        assert attributes == {
            "dev-000000": {"site": "Lyon", "firmware": "4.2.1"},
            "dev-000001": {"site": "Oslo", "firmware": "4.3.0"},
            "dev-000002": {"site": "unknown", "firmware": "unknown"},
        }
        assert "serial" not in frame  # only the named attributes
    spec = feature_spec(resources["telemetry_source"], resources["inventory_source"])
    assert spec.cohort_columns == ("manufacturer", "model", "os_version", "site", "firmware")
    first = features.loc[features["device_id"] == "dev-000000"].head(1)
    assert cohort_keys(first, spec.cohort_columns).item().endswith("|Lyon|4.2.1")
    metadata = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert metadata["validated_telemetry"]["inventory"].value == {
        "joined": True, "cohort_attributes": ["site", "firmware"], "inventory_devices": 2, "devices_not_in_inventory": 1
    }
    assert metadata["device_features"]["feature_spec_hash"].value == spec.hash
    assert all(c.passed for c in result.get_asset_check_evaluations())

    # Unreachable inventory: it materializes empty with a warning, and the day is still validated
    # and featurized, with the attributes unknown.
    resources["inventory_source"] = InventorySource(url=f"sqlite:///{tmp_path}/missing/nowhere.db", columns={"site": "site"})
    result = dg.materialize(chain[:3], partition_key="2026-11-03", resources=resources)
    inventory = result.asset_materializations_for_node("device_inventory")[0].metadata
    assert inventory["enriched"].value is False and "unreachable" in inventory["warning"].value
    assert set(pd.read_parquet(tmp_path / "parquet" / "validated_telemetry" / "2026-11-03.parquet")["site"]) == {"unknown"}

    # Named attributes are required: a fleet table's every column would otherwise become a cohort.
    with pytest.raises(ValueError, match="ANOMALY_ASSETS_INVENTORY_COLUMNS"):
        InventorySource(url=url).cohort_attributes()


