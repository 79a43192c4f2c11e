"""Incidents, their day-end state and the alert delivery log in the results database.

A day's incidents and state are written in one transaction. Incident rows are upserted by id:
re-processing a day replaces the rows it touched (never duplicates). A row that a later day has
already extended (``last_partition`` after the day) is left alone, because the later day built on
this day's state; incidents that existed only on the day and are gone now are deleted.

The delivery log has one row per (incident, channel). A channel "claims" an incident by inserting
its row (status ``sending``) or by moving a ``failed`` (or stale ``sending``) row back to
``sending`` with a conditional update; only the claimer sends, so two runs never send the same
alert twice. The row then becomes ``delivered``, ``digested`` or ``failed``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence

import pandas as pd
import sqlalchemy as sa

from anomaly_assets.core.incidents import DayResult
from anomaly_assets.resources.results_store import (
    ResultsStore,
    alert_delivery_log,
    incident_partitions,
    incident_state,
    incidents,
)

CHUNK = 500  # ids per IN (...) clause
TIMESTAMP_COLUMNS = ("started_at", "opened_at", "last_anomaly_at", "ended_at")
DONE_STATUSES = ("delivered", "digested", "suppressed")


def _chunks(values: Sequence, size: int = CHUNK) -> Iterable[list]:
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _utc(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """SQLite hands timestamps back naive (they were written as UTC): make them UTC again."""
    for column in columns:
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def previous_day(partition_date: str) -> str:
    return (dt.date.fromisoformat(partition_date) - dt.timedelta(days=1)).isoformat()


def load_state(store: ResultsStore, partition_date: str) -> tuple[bool, dict[tuple[str, str], dict]]:
    """(was the day processed, its day-end states by (kind, subject))."""
    with store.engine.connect() as connection:
        processed = connection.execute(
            sa.select(incident_partitions.c.partition_date).where(incident_partitions.c.partition_date == partition_date)
        ).first() is not None
        rows = connection.execute(
            sa.select(incident_state.c.kind, incident_state.c.subject, incident_state.c.state_json).where(
                incident_state.c.partition_date == partition_date
            )
        ).all()
    return processed, {(kind, subject): json.loads(state) for kind, subject, state in rows}


def write_day(store: ResultsStore, partition_date: str, result: DayResult, run_id: str | None) -> dict[str, int]:
    """Upsert the day's incidents and replace its state, in one transaction."""
    frame = result.incidents
    ids = [str(i) for i in frame["incident_id"]] if len(frame) else []
    open_at_end = sum(1 for state in result.states.values() if state.get("open"))
    with store.engine.begin() as connection:
        later: set[str] = set()
        for chunk in _chunks(ids):
            later |= set(
                connection.execute(
                    sa.select(incidents.c.incident_id).where(
                        incidents.c.incident_id.in_(chunk), incidents.c.last_partition > partition_date
                    )
                ).scalars()
            )
        only_this_day = connection.execute(
            sa.select(incidents.c.incident_id).where(
                incidents.c.first_partition == partition_date, incidents.c.last_partition == partition_date
            )
        ).scalars()
        stale_ids = sorted(set(only_this_day) - set(ids))  # gone after re-processing the day
        for chunk in _chunks(stale_ids):
            connection.execute(incidents.delete().where(incidents.c.incident_id.in_(chunk)))
        stale = len(stale_ids)
        writable = frame.loc[~frame["incident_id"].isin(later)] if len(frame) else frame
        for chunk in _chunks(list(writable["incident_id"]) if len(writable) else []):
            connection.execute(incidents.delete().where(incidents.c.incident_id.in_(chunk)))
        ResultsStore.insert(connection, incidents, writable)
        connection.execute(incident_state.delete().where(incident_state.c.partition_date == partition_date))
        states = [
            {"partition_date": partition_date, "kind": kind, "subject": subject, "state_json": json.dumps(state)}
            for (kind, subject), state in sorted(result.states.items())
        ]
        if states:
            connection.execute(incident_state.insert(), states)
        connection.execute(incident_partitions.delete().where(incident_partitions.c.partition_date == partition_date))
        connection.execute(
            incident_partitions.insert(),
            {
                "partition_date": partition_date,
                "incidents": len(ids),
                "open_at_end": open_at_end,
                "processed_at": dt.datetime.now(dt.UTC),
                "run_id": run_id,
            },
        )
    return {"written": len(writable), "kept_later_version": len(later), "stale_deleted": stale}


def read_incidents(store: ResultsStore, where: sa.ColumnElement | None = None) -> pd.DataFrame:
    statement = sa.select(incidents)
    if where is not None:
        statement = statement.where(where)
    return _utc(store.read_frame(statement.order_by(incidents.c.started_at, incidents.c.incident_id)), TIMESTAMP_COLUMNS)


def delivery_candidates(store: ResultsStore, partition_dates: Sequence[str]) -> pd.DataFrame:
    """Incidents the partitions touched, plus every incident with a failed or unfinished delivery."""
    pending = sa.select(alert_delivery_log.c.incident_id).where(alert_delivery_log.c.status.in_(("failed", "sending")))
    return read_incidents(store, incidents.c.last_partition.in_(list(partition_dates)) | incidents.c.incident_id.in_(pending))


def read_log(store: ResultsStore, channel: str | None = None) -> pd.DataFrame:
    statement = sa.select(alert_delivery_log)
    if channel is not None:
        statement = statement.where(alert_delivery_log.c.channel == channel)
    frame = store.read_frame(statement.order_by(alert_delivery_log.c.channel, alert_delivery_log.c.incident_id))
    return _utc(frame, ("first_attempt_at", "last_attempt_at", "delivered_at"))


class DeliveryLog:
    """The delivery log of one channel: claims, outcomes and the rate-limit count."""

    def __init__(self, engine: sa.Engine, channel: str, stale_claim: dt.timedelta = dt.timedelta(minutes=15)):
        self.engine = engine
        self.channel = channel
        self.stale_claim = stale_claim

    def _key(self, incident_id: str):
        return (alert_delivery_log.c.incident_id == incident_id) & (alert_delivery_log.c.channel == self.channel)

    def existing(self, incident_ids: Sequence[str]) -> dict[str, dict]:
        rows: dict[str, dict] = {}
        with self.engine.connect() as connection:
            for chunk in _chunks(incident_ids):
                result = connection.execute(
                    sa.select(alert_delivery_log).where(
                        alert_delivery_log.c.channel == self.channel, alert_delivery_log.c.incident_id.in_(chunk)
                    )
                )
                rows.update({row.incident_id: dict(row._mapping) for row in result})
        return rows

    def claim(self, incident: dict, now: dt.datetime, status: str = "sending", detail: str | None = None) -> bool:
        """Take the incident for this channel; False when another run has it or it is done."""
        values = {
            "status": status,
            "last_attempt_at": now,
            "detail": detail,
            "severity_level": incident.get("severity_level"),
        }
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    alert_delivery_log.insert(),
                    {
                        **values,
                        "incident_id": incident["incident_id"],
                        "channel": self.channel,
                        "partition_date": incident["last_partition"],
                        "kind": incident.get("kind"),
                        "attempts": 0,
                        "first_attempt_at": now,
                    },
                )
            return True
        except sa.exc.IntegrityError:
            pass
        retryable = (alert_delivery_log.c.status == "failed") | (
            (alert_delivery_log.c.status == "sending") & (alert_delivery_log.c.last_attempt_at < now - self.stale_claim)
        )
        with self.engine.begin() as connection:
            claimed = connection.execute(
                alert_delivery_log.update().where(self._key(incident["incident_id"]), retryable).values(**values)
            ).rowcount
        return claimed == 1

    def finish(self, incident_ids: Sequence[str], status: str, now: dt.datetime, detail: str | None, digest_id: str | None = None) -> None:
        values = {
            "status": status,
            "last_attempt_at": now,
            "detail": (detail or "")[:4000] or None,
            "attempts": alert_delivery_log.c.attempts + 1,
            "digest_id": digest_id,
        }
        if status in ("delivered", "digested"):
            values["delivered_at"] = now
        with self.engine.begin() as connection:
            for chunk in _chunks(incident_ids):
                connection.execute(
                    alert_delivery_log.update()
                    .where(alert_delivery_log.c.channel == self.channel, alert_delivery_log.c.incident_id.in_(chunk))
                    .values(**values)
                )

    def delivered_since(self, since: dt.datetime) -> int:
        """Individual alerts (not digests) this channel delivered since ``since``."""
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    sa.select(sa.func.count())
                    .select_from(alert_delivery_log)
                    .where(
                        alert_delivery_log.c.channel == self.channel,
                        alert_delivery_log.c.status == "delivered",
                        alert_delivery_log.c.delivered_at >= since,
                    )
                ).scalar_one()
            )


def failed_deliveries(store: ResultsStore) -> pd.DataFrame:
    return store.read_frame(
        sa.select(
            alert_delivery_log.c.incident_id,
            alert_delivery_log.c.channel,
            alert_delivery_log.c.attempts,
            alert_delivery_log.c.detail,
        )
        .where(alert_delivery_log.c.status == "failed")
        .order_by(alert_delivery_log.c.channel, alert_delivery_log.c.incident_id)
    )
