"""The results database (SQLite embedded, PostgreSQL in production) through SQLAlchemy.

Partitioned tables carry a ``partition_date`` column; writing a partition deletes its rows and
inserts the new ones in one transaction, so re-materializing replaces and never duplicates.

``ResultsOperations`` is what the project does with it, used two ways: ``ResultsDatabase`` here
(no Dagster: the CLI's audit trail and migrations stay quick) and the Dagster resource
``ResultsStore`` (``results_resource.py``; importable from here too).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

if TYPE_CHECKING:
    from anomaly_assets.resources.results_resource import ResultsStore

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
    sa.Index("ix_device_daily_summary_device", "device_id", "partition_date"),
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
    sa.Index("ix_quarantined_partition_rule", "partition_date", "rule"),
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

# Incidents (device and cohort), one row per incident id, upserted by the partitions that touch it.
incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("incident_id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # device | cohort
    sa.Column("device_id", sa.String(512)),
    sa.Column("cohort", sa.String(512)),
    sa.Column("status", sa.String(16), nullable=False),  # open | closed
    sa.Column("severity_level", sa.String(16), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_anomaly_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("close_reason", sa.String(32)),
    sa.Column("samples", sa.Integer, nullable=False),
    sa.Column("anomalous_samples", sa.Integer, nullable=False),
    sa.Column("devices", sa.Integer, nullable=False),
    sa.Column("cohort_devices", sa.Integer),
    sa.Column("peak_share", sa.Float),
    sa.Column("device_ids", sa.Text),
    sa.Column("max_severity", sa.Float, nullable=False),
    sa.Column("mean_severity", sa.Float, nullable=False),
    sa.Column("max_score", sa.Float, nullable=False),
    sa.Column("top_features", sa.String(800)),
    sa.Column("cohort_incident_id", sa.String(32)),
    sa.Column("first_partition", sa.String(10), nullable=False),
    sa.Column("last_partition", sa.String(10), nullable=False),
    sa.Column("model_name", sa.String(256)),
    sa.Column("model_version", sa.String(32)),
    sa.Index("ix_incidents_last_partition", "last_partition"),
    sa.Index("ix_incidents_device", "device_id", "started_at"),
    sa.Index("ix_incidents_cohort", "cohort", "started_at"),
    sa.Index("ix_incidents_cohort_incident", "cohort_incident_id"),
)

# Hysteresis state at the end of each processed day, read by the next day (incidents span midnight).
incident_state = sa.Table(
    "incident_state",
    metadata,
    sa.Column("partition_date", sa.String(10), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("subject", sa.String(512), nullable=False),
    sa.Column("state_json", sa.Text, nullable=False),
    sa.UniqueConstraint("partition_date", "kind", "subject", name="uq_incident_state"),
)

incident_partitions = sa.Table(
    "incident_partitions",
    metadata,
    sa.Column("partition_date", sa.String(10), primary_key=True),
    sa.Column("incidents", sa.Integer, nullable=False),
    sa.Column("open_at_end", sa.Integer, nullable=False),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(64)),
)

# One row per (incident, channel): re-runs never send twice; failed rows are retried next run.
alert_delivery_log = sa.Table(
    "alert_delivery_log",
    metadata,
    sa.Column("incident_id", sa.String(32), nullable=False),
    sa.Column("channel", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # sending | delivered | digested | suppressed | failed
    sa.Column("partition_date", sa.String(10), nullable=False),
    sa.Column("kind", sa.String(16)),
    sa.Column("severity_level", sa.String(16)),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("digest_id", sa.String(32)),
    sa.Column("first_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("last_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    sa.Column("detail", sa.Text),
    sa.UniqueConstraint("incident_id", "channel", name="uq_alert_delivery"),
    sa.Index("ix_alert_delivery_channel_status", "channel", "status"),
    sa.Index("ix_alert_delivery_partition", "partition_date"),
)

# Who changed what, when and why: champion changes, retention runs, alert-channel changes
# (anomaly_assets.audit). Append-only: on PostgreSQL no role but the owner may update or delete.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("who", sa.String(256), nullable=False),
    sa.Column("via", sa.String(16), nullable=False),  # cli | dagster | web
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(512), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("run_id", sa.String(64)),
    sa.Index("ix_audit_log_action_at", "action", "at"),
)


MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
_MIGRATION_LOCK = 74_226_001  # PostgreSQL advisory lock: one process migrates at a time
_MIGRATED: set[str] = set()  # databases this process has brought to the newest revision


class SchemaNotMigrated(RuntimeError):
    """The results database is behind the code's schema and this role may not migrate it."""


def _alembic_config():
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def schema_revision(engine: sa.Engine) -> str | None:
    """The database's Alembic revision; None when it has none yet."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_schema(engine: sa.Engine) -> None:
    """Bring the results database to the newest Alembic revision (creates it when empty).

    A role that may not create tables (production's results writer and read-only roles) passes
    when the schema is current, and otherwise fails naming the revisions and the fix."""
    from alembic import command
    from alembic.script import ScriptDirectory

    config = _alembic_config()
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except sa.exc.ProgrammingError as error:
        if getattr(error.orig, "pgcode", None) != "42501":  # insufficient_privilege
            raise
        head = ScriptDirectory.from_config(config).get_current_head()
        raise SchemaNotMigrated(
            f"the results database {engine.url.render_as_string(hide_password=True)} is at schema revision "
            f"{schema_revision(engine) or 'none'}, the code needs {head}, and role {engine.url.username!r} may not "
            "migrate it: run `anomaly-assets migrate` with ANOMALY_ASSETS_RESULTS_URL naming the owner role "
            "(docker compose runs the `migrate` service)"
        ) from None


RESULTS_URL_ENV = "ANOMALY_ASSETS_RESULTS_URL"


def production_results_url() -> str:
    """The production results database's URL (processes outside Dagster: the CLI, the explorer)."""
    url = os.environ.get(RESULTS_URL_ENV, "")
    if not url:
        raise ValueError(f"{RESULTS_URL_ENV} is not set (the results database's SQLAlchemy URL)")
    return url


def production_results_store() -> ResultsStore:
    """The production results database as the Dagster resource (the explorer)."""
    from anomaly_assets.resources.results_resource import ResultsStore

    return ResultsStore(url=production_results_url())


def migrated_engine(url: str) -> sa.Engine:
    """An engine on ``url``; the database is brought to the newest schema once per process and
    database, not per step or resource copy."""
    engine = sa.create_engine(url, future=True)
    if url not in _MIGRATED:
        upgrade_schema(engine)
        _MIGRATED.add(url)
    return engine


class ResultsOperations:
    """Reading and writing the results tables. The class using it provides ``engine`` (an
    ``sa.Engine`` from ``migrated_engine``)."""

    def replace_partitions(
        self, table: sa.Table, partition_dates: Sequence[str], frames: pd.DataFrame | Iterable[pd.DataFrame]
    ) -> int:
        """Delete every row of ``partition_dates`` and insert ``frames`` (a frame, or frames one
        after another, so millions of rows need not be in memory at once), atomically."""
        inserted = 0
        with self.engine.begin() as connection:
            connection.execute(table.delete().where(table.c.partition_date.in_(list(partition_dates))))
            for frame in [frames] if isinstance(frames, pd.DataFrame) else frames:
                unknown = sorted(set(frame["partition_date"]) - set(partition_dates)) if len(frame) else []
                if unknown:
                    raise ValueError(
                        f"rows for partitions {unknown} outside the partitions being replaced {list(partition_dates)}"
                    )
                self.insert(connection, table, frame)
                inserted += len(frame)
        return inserted

    @staticmethod
    def insert(connection: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
        """Append ``frame``'s rows inside the caller's transaction (COPY on PostgreSQL)."""
        if frame.empty:
            return
        frame = frame[[c.name for c in table.columns]]
        if connection.dialect.name == "postgresql":
            _copy_into(connection, table, frame)
            return
        _executemany(connection, table, frame)

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


@dataclasses.dataclass
class ResultsDatabase(ResultsOperations):
    """The results database without Dagster (the CLI)."""

    url: str
    _engine: sa.Engine | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = migrated_engine(self.url)
        return self._engine


def __getattr__(name: str) -> Any:
    # The Dagster resource lives beside, so that importing the tables does not import Dagster.
    if name == "ResultsStore":
        from anomaly_assets.resources.results_resource import ResultsStore

        return ResultsStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _copy_into(connection: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    """Bulk load with PostgreSQL's COPY (psycopg 3 or psycopg2), in the caller's transaction."""
    import io

    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False, na_rep="\\N", date_format="%Y-%m-%d %H:%M:%S.%f%z")
    buffer.seek(0)
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    statement = f'COPY "{table.name}" ({columns}) FROM STDIN WITH (FORMAT csv, NULL \'\\N\')'
    cursor = connection.connection.driver_connection.cursor()
    if hasattr(cursor, "copy_expert"):  # psycopg2
        cursor.copy_expert(statement, buffer)
    else:  # psycopg 3
        with cursor.copy(statement) as copy:
            copy.write(buffer.getvalue())


def _sqlite_default_datetime(impl: sa.types.TypeEngine) -> bool:
    from sqlalchemy.dialects.sqlite import DATETIME

    return isinstance(impl, DATETIME) and impl._storage_format == DATETIME._storage_format


def _executemany(connection: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    """One driver-level ``executemany`` per 50,000 rows.

    Values go through each column type's own bind processor (so a DateTime is stored exactly as
    SQLAlchemy stores it on this dialect) column by column; SQLAlchemy's per-row parameter
    building, which cost ~80 us a row, is skipped.
    """
    dialect = connection.dialect
    compiled = table.insert().compile(dialect=dialect)
    names = list(compiled.positiontup) if dialect.positional else list(frame.columns)
    columns = []
    for name in names:
        column, impl = frame[name], table.c[name].type.dialect_impl(dialect)
        if _sqlite_default_datetime(impl) and isinstance(column.dtype, np.dtype | pd.DatetimeTZDtype) and column.dtype.kind == "M":
            # The same text SQLite's DATETIME processor writes (the wall-clock fields), vectorized.
            wall = column.dt.tz_localize(None) if getattr(column.dtype, "tz", None) else column
            text = np.char.replace(np.datetime_as_string(wall.to_numpy(dtype="datetime64[us]"), unit="us"), "T", " ")
            values, processor = text.astype(object), None
        else:
            values = column.to_numpy(dtype=object, copy=True)  # Python scalars; Timestamps are datetimes
            processor = impl.bind_processor(dialect)
        values[column.isna().to_numpy()] = None
        columns.append([processor(v) for v in values] if processor else values.tolist())
    rows = list(zip(*columns, strict=True))
    if not dialect.positional:
        rows = [dict(zip(names, row, strict=True)) for row in rows]
    for start in range(0, len(rows), 50_000):
        connection.exec_driver_sql(compiled.string, rows[start : start + 50_000])
