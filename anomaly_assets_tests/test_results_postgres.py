"""Integration: the results database on the machine's real PostgreSQL, through the same store."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from anomaly_assets.resources import ResultsStore
from anomaly_assets.resources.results_store import anomaly_events, metadata


def _events(day: str, devices: list[str], version: str = "1") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "partition_date": day,
            "device_id": devices,
            "timestamp": pd.date_range(day, periods=len(devices), freq="5min", tz="UTC"),
            "cohort": "Zebra|TC52|13",
            "score": 0.71,
            "severity": 81.5,
            "top_feature_1": "cpu_util_pct__cohort_z",
            "top_feature_2": None,
            "top_feature_3": "memory_used_pct__dev_1h",
            "model_name": "fleet_anomaly_detector",
            "model_version": version,
        }
    )


def test_migrations_create_every_table_and_index_from_empty(postgres_database):
    store = ResultsStore(url=postgres_database)
    inspector = sa.inspect(store.engine)
    assert set(metadata.tables) <= set(inspector.get_table_names())
    assert "alembic_version" in inspector.get_table_names()
    indexes = {index["name"] for index in inspector.get_indexes("anomaly_events")}
    assert {"ix_anomaly_events_partition", "ix_anomaly_events_device"} <= indexes
    # a second store on the same database finds it migrated and changes nothing
    assert ResultsStore(url=postgres_database).count(anomaly_events) == 0


def test_bulk_load_is_idempotent_per_partition_and_keeps_hostile_ids_as_data(postgres_database):
    store = ResultsStore(url=postgres_database)
    hostile = ["x'; DROP TABLE anomaly_events; --", 'quote"d,comma', "ünïcødé-設備", "tab\there", "n" * 400]
    many = [f"dev-{i:06d}" for i in range(20_000)]
    store.replace_partitions(anomaly_events, ["2026-11-01"], _events("2026-11-01", many + hostile))
    store.replace_partitions(anomaly_events, ["2026-11-02"], _events("2026-11-02", hostile))
    assert store.count(anomaly_events, ["2026-11-01"]) == 20_005
    store.replace_partitions(anomaly_events, ["2026-11-01"], _events("2026-11-01", hostile, version="2"))
    assert store.count(anomaly_events, ["2026-11-01"]) == 5
    assert store.count(anomaly_events, ["2026-11-02"]) == 5
    back = store.read_frame(
        "SELECT device_id, top_feature_2, model_version, timestamp FROM anomaly_events "
        "WHERE partition_date = '2026-11-01' ORDER BY timestamp"
    )
    assert back["device_id"].tolist() == hostile
    assert back["top_feature_2"].isna().all() and set(back["model_version"]) == {"2"}
    assert str(back["timestamp"].iloc[0]) == "2026-11-01 00:00:00+00:00"


def test_a_failed_replace_leaves_the_previous_rows(postgres_database):
    store = ResultsStore(url=postgres_database)
    store.replace_partitions(anomaly_events, ["2026-11-01"], _events("2026-11-01", ["a", "b", "c"]))
    broken = _events("2026-11-01", ["d", "e"])
    broken.loc[1, "score"] = None  # NOT NULL violation during COPY, after the delete
    try:
        store.replace_partitions(anomaly_events, ["2026-11-01"], broken)
    except Exception as error:  # the driver's error type
        assert "score" in str(error) or "null" in str(error).lower()
    else:
        raise AssertionError("a NULL score was accepted")
    assert store.count(anomaly_events, ["2026-11-01"]) == 3
