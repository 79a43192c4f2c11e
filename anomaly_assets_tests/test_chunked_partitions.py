"""The partition path a chunk of devices at a time: the reader, the spool, and the whole graph
giving the same stored results in chunks of 7 devices as in one chunk."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from upath import UPath

from anomaly_assets.core.drift import CurrentDistribution, feature_drift, fit_drift_reference
from anomaly_assets.resources.parquet_io import DeviceChunks, PartitionSpool, group_by_device


def _telemetry(devices: list[str | None], day: str, rows_per_device: int = 3) -> pd.DataFrame:
    timestamps = pd.date_range(day, periods=rows_per_device, freq="5min", tz="UTC")
    return pd.DataFrame(
        {
            "device_id": pd.array([d for d in devices for _ in timestamps], dtype="str"),
            "timestamp": [t for _ in devices for t in timestamps],
            "value": np.arange(len(devices) * rows_per_device, dtype=float),
        }
    )


def _write(path, frame: pd.DataFrame) -> UPath:
    frame.to_parquet(path, index=False)
    return UPath(path)


def test_each_device_of_every_file_is_in_exactly_one_chunk(tmp_path):
    # The lookback day holds a device the day lacks (d00) and the day one the lookback lacks
    # (d11); the day's file is unsorted and has a row without a device id.
    lookback = _write(tmp_path / "a.parquet", group_by_device(_telemetry([f"d{i:02d}" for i in range(0, 10)], "2026-11-04")))
    day_frame = _telemetry([f"d{i:02d}" for i in (11, 3, 1, 2, 9, 4, 5, 6, 7, 8)], "2026-11-05")
    day_frame = pd.concat([day_frame, _telemetry([None], "2026-11-05", 1)], ignore_index=True)
    day = _write(tmp_path / "b.parquet", day_frame)
    chunks = list(DeviceChunks([lookback, day], devices_per_chunk=4))

    assert len(chunks) == 3  # 12 devices, 4 per chunk
    seen: dict[str, int] = {}
    for index, chunk in enumerate(chunks):
        for device in chunk["device_id"].dropna().unique():
            assert device not in seen, f"{device} is in chunks {seen[device]} and {index}"
            seen[device] = index
    assert sorted(seen) == sorted({f"d{i:02d}" for i in range(12)} - {"d10"})
    assert chunks[0]["device_id"].isna().sum() == 1  # the row without an id is kept, in the first chunk
    everything = pd.concat(chunks, ignore_index=True)
    expected = pd.concat([pd.read_parquet(lookback), pd.read_parquet(day)], ignore_index=True)
    assert len(everything) == len(expected) == sum(DeviceChunks([lookback, day]).rows_per_file())
    key = ["device_id", "timestamp"]
    pd.testing.assert_frame_equal(
        everything.sort_values(key, ignore_index=True), expected.sort_values(key, ignore_index=True)
    )
    # a device's rows of both days arrive together
    d03 = chunks[seen["d03"]]
    assert set(d03.loc[d03["device_id"] == "d03", "timestamp"].dt.day) == {4, 5}


def test_one_chunk_holds_everything_when_there_is_nothing_to_chunk_by(tmp_path):
    no_ids = _write(tmp_path / "x.parquet", pd.DataFrame({"value": [1.0, 2.0]}))
    assert [len(c) for c in DeviceChunks([no_ids], devices_per_chunk=1)] == [2]
    few = _write(tmp_path / "y.parquet", _telemetry(["a", "b"], "2026-11-05"))
    (only,) = list(DeviceChunks([few], devices_per_chunk=2))
    pd.testing.assert_frame_equal(only, pd.read_parquet(few))  # one chunk: the file as stored
    assert list(DeviceChunks([], devices_per_chunk=2)) == []
    with pytest.raises(ValueError, match="devices_per_chunk must be at least 1"):
        DeviceChunks([few], devices_per_chunk=0)


def test_group_by_device_keeps_each_devices_delivered_order():
    frame = pd.DataFrame({"device_id": pd.array(["b", "a", None, "b", "a"], dtype="str"), "n": [0, 1, 2, 3, 4]})
    grouped = group_by_device(frame)
    assert grouped["n"].tolist() == [2, 1, 4, 0, 3]
    already = frame.iloc[[1, 4, 0, 3]].reset_index(drop=True)
    assert group_by_device(already) is already


def test_spool_writes_one_file_per_partition_and_an_empty_one_for_a_day_without_rows():
    spool = PartitionSpool(["2026-11-05", "2026-11-06", "2026-11-07"])
    first = _telemetry(["a", "b"], "2026-11-05").assign(note=None)  # all null here, text later
    second = pd.concat([_telemetry(["c"], "2026-11-05"), _telemetry(["c"], "2026-11-06")], ignore_index=True)
    spool.append(first)
    spool.append(second.assign(note="x"))
    assert spool.rows == 12 and spool.rows_by_key == {"2026-11-05": 9, "2026-11-06": 3, "2026-11-07": 0}
    files = spool.files()
    day5 = pd.read_parquet(files["2026-11-05"])
    assert day5["device_id"].tolist() == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert day5["note"].isna().sum() == 6 and (day5["note"].iloc[6:] == "x").all()
    empty = pd.read_parquet(files["2026-11-07"])
    assert empty.empty and list(empty.columns) == list(day5.columns)
    assert spool.heads["2026-11-06"]["device_id"].tolist() == ["c"] * 3
    directory = os.path.dirname(files["2026-11-05"])
    spool.discard()
    assert not os.path.exists(directory)


def test_spool_keeps_text_that_follows_numbers_and_names_a_chunk_that_cannot_join():
    spool = PartitionSpool(["2026-11-05"])
    spool.append(_telemetry(["a"], "2026-11-05"))
    spool.append(_telemetry(["b"], "2026-11-05").assign(value="ERR"))  # a source's mixed column
    stored = spool.read()
    assert stored["value"].tolist() == ["0", "1", "2", "ERR", "ERR", "ERR"]  # as text (arrow writes 0.0 as "0")
    with pytest.raises(TypeError, match=r"rows 6\+ of the output .*differ from"):
        spool.append(_telemetry(["c"], "2026-11-05").assign(extra=1.0))
    spool.discard()


def test_drift_in_chunks_matches_the_whole_frame_and_samples_beyond_its_budget():
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"x": rng.normal(size=4000), "y": rng.exponential(size=4000)})
    current = pd.DataFrame({"x": rng.normal(0.5, 1, size=3000), "y": rng.exponential(2, size=3000)})
    current.loc[::50, "y"] = np.nan
    drift_reference = fit_drift_reference(reference, ["x", "y"])
    whole = feature_drift(drift_reference, current)

    chunked = CurrentDistribution(drift_reference)
    for part in np.array_split(np.arange(len(current)), 7):
        chunked.add(current.iloc[part])
    pd.testing.assert_frame_equal(chunked.drift(), whole)  # within the budget: every row, exact

    sampled = CurrentDistribution(drift_reference, keep_rows=1000)
    for part in np.array_split(np.arange(len(current)), 7):
        sampled.add(current.iloc[part])
    table = sampled.drift().set_index("feature")
    # PSI stays exact over every row; the median comes from a uniform 1,000-row sample
    pd.testing.assert_series_equal(table["psi"], whole.set_index("feature")["psi"])
    assert sampled.rows == 3000 and len(sampled._kept) == 1000
    assert abs(table.loc["x", "current_median"] - current["x"].median()) < 0.15
    with pytest.raises(KeyError, match="lacks drift-monitored features"):
        sampled.add(current[["x"]])


@pytest.fixture(scope="module")
def demo_in_chunks_and_whole(tmp_path_factory):
    """The demo's graph (30 devices, 7 training days, 2 scored days) in chunks of 7 devices and
    in one chunk."""
    from anomaly_assets.demo import run_demo
    from anomaly_assets.settings import Settings

    saved = dict(os.environ)
    homes = {}
    try:
        for name, devices_per_chunk in (("chunked", 7), ("whole", 10_000)):
            home = tmp_path_factory.mktemp(name) / "home"
            settings = Settings(home=home, fleet_devices=30, fleet_seed=11, devices_per_chunk=devices_per_chunk)
            run_demo(settings, days=9, progress=lambda _message: None)
            homes[name] = home
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return homes


@pytest.mark.parametrize("asset", ["raw_telemetry", "validated_telemetry", "device_features", "scored_anomalies"])
def test_every_partition_is_the_same_in_chunks_of_seven_devices(demo_in_chunks_and_whole, asset):
    key = ["device_id", "timestamp"]
    days = ["2026-11-01", "2026-11-07", "2026-11-09"] if asset != "scored_anomalies" else ["2026-11-08", "2026-11-09"]
    for day in days:
        chunked, whole = (
            pd.read_parquet(demo_in_chunks_and_whole[name] / "parquet" / asset / f"{day}.parquet") for name in ("chunked", "whole")
        )
        assert len(chunked) > 1000
        # Scores agree to 1e-9: the reconstruction's matrix product rounds by the BLAS block a
        # chunk's size gives, and training adds cohort stats up in chunks (about 1e-12).
        tolerance = {"check_exact": False, "rtol": 1e-9, "atol": 1e-9} if asset == "scored_anomalies" else {"check_exact": True}
        pd.testing.assert_frame_equal(
            chunked.sort_values(key, ignore_index=True), whole.sort_values(key, ignore_index=True), **tolerance
        )
    if asset != "raw_telemetry":  # written a chunk at a time: one row group per chunk of 7 devices
        stored = demo_in_chunks_and_whole["chunked"] / "parquet" / asset / f"{days[-1]}.parquet"
        import pyarrow.parquet as pq

        assert pq.ParquetFile(stored).num_row_groups == 5  # 30 devices


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("anomaly_events", "device_id, timestamp"),
        ("device_daily_summary", "partition_date, device_id"),
        ("quarantined_telemetry", "partition_date, device_id, timestamp, rule"),
        ("feature_drift", "partition_date, feature"),
    ],
)
def test_the_results_database_is_the_same_in_chunks_of_seven_devices(demo_in_chunks_and_whole, table, key):
    from anomaly_assets.resources.results_store import ResultsStore

    frames = {
        name: ResultsStore(url=f"sqlite:///{home / 'results.db'}").read_frame(f"SELECT * FROM {table} ORDER BY {key}")
        for name, home in demo_in_chunks_and_whole.items()
    }
    if table != "quarantined_telemetry":
        assert len(frames["whole"]) > 0
    ignored = [c for c in ("id", "written_at", "created_at", "run_id", "scored_at") if c in frames["whole"]]
    # Training adds the cohort stats up a chunk at a time: cohort z-scores agree to about 1e-12,
    # and a value lying on a drift bin's edge may then fall on its other side (PSI to 1e-5).
    tolerance = {"check_exact": False, "atol": 1e-5} if table == "feature_drift" else {}
    pd.testing.assert_frame_equal(frames["chunked"].drop(columns=ignored), frames["whole"].drop(columns=ignored), **tolerance)


def _validate_in_chunks(tmp_path, kind: str, devices_per_chunk: int):
    import dagster as dg

    from anomaly_assets.defs.ingestion.assets import raw_telemetry, validated_telemetry
    from anomaly_assets.defs.inventory.assets import device_inventory
    from anomaly_assets.resources import ChunkWorkers, PartitionedParquetIOManager, ResultsStore
    from anomaly_assets.resources.sources import InventorySource
    from anomaly_assets_tests.test_validation_assets import PARTITION, HandBuiltSource

    home = tmp_path / f"{kind}-{devices_per_chunk}"
    resources = {
        "telemetry_source": HandBuiltSource(kind=kind),
        "results_store": ResultsStore(url=f"sqlite:///{home}.db"),
        "io_manager": PartitionedParquetIOManager(base_path=str(home), devices_per_chunk=devices_per_chunk),
        "inventory_source": InventorySource(),
        "chunk_workers": ChunkWorkers(),
    }
    result = dg.materialize(
        [device_inventory, raw_telemetry, validated_telemetry], partition_key=PARTITION, resources=resources, raise_on_error=False
    )
    quarantined = resources["results_store"].read_frame(
        "select device_id, timestamp, rule, reason from quarantined_telemetry order by rule, timestamp"
    )
    return result, quarantined, home / "validated_telemetry" / f"{PARTITION}.parquet"


def test_validation_in_chunks_of_one_device_quarantines_the_same_rows(tmp_path):
    # A row without a device id, an out-of-range value, a stray timestamp, a counter going
    # backwards and an exact duplicate: each chunk holds one device's rows (the id-less row with
    # the first), and the checks add the chunks up.
    outcomes = {n: _validate_in_chunks(tmp_path, "few_bad_rows", n) for n in (1, 10_000)}
    (chunked, chunked_rows, chunked_file), (whole, whole_rows, whole_file) = outcomes[1], outcomes[10_000]
    assert chunked.success and whole.success
    assert len(whole_rows) == 5
    pd.testing.assert_frame_equal(chunked_rows, whole_rows)
    key = ["device_id", "timestamp"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(chunked_file).sort_values(key, ignore_index=True),
        pd.read_parquet(whole_file).sort_values(key, ignore_index=True),
    )
    import pyarrow.parquet as pq

    assert pq.ParquetFile(chunked_file).num_row_groups == 4  # 4 devices, one chunk each
    checks = {n: {c.check_name: (c.passed, c.metadata.get("unexpected_rows")) for c in r.get_asset_check_evaluations()} for n, (r, _, _) in outcomes.items()}
    assert checks[1] == checks[10_000]
    metadata = {n: r.asset_materializations_for_node("validated_telemetry")[0].metadata for n, (r, _, _) in outcomes.items()}
    for field in ("dagster/row_count", "raw_rows", "quarantined_rows", "bad_row_share", "quarantine_by_rule"):
        assert metadata[1][field] == metadata[10_000][field], field


def test_a_broken_schema_in_chunks_fails_the_run_and_writes_nothing(tmp_path):
    result, _, file = _validate_in_chunks(tmp_path, "missing_column", 1)
    assert not result.success and not file.exists()
    failure = result.failure_data_for_node("validated_telemetry")
    assert "memory_used_pct" in failure.user_failure_data.description


def test_raw_telemetry_streams_the_source_and_stores_each_part_grouped_by_device(tmp_path):
    import dagster as dg

    from anomaly_assets.core import generator
    from anomaly_assets.defs.ingestion.assets import raw_telemetry
    from anomaly_assets.resources import ChunkWorkers, PartitionedParquetIOManager, TelemetrySource

    day = generator.generate_day(generator.FleetConfig(n_devices=6, device_fault_rate=0.0), pd.Timestamp("2026-11-02").date())
    # time-major delivery in three parts; the last part's reboots column mixes numbers and text
    delivered = day.sort_values(["timestamp", "device_id"], ignore_index=True)
    parts = np.array_split(np.arange(len(delivered)), 3)

    class StreamingSource(TelemetrySource):
        def describe(self):
            return "streaming test source"

        def read_window(self, start, end):
            raise AssertionError("raw_telemetry must stream, not read the window at once")

        def read_window_chunks(self, start, end):
            for index, rows in enumerate(parts):
                part = delivered.iloc[rows].reset_index(drop=True)
                if index == 2:
                    part = part.astype({"reboots": object})
                    part.loc[0, "reboots"] = "ERR"
                yield part

    result = dg.materialize(
        [raw_telemetry],
        partition_key="2026-11-02",
        resources={
            "telemetry_source": StreamingSource(),
            "io_manager": PartitionedParquetIOManager(base_path=str(tmp_path)),
            "chunk_workers": ChunkWorkers(),
        },
    )
    stored = pd.read_parquet(tmp_path / "raw_telemetry" / "2026-11-02.parquet")
    assert len(stored) == len(day)
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "raw_telemetry" / "2026-11-02.parquet").num_row_groups == 3
    # each part grouped by device, rows of a device in delivered (time) order
    first = stored.iloc[: len(parts[0])]
    assert first["device_id"].is_monotonic_increasing
    assert first.groupby("device_id")["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()
    assert stored["reboots"].dtype == "str" and (stored["reboots"] == "ERR").sum() == 1
    metadata = result.asset_materializations_for_node("raw_telemetry")[0].metadata
    assert metadata["dagster/row_count"].value == len(day) and metadata["devices"].value == 6
    assert metadata["mixed_type_columns_stored_as_text"].value == ["reboots"]


def test_a_sql_table_source_streams_ordered_by_device(tmp_path):
    import sqlalchemy as sa

    from anomaly_assets.resources.sources import ColumnMapping, SqlTelemetrySource

    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    rows = _telemetry(["c", "a", "b"], "2026-11-05", rows_per_device=4).sort_values("timestamp")
    rows.assign(timestamp=rows["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")).to_sql("readings", sa.create_engine(url), index=False)
    source = SqlTelemetrySource(
        url=url, table="readings", mapping=ColumnMapping(metrics={"value": "value"}), chunk_rows=5, naive_utc_parameters=True
    )
    start = pd.Timestamp("2026-11-05", tz="UTC")
    parts = list(source.read_window_chunks(start, start + pd.Timedelta(days=1)))
    assert [len(p) for p in parts] == [5, 5, 2]
    assert pd.concat(parts)["device_id"].tolist() == ["a"] * 4 + ["b"] * 4 + ["c"] * 4


def test_the_chunk_size_comes_from_the_environment(tmp_path):
    from anomaly_assets.resources.environment import build_resources
    from anomaly_assets.settings import Settings

    settings = Settings.from_env({"ANOMALY_ASSETS_HOME": str(tmp_path), "ANOMALY_ASSETS_DEVICES_PER_CHUNK": "250"})
    assert settings.devices_per_chunk == 250
    assert build_resources(settings)["io_manager"].devices_per_chunk == 250
    assert Settings.from_env({"ANOMALY_ASSETS_HOME": str(tmp_path)}).devices_per_chunk == 1_000
    with pytest.raises(ValueError, match="ANOMALY_ASSETS_DEVICES_PER_CHUNK must be at least 1, got 0"):
        Settings.from_env({"ANOMALY_ASSETS_DEVICES_PER_CHUNK": "0"})


def test_replacing_a_partition_from_batches_is_all_or_nothing(tmp_path):
    from anomaly_assets.resources.results_store import ResultsStore, device_daily_summary

    store = ResultsStore(url=f"sqlite:///{tmp_path / 'results.db'}")

    def summary(devices, day="2026-11-05"):
        return pd.DataFrame(
            {
                "partition_date": day,
                "device_id": devices,
                "cohort": "c",
                "samples": 288,
                "anomalies": 1,
                "max_severity": 60.0,
                "mean_score": 0.4,
                "model_name": "m",
                "model_version": "1",
                "top_feature": "x",
            }
        )

    assert store.replace_partitions(device_daily_summary, ["2026-11-05"], iter([summary(["a", "b"]), summary(["c"])])) == 3

    def broken():
        yield summary(["d"])
        yield summary(["e"], day="2026-11-06")  # outside the partition being replaced

    with pytest.raises(ValueError, match=r"rows for partitions \['2026-11-06'\] outside"):
        store.replace_partitions(device_daily_summary, ["2026-11-05"], broken())
    kept = store.read_frame("select device_id from device_daily_summary order by device_id")
    assert kept["device_id"].tolist() == ["a", "b", "c"]  # the failed replacement left no trace
