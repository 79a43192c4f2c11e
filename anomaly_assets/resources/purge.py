"""Batched deletion of old rows from the results database (SQLite and PostgreSQL).

Each batch is its own short transaction (``rowid``/``ctid IN (SELECT ... LIMIT n)``), so purging
months of rows never holds one long lock; an interrupted purge simply continues next time.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from anomaly_assets.resources.results_store import (
    alert_delivery_log,
    anomaly_events,
    device_daily_summary,
    incident_state,
    incidents,
    quarantined_telemetry,
)

# table name -> (table, the column holding the day a row belongs to, ISO yyyy-mm-dd)
RETENTION_TABLES: dict[str, tuple[sa.Table, str]] = {
    "anomaly_events": (anomaly_events, "partition_date"),
    "quarantined_telemetry": (quarantined_telemetry, "partition_date"),
    "alert_delivery_log": (alert_delivery_log, "partition_date"),
    "incidents": (incidents, "last_partition"),
    "incident_state": (incident_state, "partition_date"),
    "device_daily_summary": (device_daily_summary, "partition_date"),
}
ROW_KEY = {"sqlite": "rowid", "postgresql": "ctid"}


@dataclasses.dataclass
class PurgeResult:
    table: str
    cutoff: str  # rows of days before this date
    matched: int  # rows older than the cut-off when the purge started
    deleted: int
    batches: int
    oldest_day: str | None
    newest_day: str | None
    dry_run: bool


def purge_older_than(engine: sa.Engine, name: str, cutoff: str, batch_size: int, dry_run: bool) -> PurgeResult:
    if name not in RETENTION_TABLES:
        raise ValueError(f"no retention rule for table {name!r}; known tables: {sorted(RETENTION_TABLES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    table, column_name = RETENTION_TABLES[name]
    column = table.c[column_name]
    old = column < cutoff
    with engine.connect() as connection:
        matched, oldest, newest = connection.execute(
            sa.select(sa.func.count(), sa.func.min(column), sa.func.max(column)).select_from(table).where(old)
        ).one()
    result = PurgeResult(name, cutoff, int(matched), 0, 0, oldest, newest, dry_run)
    if dry_run or not matched:
        return result
    key = ROW_KEY.get(engine.dialect.name)
    while True:
        with engine.begin() as connection:
            if key is not None:
                batch = sa.select(sa.literal_column(key)).select_from(table).where(old).limit(batch_size)
                deleted = connection.execute(table.delete().where(sa.literal_column(key).in_(batch))).rowcount
            else:  # other databases: one day per transaction
                day = connection.execute(sa.select(sa.func.min(column)).where(old)).scalar()
                deleted = connection.execute(table.delete().where(column == day)).rowcount if day is not None else 0
        if not deleted:
            break
        result.deleted += int(deleted)
        result.batches += 1
        if key is not None and deleted < batch_size:
            break
    return result
