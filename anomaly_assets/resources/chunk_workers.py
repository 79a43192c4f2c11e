"""``chunk_workers``: the run's pool of worker processes for chunks of devices, as a resource.

Dagster sets a resource up once per run and process. With the in-process executor (the scoring
job's) every step of the run (validated_telemetry, device_features, score_and_measure_drift) uses
the same workers: their start-up (imports, the Great Expectations context: seconds each) is paid
once per run, not once per step, and raw_telemetry starts them as soon as it has read more than
one chunk of devices, so that start-up overlaps its own reading of the source. Otherwise the first
step with more than one chunk starts them; with the multiprocess executor each step's process has
its own. A run whose steps have one chunk each starts no worker. Torn down when the run ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from anomaly_assets.resources.chunk_pool import WORKERS_ENV, ChunkPool, chunk_workers
from anomaly_assets.resources.device_chunks import DEFAULT_DEVICES_PER_CHUNK

# The in-process executor, and the one ``execute_in_process`` and ``dagster.materialize`` run with.
IN_PROCESS_EXECUTORS = ("in_process", "execute_in_process_executor")


class ChunkWorkers(dg.ConfigurableResource):
    """Worker processes for the heavy steps' chunks of devices."""

    workers: int | None = Field(
        default=None,
        description=f"How many worker processes; unset: {WORKERS_ENV}, default min(2, cores). 1: none, every chunk in the step's process.",
    )
    devices_per_chunk: int = Field(
        default=DEFAULT_DEVICES_PER_CHUNK, description="The IO manager's chunk size: more devices than this need workers."
    )
    _pool: ChunkPool | None = PrivateAttr(default=None)

    def start_early(self, context: dg.AssetExecutionContext, devices: int) -> None:
        """Start the workers now if later steps of this run, in this process, will use them: the
        run's executor is in-process and ``devices`` (seen so far) are more than one chunk."""
        if self._pool is None and devices > self.devices_per_chunk and context.job_def.executor_def.name in IN_PROCESS_EXECUTORS:
            self._start()

    def _start(self) -> ChunkPool:
        if self._pool is None:
            self._pool = ChunkPool(self.workers or chunk_workers())
        return self._pool

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def map(self, function: Callable[[Any, Any], Any], shared: Any, items: Iterable[Any]) -> Iterator[Any]:
        """``function(shared, item)`` per item, in order of ``items``, spread over the workers;
        one item (one chunk) runs in this process, and starts no worker."""
        items = list(items)
        if len(items) <= 1:
            return ChunkPool(1).map(function, shared, items)
        return self._start().map(function, shared, items)
