"""Parquet IO manager and results store: partition files, atomic writes, idempotent replaces."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from anomaly_assets.resources import PartitionedParquetIOManager, ResultsStore
from anomaly_assets.resources.results_store import anomaly_events

DAILY = dg.DailyPartitionsDefinition(start_date="2026-11-01")


def _frame(days: list[str]) -> pd.DataFrame:
    stamps = pd.to_datetime([f"{d} 12:00" for d in days]).tz_localize("UTC")
    return pd.DataFrame({"device_id": [f"d{i}" for i in range(len(days))], "timestamp": stamps, "value": range(len(days))})


def test_range_output_is_split_into_one_file_per_partition(tmp_path):
    @dg.asset(partitions_def=DAILY, backfill_policy=dg.BackfillPolicy.single_run())
    def thing() -> pd.DataFrame:
        return _frame(["2026-11-01", "2026-11-01", "2026-11-03"])

    result = dg.materialize(
        [thing],
        resources={"io_manager": PartitionedParquetIOManager(base_path=str(tmp_path))},
        tags={"dagster/asset_partition_range_start": "2026-11-01", "dagster/asset_partition_range_end": "2026-11-03"},
    )
    assert result.success
    assert len(pd.read_parquet(tmp_path / "thing" / "2026-11-01.parquet")) == 2
    assert len(pd.read_parquet(tmp_path / "thing" / "2026-11-02.parquet")) == 0  # the day exists, empty
    assert len(pd.read_parquet(tmp_path / "thing" / "2026-11-03.parquet")) == 1
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_failed_write_leaves_the_previous_partition_intact(tmp_path, monkeypatch):
    manager = PartitionedParquetIOManager(base_path=str(tmp_path))
    context = dg.build_output_context(asset_key=dg.AssetKey("thing"), partition_key="2026-11-01", asset_partitions_def=DAILY)
    manager.handle_output(context, _frame(["2026-11-01"]))

    def broken_write(self, path, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken_write)
    with pytest.raises(OSError, match="disk full"):
        manager.handle_output(context, _frame(["2026-11-01", "2026-11-01"]))
    monkeypatch.undo()
    assert len(pd.read_parquet(tmp_path / "thing" / "2026-11-01.parquet")) == 1
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_missing_required_partition_names_the_asset_and_partition(tmp_path):
    manager = PartitionedParquetIOManager(base_path=str(tmp_path))
    context = dg.build_input_context(asset_key=dg.AssetKey("thing"), partition_key="2026-11-05", asset_partitions_def=DAILY)
    with pytest.raises(FileNotFoundError, match="partition 2026-11-05 of thing"):
        manager.load_input(context)


def _events(day: str, n: int, version: str = "1") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "partition_date": day,
            "device_id": [f"dev-{i}" for i in range(n)],
            "timestamp": pd.Timestamp(day, tz="UTC"),
            "cohort": "A|B|1",
            "score": 0.7,
            "severity": 80.0,
            "top_feature_1": "cpu_util_pct__cohort_z",
            "top_feature_2": None,
            "top_feature_3": None,
            "model_name": "m",
            "model_version": version,
        }
    )


def test_replace_partitions_replaces_and_never_duplicates(tmp_path):
    store = ResultsStore(url=f"sqlite:///{tmp_path}/results.db")
    store.replace_partitions(anomaly_events, ["2026-11-01"], _events("2026-11-01", 5))
    store.replace_partitions(anomaly_events, ["2026-11-02"], _events("2026-11-02", 3))
    store.replace_partitions(anomaly_events, ["2026-11-01"], _events("2026-11-01", 4, version="2"))
    assert store.count(anomaly_events, ["2026-11-01"]) == 4
    assert store.count(anomaly_events, ["2026-11-02"]) == 3
    versions = store.read_frame("SELECT DISTINCT model_version FROM anomaly_events WHERE partition_date='2026-11-01'")
    assert versions["model_version"].tolist() == ["2"]


def test_failed_replace_rolls_back_to_the_previous_rows(tmp_path):
    store = ResultsStore(url=f"sqlite:///{tmp_path}/results.db")
    store.replace_partitions(anomaly_events, ["2026-11-01"], _events("2026-11-01", 5))
    broken = _events("2026-11-01", 3)
    broken.loc[2, "score"] = None  # violates NOT NULL after the delete has run
    with pytest.raises(Exception):
        store.replace_partitions(anomaly_events, ["2026-11-01"], broken)
    assert store.count(anomaly_events, ["2026-11-01"]) == 5


def test_rows_outside_the_replaced_partitions_are_refused(tmp_path):
    store = ResultsStore(url=f"sqlite:///{tmp_path}/results.db")
    with pytest.raises(ValueError, match="outside the partitions"):
        store.replace_partitions(anomaly_events, ["2026-11-01"], _events("2026-11-02", 1))


def test_fsspec_url_works_as_shared_storage():
    """An object-store URL (fsspec's in-memory store here) works like a local path."""
    manager = PartitionedParquetIOManager(base_path="memory://anomaly-assets-test/store")
    output = dg.build_output_context(asset_key=dg.AssetKey("thing"), partition_key="2026-11-02", asset_partitions_def=DAILY)
    manager.handle_output(output, _frame(["2026-11-02", "2026-11-02"]))
    loaded = manager.load_input(
        dg.build_input_context(asset_key=dg.AssetKey("thing"), partition_key="2026-11-02", asset_partitions_def=DAILY)
    )
    pd.testing.assert_frame_equal(loaded, _frame(["2026-11-02", "2026-11-02"]))


def test_migrations_match_the_table_definitions(tmp_path):
    """A table or column added to results_store.metadata without a migration fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from anomaly_assets.resources.results_store import metadata

    store = ResultsStore(url=f"sqlite:///{tmp_path}/results.db")
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []
    assert store.read_frame("SELECT version_num FROM alembic_version")["version_num"].tolist() == ["0003"]


def test_bulk_insert_stores_what_sqlalchemy_core_stores(tmp_path):
    """The driver-level executemany keeps SQLAlchemy's own storage (datetimes, NULLs, floats)."""
    import sqlalchemy as sa

    stamps = pd.to_datetime(["2026-11-01 00:05:00", "2026-11-01 13:00:00.123456"], format="ISO8601").tz_localize("UTC")
    frame = pd.DataFrame(
        {
            "partition_date": ["2026-11-01"] * 2,
            "device_id": ["dev-1", "dev-2"],
            "timestamp": stamps,
            "cohort": ["acme/x1", None],
            "score": [0.51, 0.625],
            "severity": [12.5, 99.0],
            "top_feature_1": ["cpu_util_pct__cohort_z", None],
            "top_feature_2": [None, None],
            "top_feature_3": ["a", "b"],
            "model_name": ["fleet", "fleet"],
            "model_version": ["3", "3"],
        }
    )
    fast, core = (ResultsStore(url=f"sqlite:///{tmp_path / name}.db") for name in ("fast", "core"))
    with fast.engine.begin() as connection:
        ResultsStore.insert(connection, anomaly_events, frame)
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    with core.engine.begin() as connection:
        connection.execute(anomaly_events.insert(), records)
    raw = "SELECT * FROM anomaly_events ORDER BY device_id"
    with fast.engine.connect() as a, core.engine.connect() as b:
        stored = a.exec_driver_sql(raw).fetchall()
        assert stored == b.exec_driver_sql(raw).fetchall()
        assert stored[0][2] == "2026-11-01 00:05:00.000000" and stored[1][3] is None
        typed = a.execute(sa.select(anomaly_events.c.timestamp).order_by(anomaly_events.c.device_id)).scalars().all()
    assert [t.replace(tzinfo=None) for t in typed] == [s.replace(tzinfo=None).to_pydatetime() for s in stamps]


def test_migrations_run_once_per_process_and_engines_close_after_a_step(tmp_path, monkeypatch):
    from anomaly_assets.resources import results_store

    upgrades: list[str] = []
    original = results_store.upgrade_schema
    monkeypatch.setattr(results_store, "upgrade_schema", lambda engine: (upgrades.append(str(engine.url)), original(engine)))
    url = f"sqlite:///{tmp_path / 'results.db'}"

    @dg.asset
    def counted(results_store: ResultsStore) -> None:
        results_store.count(anomaly_events)

    for _ in range(3):  # three steps, each with its own resource and engine
        assert dg.materialize([counted], resources={"results_store": ResultsStore(url=url)}).success
    assert upgrades == [url]
    store = ResultsStore(url=url)
    assert store.count(anomaly_events) == 0 and upgrades == [url]
    store.teardown_after_execution(None)
    assert store._engine is None
