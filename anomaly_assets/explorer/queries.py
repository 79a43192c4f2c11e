"""What the explorer's pages read from the results database: SQLAlchemy Core selects on the
tables ``ResultsStore`` defines, so the same queries run on SQLite and PostgreSQL.

Every query is bounded (a day, a device, a page of rows) and served by an index of the schema
(see migration 0002), so a page costs milliseconds on a 10,000-device day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import sqlalchemy as sa

from anomaly_assets.core.incident_rules import SEVERITY_LEVELS
from anomaly_assets.resources.results_store import (
    ResultsStore,
    anomaly_events,
    device_daily_summary,
    feature_drift_results,
    incident_partitions,
    incidents,
    quarantined_telemetry,
)

PAGE_ROWS = 100


@dataclasses.dataclass(frozen=True)
class IncidentFilter:
    day: str | None = None
    severity: str | None = None  # this level or worse
    cohort: str | None = None
    status: str | None = None  # open | closed
    kind: str | None = None  # device | cohort
    page: int = 1


def _hour(column: sa.ColumnElement, dialect: str) -> sa.ColumnElement:
    if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff'
        return sa.cast(sa.func.substr(column, 12, 2), sa.Integer)
    return sa.cast(sa.extract("hour", column), sa.Integer)


class ExplorerQueries:
    def __init__(self, store: ResultsStore):
        self.store = store

    def _frame(self, statement: sa.Select) -> pd.DataFrame:
        with self.store.engine.connect() as connection:
            return pd.read_sql(statement, connection)

    def _rows(self, statement: sa.Select) -> list[dict]:
        with self.store.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(statement)]

    # --- days ---------------------------------------------------------------------------

    def recent_days(self, limit: int = 31) -> pd.DataFrame:
        """The most recent scored days with devices, anomalies, incidents, quarantined rows and
        drifted features: each count a grouped scan of one partition index."""
        s = device_daily_summary
        days = self._frame(
            sa.select(s.c.partition_date, sa.func.count().label("devices"))
            .group_by(s.c.partition_date)
            .order_by(s.c.partition_date.desc())
            .limit(limit)
        )
        if days.empty:
            return days.assign(anomalies=[], incidents=[], quarantined=[], drifted_features=[])
        keys = days["partition_date"].tolist()

        def counts(table: sa.Table, name: str, *where: sa.ColumnElement) -> pd.Series:
            frame = self._frame(
                sa.select(table.c.partition_date, sa.func.count().label(name))
                .where(table.c.partition_date.in_(keys), *where)
                .group_by(table.c.partition_date)
            )
            return frame.set_index("partition_date")[name]

        out = days.set_index("partition_date")
        out["anomalies"] = counts(anomaly_events, "anomalies")
        out["quarantined"] = counts(quarantined_telemetry, "quarantined")
        out["drifted_features"] = counts(feature_drift_results, "drifted", feature_drift_results.c.drifted.is_(True))
        touched = self._frame(
            sa.select(incident_partitions.c.partition_date, incident_partitions.c.incidents).where(
                incident_partitions.c.partition_date.in_(keys)
            )
        )
        out["incidents"] = touched.set_index("partition_date")["incidents"]
        return out.fillna(0).astype("int64").reset_index()

    def latest_day(self) -> str | None:
        with self.store.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.max(device_daily_summary.c.partition_date))).scalar()

    def day_summary(self, day: str) -> dict:
        s = device_daily_summary
        row = self._rows(
            sa.select(
                sa.func.count().label("devices"),
                sa.func.coalesce(sa.func.sum(s.c.samples), 0).label("rows"),
                sa.func.coalesce(sa.func.sum(s.c.anomalies), 0).label("anomalies"),
                sa.func.coalesce(sa.func.sum(sa.case((s.c.anomalies > 0, 1), else_=0)), 0).label("devices_with_anomalies"),
                sa.func.min(s.c.model_version).label("model_version"),
                sa.func.max(s.c.model_version).label("newest_model_version"),
                sa.func.min(s.c.model_name).label("model_name"),
            ).where(s.c.partition_date == day)
        )[0]
        return {k: (int(v) if isinstance(v, int | float) and k not in ("model_version",) else v) for k, v in row.items()}

    def anomalies_per_hour(self, day: str) -> pd.DataFrame:
        """Flagged rows and flagged devices per (hour, cohort) of the day."""
        e = anomaly_events
        hour = _hour(e.c.timestamp, self.store.engine.dialect.name).label("hour")
        return self._frame(
            sa.select(
                hour,
                e.c.cohort,
                sa.func.count().label("anomalies"),
                sa.func.count(sa.distinct(e.c.device_id)).label("devices"),
            )
            .where(e.c.partition_date == day)
            .group_by(hour, e.c.cohort)
            .order_by(hour, e.c.cohort)
        )

    def top_devices(self, day: str, limit: int = 20) -> pd.DataFrame:
        s = device_daily_summary
        return self._frame(
            sa.select(s.c.device_id, s.c.cohort, s.c.anomalies, s.c.samples, s.c.max_severity, s.c.mean_score, s.c.top_feature)
            .where(s.c.partition_date == day, s.c.anomalies > 0)
            .order_by(s.c.max_severity.desc(), s.c.device_id)
            .limit(limit)
        )

    def drift(self, day: str) -> pd.DataFrame:
        d = feature_drift_results
        return self._frame(
            sa.select(d.c.feature, d.c.psi, d.c.ks, d.c.reference_median, d.c.current_median, d.c.drifted, d.c.model_version)
            .where(d.c.partition_date == day)
            .order_by(d.c.drifted.desc(), d.c.psi.desc())
        )

    def quarantine_summary(self, day: str) -> pd.DataFrame:
        q = quarantined_telemetry
        return self._frame(
            sa.select(q.c.rule, sa.func.count().label("rows"), sa.func.min(q.c.reason).label("example_reason"))
            .where(q.c.partition_date == day)
            .group_by(q.c.rule)
            .order_by(sa.func.count().desc())
        )

    # --- incidents ----------------------------------------------------------------------

    def _incident_conditions(self, f: IncidentFilter) -> list[sa.ColumnElement]:
        i = incidents
        where = []
        if f.day:
            where += [i.c.first_partition <= f.day, i.c.last_partition >= f.day]
        if f.severity in SEVERITY_LEVELS:
            where.append(i.c.severity_level.in_(SEVERITY_LEVELS[SEVERITY_LEVELS.index(f.severity) :]))
        if f.cohort:
            where.append(i.c.cohort == f.cohort)
        if f.status:
            where.append(i.c.status == f.status)
        if f.kind:
            where.append(i.c.kind == f.kind)
        return where

    def incidents(self, f: IncidentFilter) -> tuple[pd.DataFrame, int]:
        """One page of incidents matching ``f``, worst first, and how many match in all."""
        i = incidents
        where = self._incident_conditions(f)
        with self.store.engine.connect() as connection:
            total = connection.execute(sa.select(sa.func.count()).select_from(i).where(*where)).scalar_one()
        page = self._frame(
            sa.select(
                i.c.incident_id, i.c.kind, i.c.device_id, i.c.cohort, i.c.status, i.c.severity_level, i.c.max_severity,
                i.c.started_at, i.c.ended_at, i.c.anomalous_samples, i.c.samples, i.c.devices, i.c.top_features,
                i.c.cohort_incident_id, i.c.first_partition, i.c.last_partition,
            )
            .where(*where)
            .order_by(i.c.started_at.desc(), i.c.max_severity.desc(), i.c.incident_id)
            .limit(PAGE_ROWS)
            .offset((max(f.page, 1) - 1) * PAGE_ROWS)
        )  # fmt: skip
        return page, int(total)

    def incident_cohorts(self) -> list[str]:
        with self.store.engine.connect() as connection:
            return [
                c for (c,) in connection.execute(
                    sa.select(sa.distinct(incidents.c.cohort)).where(incidents.c.cohort.is_not(None)).order_by(incidents.c.cohort)
                )
            ]  # fmt: skip

    def incident(self, incident_id: str) -> dict | None:
        rows = self._rows(sa.select(incidents).where(incidents.c.incident_id == incident_id))
        return rows[0] if rows else None

    def attached_device_incidents(self, cohort_incident_id: str) -> pd.DataFrame:
        i = incidents
        return self._frame(
            sa.select(i.c.incident_id, i.c.device_id, i.c.status, i.c.severity_level, i.c.max_severity, i.c.started_at,
                      i.c.ended_at, i.c.anomalous_samples, i.c.top_features)
            .where(i.c.cohort_incident_id == cohort_incident_id)
            .order_by(i.c.max_severity.desc(), i.c.device_id)
        )  # fmt: skip

    # --- devices ------------------------------------------------------------------------

    def device_days(self, device_id: str) -> pd.DataFrame:
        s = device_daily_summary
        return self._frame(
            sa.select(s.c.partition_date, s.c.cohort, s.c.samples, s.c.anomalies, s.c.max_severity, s.c.mean_score,
                      s.c.top_feature, s.c.model_name, s.c.model_version)
            .where(s.c.device_id == device_id)
            .order_by(s.c.partition_date)
        )  # fmt: skip

    def device_events(self, device_id: str, first_day: str, last_day: str) -> pd.DataFrame:
        """The device's flagged rows over [first_day, last_day], as stored by scored_anomalies."""
        e = anomaly_events
        start = pd.Timestamp(first_day, tz="UTC")
        end = pd.Timestamp(last_day, tz="UTC") + pd.Timedelta(days=1)
        frame = self._frame(
            sa.select(e.c.timestamp, e.c.score, e.c.severity, e.c.top_feature_1, e.c.top_feature_2, e.c.top_feature_3,
                      e.c.model_version)
            .where(e.c.device_id == device_id, e.c.timestamp >= start.to_pydatetime(), e.c.timestamp < end.to_pydatetime())
            .order_by(e.c.timestamp)
        )  # fmt: skip
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
        return frame

    def device_incidents(self, device_id: str, cohort: str | None, first_day: str, last_day: str) -> pd.DataFrame:
        """The device's own incidents and its cohort's incidents that touch the window."""
        i = incidents
        touches = [i.c.first_partition <= last_day, i.c.last_partition >= first_day]
        own = sa.and_(i.c.kind == "device", i.c.device_id == device_id)
        whose = own if cohort is None else sa.or_(own, sa.and_(i.c.kind == "cohort", i.c.cohort == cohort))
        frame = self._frame(
            sa.select(i.c.incident_id, i.c.kind, i.c.status, i.c.severity_level, i.c.max_severity, i.c.started_at,
                      i.c.last_anomaly_at, i.c.ended_at, i.c.top_features, i.c.cohort_incident_id)
            .where(whose, *touches)
            .order_by(i.c.started_at)
        )  # fmt: skip
        for column in ("started_at", "last_anomaly_at", "ended_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        return frame

    # --- quarantine ---------------------------------------------------------------------

    def quarantine_days(self, limit: int = 31) -> list[str]:
        q = quarantined_telemetry
        with self.store.engine.connect() as connection:
            return [
                d for (d,) in connection.execute(
                    sa.select(q.c.partition_date).group_by(q.c.partition_date).order_by(q.c.partition_date.desc()).limit(limit)
                )
            ]  # fmt: skip

    def quarantined_rows(self, day: str, rule: str | None, page: int = 1) -> tuple[pd.DataFrame, int]:
        q = quarantined_telemetry
        where = [q.c.partition_date == day] + ([q.c.rule == rule] if rule else [])
        with self.store.engine.connect() as connection:
            total = connection.execute(sa.select(sa.func.count()).select_from(q).where(*where)).scalar_one()
        rows = self._frame(
            sa.select(q.c.device_id, q.c.timestamp, q.c.rule, q.c.reason, q.c.row_json)
            .where(*where)
            .order_by(q.c.rule, q.c.device_id, q.c.timestamp)
            .limit(PAGE_ROWS)
            .offset((max(page, 1) - 1) * PAGE_ROWS)
        )
        return rows, int(total)


def day_window(day: str, days: int) -> tuple[str, str]:
    """[first, last] of ``days`` days ending with ``day``."""
    last = dt.date.fromisoformat(day)
    return (last - dt.timedelta(days=max(days, 1) - 1)).isoformat(), last.isoformat()
