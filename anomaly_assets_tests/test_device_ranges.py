"""device_range_scoring_job in one process: a day cut into ranges of whole chunks, and the scored
partition, its results-database rows and its materialization the same as the scored_anomalies
asset's for that day."""

from __future__ import annotations

import os
import shutil

import dagster as dg
import pandas as pd
import pytest
from upath import UPath

from anomaly_assets.resources.parquet_io import DeviceChunks, group_by_device
from anomaly_assets_tests.test_chunked_partitions import _telemetry

DAY = "2026-11-09"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
TABLES = {"anomaly_events": "device_id, timestamp", "device_daily_summary": "device_id"}
# Written by each run itself, so they differ between any two runs.
RUN_COLUMNS = ("id", "written_at", "created_at", "run_id", "scored_at")


def test_ranges_are_whole_chunks_holding_every_device_once(tmp_path):
    devices = [f"d{i:02d}" for i in (11, 3, 1, 2, 9, 4, 5, 6, 7, 8, 0, 10)]
    frame = pd.concat([_telemetry(devices, "2026-11-05"), _telemetry([None], "2026-11-05", 1)], ignore_index=True)
    path = tmp_path / "features.parquet"
    group_by_device(frame).to_parquet(path, index=False)
    whole = DeviceChunks([UPath(path)], devices_per_chunk=2)

    ranges = whole.ranges(chunks_per_range=2)  # 12 devices: 6 chunks of 2, 3 ranges of 4 devices

    assert len(ranges) == 3
    in_ranges = [chunk for device_range in ranges for chunk in device_range]
    expected = list(whole)
    assert len(in_ranges) == len(expected) == 6
    for got, want in zip(in_ranges, expected, strict=True):  # the very chunks one reader cuts
        pd.testing.assert_frame_equal(got, want)
    devices_per_range = [sorted(r.frame()["device_id"].dropna().unique()) for r in ranges]
    assert devices_per_range == [
        ["d00", "d01", "d02", "d03"], ["d04", "d05", "d06", "d07"], ["d08", "d09", "d10", "d11"]
    ]  # fmt: skip
    assert ranges[0].frame()["device_id"].isna().sum() == 1  # the row without an id: in the first range only
    assert sum(len(r.frame()) for r in ranges) == len(frame)
    assert whole.ranges(chunks_per_range=6) == [whole]  # one range: the whole day


@pytest.fixture(scope="module")
def scored_both_ways(tmp_path_factory):
    """The demo (30 devices in chunks of 7), 2026-11-09 scored by the scored_anomalies asset, then
    again by device_range_scoring_job in ranges of 10 devices (2 chunks): what the asset wrote, and
    the job's run and home."""
    from anomaly_assets.definitions import build_definitions
    from anomaly_assets.demo import run_demo
    from anomaly_assets.resources.results_store import ResultsStore
    from anomaly_assets.settings import Settings

    saved = dict(os.environ)
    try:
        home = tmp_path_factory.mktemp("ranges") / "home"
        settings = Settings(home=home, fleet_devices=30, fleet_seed=11, devices_per_chunk=7)
        run_demo(settings, days=9, progress=lambda _message: None)
        defs = build_definitions(settings)
        instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
        # The demo scores its two days in one run, whose chunks hold both days' rows of 7 devices:
        # the asset scores the day alone again, in the chunks the job cuts too.
        assert defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, partition_key=DAY, asset_selection=[dg.AssetKey("scored_anomalies")], run_config=QUIET
        ).success
        store = ResultsStore(url=settings.results_url)
        stored = home / "parquet" / "scored_anomalies" / f"{DAY}.parquet"
        by_asset = {
            "rows": pd.read_parquet(stored),
            "tables": {table: _day_rows(store, table) for table in TABLES},
            "materialization": _latest_materialization(instance),
        }
        shutil.copy(stored, home / "by_asset.parquet")
        stored.unlink()  # the job must write it again
        run_config = {"ops": {"plan_device_ranges": {"config": {"devices_per_range": 10}}}, **QUIET}
        result = defs.resolve_job_def("device_range_scoring_job").execute_in_process(
            instance=instance, partition_key=DAY, run_config=run_config
        )
        assert result.success
        yield {"asset": by_asset, "result": result, "home": home, "store": store, "instance": instance}
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _day_rows(store, table: str) -> pd.DataFrame:
    frame = store.read_frame(f"SELECT * FROM {table} WHERE partition_date = :day ORDER BY {TABLES[table]}", {"day": DAY})
    return frame.drop(columns=[c for c in RUN_COLUMNS if c in frame])


def _latest_materialization(instance) -> dg.AssetMaterialization:
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("scored_anomalies"), asset_partitions=[DAY]), limit=1
    ).records
    return record.asset_materialization


def test_the_day_is_scored_by_one_step_per_range(scored_both_ways):
    result = scored_both_ways["result"]
    steps = sorted(e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_SUCCESS)
    # 30 devices in chunks of 7: 5 chunks; ranges of 10 devices are 2 chunks (14 devices): 3 ranges
    assert steps == [
        "assemble_scored_partition",
        "plan_device_ranges",
        "score_device_range[range_0]",
        "score_device_range[range_1]",
        "score_device_range[range_2]",
    ]
    ranges = sorted(result.output_for_node("score_device_range").values(), key=lambda r: r.index)
    devices = sorted(scored_both_ways["asset"]["rows"]["device_id"].unique())
    assert len(devices) == 30
    rows_per_device = scored_both_ways["asset"]["rows"]["device_id"].value_counts()
    expected = [int(rows_per_device[devices[first : first + 14]].sum()) for first in (0, 14, 28)]
    assert [r.rows for r in ranges] == expected


def test_the_scored_rows_are_the_assets_rows(scored_both_ways):
    home = scored_both_ways["home"]
    by_job = pd.read_parquet(home / "parquet" / "scored_anomalies" / f"{DAY}.parquet")
    by_asset = scored_both_ways["asset"]["rows"]
    assert len(by_job) > 8000  # 30 devices, 288 rows a day each but a few quarantined
    assert by_job["is_anomaly"].sum() > 0
    # The same chunks scored by the same model: the same values to the bit, in the same order.
    pd.testing.assert_frame_equal(by_job, by_asset, check_exact=True)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_the_results_database_rows_are_the_assets_rows(scored_both_ways, table):
    by_asset = scored_both_ways["asset"]["tables"][table]
    by_job = _day_rows(scored_both_ways["store"], table)
    assert len(by_asset) > 0
    pd.testing.assert_frame_equal(by_job, by_asset, check_exact=True)


def test_the_job_records_the_assets_materialization_and_removes_its_staging(scored_both_ways):
    by_asset = scored_both_ways["asset"]["materialization"]
    by_job = _latest_materialization(scored_both_ways["instance"])
    assert by_job.partition == DAY
    assert set(by_job.metadata) == set(by_asset.metadata)
    for key in ("dagster/row_count", "anomalies", "anomaly_rate", "devices_with_anomalies", "model_version", "top_devices"):
        assert by_job.metadata[key] == by_asset.metadata[key], key
    assert by_job.metadata["mlflow_run"] != by_asset.metadata["mlflow_run"]  # a scoring run of its own
    staging = scored_both_ways["home"] / "staging" / "device_ranges"
    assert not (staging / scored_both_ways["result"].run_id).exists()
