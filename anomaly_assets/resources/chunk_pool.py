"""A pool of worker processes for the heavy steps: chunks of devices run through core functions
in parallel inside one step."""

from __future__ import annotations

import os

WORKERS_ENV = "ANOMALY_ASSETS_CHUNK_WORKERS"


def chunk_workers() -> int:
    """ANOMALY_ASSETS_CHUNK_WORKERS, default min(2, cores)."""
    configured = os.environ.get(WORKERS_ENV, "").strip()
    return max(1, int(configured)) if configured else min(2, os.cpu_count() or 1)
