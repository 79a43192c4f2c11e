"""A pool of worker processes for the heavy steps: chunks of whole devices go to workers that run
core functions on them, in parallel, while the step's own process writes what comes back.

``spawn`` workers (a fresh interpreter each, safe beside the threads Dagster runs) that import the
numeric libraries, the chunk tasks and Great Expectations as they start, before the first chunk
arrives. The run's :class:`~anomaly_assets.resources.chunk_workers.ChunkWorkers` resource keeps
one pool for the whole run, so those imports are paid once, not once per step.
ANOMALY_ASSETS_CHUNK_WORKERS sets how many (default min(2, cores)); 1 runs every chunk in the
step's process, without a pool. A script that materializes in its own process with more than one
worker needs an ``if __name__ == "__main__":`` guard: a spawned worker imports the script's main
module.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import pickle
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

WORKERS_ENV = "ANOMALY_ASSETS_CHUNK_WORKERS"
# Imported by each worker as it starts, before the first chunk arrives: every heavy step's task
# (validation's Great Expectations included), since one pool serves every step of a run.
WARM_MODULES = ("anomaly_assets.resources.chunk_tasks", "anomaly_assets.core.validation")

_shared: dict[str, Any] = {}  # in a worker: what the current ``map`` shares with every task, by its token


def chunk_workers() -> int:
    """ANOMALY_ASSETS_CHUNK_WORKERS, default min(2, cores)."""
    configured = os.environ.get(WORKERS_ENV, "").strip()
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise ValueError(f"{WORKERS_ENV} must be a whole number of at least 1, got {configured!r}")
        return int(configured)
    return min(2, os.cpu_count() or 1)


class ChunkPool:
    """``map(function, shared, items)`` runs ``function(shared, item)`` per item, in order of
    ``items``, in the workers; ``shared`` (a model, the input's files) goes to each worker once
    per ``map``. With one worker (or one item) it runs in the calling process."""

    def __init__(self, workers: int | None = None, warm: Iterable[str] = WARM_MODULES):
        self.workers = workers or chunk_workers()
        self._pool = None
        if self.workers > 1:
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(self.workers, initializer=_warm_up, initargs=(tuple(warm),))

    def map(self, function: Callable[[Any, Any], Any], shared: Any, items: Iterable[Any]) -> Iterator[Any]:
        items = list(items)
        if self._pool is None or len(items) <= 1:
            yield from (function(shared, item) for item in items)
            return
        handle, path = tempfile.mkstemp(prefix="anomaly_assets_pool_", suffix=".pickle")
        try:
            with os.fdopen(handle, "wb") as file:
                pickle.dump(shared, file, protocol=pickle.HIGHEST_PROTOCOL)
            token = uuid.uuid4().hex  # one per map: a worker never mistakes an earlier map's object for it
            yield from self._pool.imap(_run, [(function, path, token, item) for item in items])
        finally:
            os.remove(path)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> ChunkPool:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def _warm_up(modules: tuple[str, ...]) -> None:
    for name in modules:
        importlib.import_module(name)


def _run(task: tuple[Callable[[Any, Any], Any], str, str, Any]) -> Any:
    function, path, token, item = task
    if token not in _shared:
        _shared.clear()  # one map's shared object at a time
        with open(path, "rb") as file:
            _shared[token] = pickle.load(file)
    return function(_shared[token], item)
