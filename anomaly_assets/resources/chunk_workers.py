"""``chunk_workers``: the run's pool of worker processes for chunks of devices, as a resource.

Dagster sets a resource up once per run and process. With the in-process executor (the scoring
job's) the first step with more than one chunk of devices starts the pool, and every later step
of the run (validated_telemetry, device_features, score_and_measure_drift) uses the same workers:
their start-up and imports are paid once per run, not once per step. With the multiprocess
executor each step's process has its own. A run whose steps have one chunk each starts no worker.
The pool is torn down when the run ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from anomaly_assets.resources.chunk_pool import WORKERS_ENV, ChunkPool, chunk_workers


class ChunkWorkers(dg.ConfigurableResource):
    """Worker processes for the heavy steps' chunks of devices."""

    workers: int | None = Field(
        default=None,
        description=f"How many worker processes; unset: {WORKERS_ENV}, default min(2, cores). 1: none, every chunk in the step's process.",
    )
    _pool: ChunkPool | None = PrivateAttr(default=None)

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
        if self._pool is None:
            self._pool = ChunkPool(self.workers or chunk_workers())
        return self._pool.map(function, shared, items)
