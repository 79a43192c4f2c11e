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

import collections
import dataclasses
import glob
import importlib
import itertools
import mmap
import multiprocessing
import os
import pickle
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

WORKERS_ENV = "ANOMALY_ASSETS_CHUNK_WORKERS"
# Imported (and warmed) by each worker as it starts, before the first chunk arrives: every heavy
# step's task, since one pool serves every step of a run.
WARM_MODULES = ("anomaly_assets.resources.chunk_tasks",)
# A result whose arrays add up to more than this comes back through a file in shared memory, not
# the pool's pipe (see ``_Packed``).
PACK_BYTES = 1 << 20
RESULT_PREFIX = "anomaly_assets_chunk_"
ALIGN = 64  # each array starts on a 64-byte boundary in that file, as Arrow and numpy like

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
        self._id = uuid.uuid4().hex  # names the files this pool's results come back in
        if self.workers > 1:
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(self.workers, initializer=_warm_up, initargs=(tuple(warm),))

    def map(self, function: Callable[[Any, Any], Any], shared: Any, items: Iterable[Any]) -> Iterator[Any]:
        items = list(items)
        if self._pool is None or len(items) <= 1:
            yield from (function(shared, item) for item in items)
            return
        # One per map: a worker never mistakes an earlier map's shared object for this one's.
        token = f"{self._id}-{uuid.uuid4().hex}"
        handle, path = tempfile.mkstemp(prefix="anomaly_assets_pool_", suffix=".pickle")
        try:
            with os.fdopen(handle, "wb") as file:
                pickle.dump(shared, file, protocol=pickle.HIGHEST_PROTOCOL)
            # At most two chunks per worker in flight: the workers never wait for work, and the
            # results not yet taken (in shared memory) stay a few chunks, whatever the fleet size.
            waiting = iter(items)
            pending: collections.deque = collections.deque()
            for item in itertools.islice(waiting, 2 * self.workers):
                pending.append(self._pool.apply_async(_run, ((function, path, token, item),)))
            while pending:
                result = pending.popleft().get()
                for item in itertools.islice(waiting, 1):
                    pending.append(self._pool.apply_async(_run, ((function, path, token, item),)))
                yield result.unpack() if isinstance(result, _Packed) else result
        finally:
            os.remove(path)
            _remove_results(token)  # of chunks not taken (a step that stopped early)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
            _remove_results(self._id)

    def __enter__(self) -> ChunkPool:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def _warm_up(modules: tuple[str, ...]) -> None:
    """Import each module and call its ``warm_up()``, if it has one."""
    for name in modules:
        warm = getattr(importlib.import_module(name), "warm_up", None)
        if warm is not None:
            warm()


def _run(task: tuple[Callable[[Any, Any], Any], str, str, Any]) -> Any:
    function, path, token, item = task
    if token not in _shared:
        _shared.clear()  # one map's shared object at a time
        with open(path, "rb") as file:
            _shared[token] = pickle.load(file)
    return _pack(function(_shared[token], item), token)


@dataclasses.dataclass
class _Packed:
    """A worker's result with its arrays (a chunk's columns: ~100 MB) written to a file in shared
    memory instead of sent through the pool's one result pipe, where a worker would wait for the
    step's process to read every byte before it could take its next chunk. The step's process
    maps the file and unpickles the arrays in place: no copy on either side of a pipe."""

    pickled: bytes
    path: str
    spans: list[tuple[int, int]]

    def unpack(self) -> Any:
        with open(self.path, "rb") as file:
            # Copy-on-write: the arrays are writable, as unpickled ones are, and the file's pages
            # are only read.
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY) if os.path.getsize(self.path) else None
        os.remove(self.path)  # the mapping outlives the name
        view = memoryview(mapped) if mapped is not None else memoryview(b"")
        return pickle.loads(self.pickled, buffers=[view[start : start + size] for start, size in self.spans])


def _pack(result: Any, token: str) -> Any:
    buffers: list[pickle.PickleBuffer] = []
    pickled = pickle.dumps(result, protocol=5, buffer_callback=buffers.append)
    raw = [buffer.raw() for buffer in buffers]
    if sum(view.nbytes for view in raw) < PACK_BYTES:
        return result
    handle, path = tempfile.mkstemp(prefix=f"{RESULT_PREFIX}{token}-", suffix=".buffers", dir=_shared_memory())
    spans, offset = [], 0
    with os.fdopen(handle, "wb") as file:
        for view in raw:
            padding = -offset % ALIGN
            file.write(b"\0" * padding)
            offset += padding
            file.write(view)
            spans.append((offset, view.nbytes))
            offset += view.nbytes
    return _Packed(pickled, path, spans)


def _remove_results(token: str) -> None:
    for path in glob.glob(os.path.join(_shared_memory() or tempfile.gettempdir(), f"{RESULT_PREFIX}{token}*")):
        os.remove(path)


def _shared_memory() -> str | None:
    """/dev/shm where there is one (memory, not disk), else the temporary directory."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
