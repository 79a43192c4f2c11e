"""The chunk_workers resource: one pool of worker processes per run, shared by its steps."""

from __future__ import annotations

import os
import tempfile

import dagster as dg

from anomaly_assets.resources import ChunkWorkers


def worker_pid(shared: str, item: int) -> tuple[str, int, int]:
    return shared, item, os.getpid()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie left for its parent to reap has exited too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_every_step_of_a_run_uses_the_same_workers_which_end_with_the_run():
    @dg.op
    def first(chunk_workers: ChunkWorkers) -> list:
        return list(chunk_workers.map(worker_pid, "first", range(6)))

    @dg.op
    def second(chunk_workers: ChunkWorkers, earlier: list) -> list:
        return earlier + list(chunk_workers.map(worker_pid, "second", range(6)))

    @dg.op
    def one_chunk(chunk_workers: ChunkWorkers) -> list:
        return list(chunk_workers.map(worker_pid, "alone", [0]))

    @dg.job(executor_def=dg.in_process_executor)
    def two_steps():
        second(first())
        one_chunk()

    result = two_steps.execute_in_process(resources={"chunk_workers": ChunkWorkers(workers=2)})
    assert result.success
    rows = result.output_for_node("second")
    # Each step's items come back in order, with the step's own shared object.
    assert [(shared, item) for shared, item, _ in rows] == [("first", i) for i in range(6)] + [("second", i) for i in range(6)]
    first_pids = {pid for shared, _, pid in rows if shared == "first"}
    second_pids = {pid for shared, _, pid in rows if shared == "second"}
    assert os.getpid() not in first_pids | second_pids  # the chunks ran in workers
    assert second_pids <= first_pids and len(first_pids) <= 2  # the second step reused the first step's workers
    # A step with one chunk runs it in its own process, without a worker.
    assert result.output_for_node("one_chunk") == [("alone", 0, os.getpid())]
    assert not any(_alive(pid) for pid in first_pids)  # torn down with the run


def test_a_run_with_one_chunk_per_step_starts_no_worker():
    @dg.op
    def alone(chunk_workers: ChunkWorkers) -> tuple[list, bool]:
        return list(chunk_workers.map(worker_pid, "alone", [0])), chunk_workers._pool is None

    @dg.job(executor_def=dg.in_process_executor)
    def single():
        alone()

    rows, no_pool = single.execute_in_process(resources={"chunk_workers": ChunkWorkers(workers=2)}).output_for_node("alone")
    assert rows == [("alone", 0, os.getpid())] and no_pool


def big_chunk(shared: int, item: int):
    """A chunk's worth of columns (well over PACK_BYTES): a frame, an Arrow table, an array."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    rows = shared
    frame = pd.DataFrame(
        {
            "device_id": [f"dev-{item:03d}-{i % 50:02d}" for i in range(rows)],
            "timestamp": pd.date_range("2026-11-09", periods=rows, freq="s", tz="UTC"),
            "value": np.arange(rows, dtype=np.float64) + item,
        }
    )
    return frame, pa.Table.from_pandas(frame, preserve_index=False), np.full(rows, item, dtype=np.int32)


def _result_files() -> list[str]:
    from anomaly_assets.resources import chunk_pool

    folder = chunk_pool._shared_memory() or tempfile.gettempdir()
    return [os.path.join(folder, name) for name in os.listdir(folder) if name.startswith(chunk_pool.RESULT_PREFIX)]


def test_large_results_come_back_through_shared_memory_equal_and_writable_leaving_no_file():
    import numpy as np
    import pandas as pd

    from anomaly_assets.resources.chunk_pool import PACK_BYTES, ChunkPool, _pack, _Packed

    rows = 200_000  # ~5 MB of columns per chunk
    assert isinstance(_pack(big_chunk(rows, 0), "probe"), _Packed)  # the path under test is taken
    for path in _result_files():
        os.remove(path)  # the probe's own file
    assert isinstance(_pack(big_chunk(10, 0), "probe"), tuple) and 10 * 40 < PACK_BYTES  # small ones go as they are

    with ChunkPool(2) as pool:
        got = list(pool.map(big_chunk, rows, range(5)))
        assert _result_files() == []  # each result's file is gone once it is taken
        for item, (frame, table, array) in enumerate(got):
            expected_frame, expected_table, expected_array = big_chunk(rows, item)
            pd.testing.assert_frame_equal(frame, expected_frame)
            assert table.equals(expected_table)
            np.testing.assert_array_equal(array, expected_array)
            frame.loc[0, "value"] = -1.0  # writable, as an unpickled frame is
            array[0] = -1
        # A step that stops after its first chunk: the chunks it never took leave no file behind.
        stopped = pool.map(big_chunk, rows, range(6))
        next(stopped)
        stopped.close()
    assert _result_files() == []


def test_workers_start_early_only_past_one_chunk_of_devices_in_an_in_process_run():
    """raw_telemetry starts the run's workers once it has seen more devices than one chunk, so
    their start-up overlaps its reading; below that, none start."""

    @dg.op
    def reads_the_source(context, chunk_workers: ChunkWorkers) -> list:
        chunk_workers.start_early(context, 10)
        before = chunk_workers._pool is None
        chunk_workers.start_early(context, 11)
        started = chunk_workers._pool is not None and chunk_workers._pool.workers == 2
        return [before, started]

    @dg.job(executor_def=dg.in_process_executor)
    def run():
        reads_the_source()

    result = run.execute_in_process(resources={"chunk_workers": ChunkWorkers(workers=2, devices_per_chunk=10)})
    assert result.output_for_node("reads_the_source") == [True, True]
