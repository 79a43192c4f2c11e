"""Where the explorer reads from: the results database and the partition files of the same
environment the assets run in (``anomaly_assets.settings``), and its optional access token."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from anomaly_assets.settings import Settings

TOKEN_ENV = "ANOMALY_ASSETS_EXPLORER_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050


@dataclasses.dataclass(frozen=True)
class ExplorerSources:
    store: object  # ResultsStore
    storage_path: str  # the IO manager's base path: partition parquet files


def explorer_sources(settings: Settings) -> ExplorerSources:
    """The ``ResultsStore`` and partition base path the assets use in this environment; in
    production both come from the environment (ANOMALY_ASSETS_RESULTS_URL, ANOMALY_ASSETS_STORAGE_PATH)."""
    from anomaly_assets.resources.results_store import ResultsStore, production_results_store

    if settings.environment == "production":
        store = production_results_store()
        storage = os.environ.get("ANOMALY_ASSETS_STORAGE_PATH", "")
        if not storage:
            raise ValueError("ANOMALY_ASSETS_STORAGE_PATH is not set (the partition files' base path)")
        return ExplorerSources(store, storage)
    if not (settings.home / "results.db").exists():
        raise FileNotFoundError(
            f"no results database at {settings.home / 'results.db'}: run `make demo` (or materialize "
            "scored_anomalies) first, or point ANOMALY_ASSETS_HOME at an existing home"
        )
    return ExplorerSources(ResultsStore(url=settings.results_url), str(settings.parquet_dir))


def explorer_token(environ: Mapping[str, str] | None = None) -> str | None:
    return (os.environ if environ is None else environ).get(TOKEN_ENV) or None
