"""The results database (SQLite embedded, PostgreSQL in production) through SQLAlchemy.

Partitioned tables carry a ``partition_date`` column; writing a partition deletes its rows and
inserts the new ones in one transaction, so re-materializing replaces and never duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from pydantic import PrivateAttr

metadata = sa.MetaData()

anomaly_events = sa.Table(
    "anomaly_events",
    metadata,
    sa.Column("partition_date", sa.String(10), nullable=False),
    sa.Column("device_id", sa.String(512), nullable=False),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("cohort", sa.String(512)),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("severity", sa.Float, nullable=False),
    sa.Column("top_feature_1", sa.String(256)),
    sa.Column("top_feature_2", sa.String(256)),
    sa.Column("top_feature_3", sa.String(256)),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Index("ix_anomaly_events_partition", "partition_date"),
    sa.Index("ix_anomaly_events_device", "device_id", "timestamp"),
)

device_daily_summary = sa.Table(
    "device_daily_summary",
    metadata,
    sa.Column("partition_date", sa.String(10), nullable=False),
    sa.Column("device_id", sa.String(512), nullable=False),
    sa.Column("cohort", sa.String(512)),
    sa.Column("samples", sa.Integer, nullable=False),
    sa.Column("anomalies", sa.Integer, nullable=False),
    sa.Column("max_severity", sa.Float, nullable=False),
    sa.Column("mean_score", sa.Float, nullable=False),
    sa.Column("top_feature", sa.String(256)),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.UniqueConstraint("partition_date", "device_id", name="uq_device_daily_summary"),
)

quarantined_telemetry = sa.Table(
    "quarantined_telemetry",
    metadata,
    sa.Column("partition_date", sa.String(10), nullable=False),
    sa.Column("device_id", sa.Text),
    sa.Column("timestamp", sa.Text),
    sa.Column("rule", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("row_json", sa.Text, nullable=False),
    sa.Index("ix_quarantined_partition", "partition_date"),
)


feature_drift_results = sa.Table(
    "feature_drift",
    metadata,
    sa.Column("partition_date", sa.String(10), nullable=False),
    sa.Column("feature", sa.String(256), nullable=False),
    sa.Column("psi", sa.Float, nullable=False),
    sa.Column("ks", sa.Float, nullable=False),
    sa.Column("reference_median", sa.Float),
    sa.Column("current_median", sa.Float),
    sa.Column("drifted", sa.Boolean, nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.UniqueConstraint("partition_date", "feature", name="uq_feature_drift"),
)


class ResultsStore(dg.ConfigurableResource):
    """SQLAlchemy URL of the results database, e.g. ``sqlite:///results.db`` or ``postgresql+psycopg2://...``."""

    url: str
    _engine: sa.Engine | None = PrivateAttr(default=None)

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = sa.create_engine(self.url, future=True)
            metadata.create_all(self._engine)
        return self._engine

    def replace_partitions(self, table: sa.Table, partition_dates: Sequence[str], frame: pd.DataFrame) -> int:
        """Delete every row of ``partition_dates`` and insert ``frame``, atomically."""
        unknown = sorted(set(frame["partition_date"]) - set(partition_dates)) if len(frame) else []
        if unknown:
            raise ValueError(f"rows for partitions {unknown} outside the partitions being replaced {list(partition_dates)}")
        records = _records(frame[[c.name for c in table.columns]]) if len(frame) else []
        with self.engine.begin() as connection:
            connection.execute(table.delete().where(table.c.partition_date.in_(list(partition_dates))))
            for start in range(0, len(records), 50_000):
                connection.execute(table.insert(), records[start : start + 50_000])
        return len(records)

    def read_frame(self, query: str | sa.Select, params: dict | None = None) -> pd.DataFrame:
        statement = sa.text(query) if isinstance(query, str) else query
        with self.engine.connect() as connection:
            return pd.read_sql(statement, connection, params=params)

    def count(self, table: sa.Table, partition_dates: Sequence[str] | None = None) -> int:
        statement = sa.select(sa.func.count()).select_from(table)
        if partition_dates is not None:
            statement = statement.where(table.c.partition_date.in_(list(partition_dates)))
        with self.engine.connect() as connection:
            return int(connection.execute(statement).scalar_one())


def _records(frame: pd.DataFrame) -> list[dict]:
    """Plain Python values (no numpy scalars, None for missing) for the DB driver."""
    out = frame.astype("object").where(frame.notna(), None)
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.DatetimeTZDtype):
            out[column] = [v.to_pydatetime() if v is not None else None for v in out[column]]
        elif pd.api.types.is_bool_dtype(frame[column].dtype):
            out[column] = out[column].map(lambda v: None if v is None else bool(v))
    return out.to_dict("records")
