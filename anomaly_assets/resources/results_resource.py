"""The results database as a Dagster resource: ``ResultsOperations`` (``results_store.py``, also
under the CLI's ``ResultsDatabase``) with its URL as Dagster config."""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr

from anomaly_assets.resources.results_store import ResultsOperations, migrated_engine


class ResultsStore(ResultsOperations, dg.ConfigurableResource):
    """SQLAlchemy URL of the results database, e.g. ``sqlite:///results.db`` or ``postgresql+psycopg2://...``."""

    url: str
    _engine: sa.Engine | None = PrivateAttr(default=None)

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = migrated_engine(self.url)
        return self._engine

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the step's connections when the step ends."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
