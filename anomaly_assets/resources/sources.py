"""Real telemetry sources: SQL (SQLAlchemy), ODBC (pyodbc) and files (CSV / parquet by glob).

Every source takes a :class:`ColumnMapping` (contract name -> source column) and returns the
same contract as the synthetic source: ``device_id`` (text), UTC ``timestamp``, cohort
attributes, numeric metrics and, when mapped, the label column ``is_injected_anomaly``.

Safety rules shared by all of them:

- the partition window is passed as bound parameters (``:start`` / ``:end`` for SQLAlchemy,
  ``?`` for ODBC), never formatted into SQL; table and column names are quoted identifiers;
- reads are chunked (``chunk_rows``), each chunk is mapped and filtered before the next is read;
- credentials come only from environment variables (``dagster.EnvVar`` in ``build_resources``)
  and are redacted from every message: :func:`redact_url`, :func:`redact_odbc`.
"""

from __future__ import annotations

import contextlib

import glob as globlib
import re
from collections.abc import Iterable, Iterator
from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd

from anomaly_assets.core.contract import TelemetryContract
from anomaly_assets.resources.telemetry_source import TelemetrySource

LABEL_COLUMN = "is_injected_anomaly"  # the label name the training and registry assets look for


class TelemetrySourceError(RuntimeError):
    """The source cannot be read: the message names the source and host, never credentials."""


class ColumnMapping(dg.Config):
    """Which source column feeds each contract column (keys: contract names, values: source names)."""

    device_id: str = "device_id"
    timestamp: str = "timestamp"
    cohorts: dict[str, str] = {}
    metrics: dict[str, str] = {}
    label: str | None = None  # source column of 0/1 labels, delivered as ``is_injected_anomaly``
    # Optional inclusive ranges per metric (contract name -> [min, max]) for validation.
    ranges: dict[str, list[float]] = {}

    def source_columns(self) -> list[str]:
        columns = [self.device_id, self.timestamp, *self.cohorts.values(), *self.metrics.values()]
        if self.label:
            columns.append(self.label)
        return list(dict.fromkeys(columns))

    def build_contract(self, name: str = "telemetry") -> TelemetryContract:
        if not self.metrics:
            raise ValueError("the column mapping names no metrics: map at least one numeric column")
        return TelemetryContract(
            cohort_columns=tuple(self.cohorts),
            metrics=tuple(self.metrics),
            ranges={m: (float(lo), float(hi)) for m, (lo, hi) in self.ranges.items()},
            optional_columns=(LABEL_COLUMN,) if self.label else (),
            name=name,
        )

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rename and type a chunk of source rows into the contract's shape."""
        missing = [c for c in self.source_columns() if c not in frame.columns]
        if missing:
            raise TelemetrySourceError(f"the source lacks mapped column(s) {missing}; it has {list(frame.columns)}")
        out = pd.DataFrame(index=frame.index)
        device = frame[self.device_id]
        out["device_id"] = device.where(device.isna(), device.astype("str"))
        out["timestamp"] = to_utc(frame[self.timestamp])
        for name, column in self.cohorts.items():
            values = frame[column]
            out[name] = values.where(values.isna(), values.astype("str"))
        for name, column in self.metrics.items():
            out[name] = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
        if self.label:
            out[LABEL_COLUMN] = pd.to_numeric(frame[self.label], errors="coerce").fillna(0).astype(bool)
        return out.reset_index(drop=True)


def to_utc(values: pd.Series) -> pd.Series:
    """Any timestamp column as tz-aware UTC; naive values are taken to be UTC already."""
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="mixed") if values.dtype == object or str(
        values.dtype
    ).startswith(("str", "string")) else pd.to_datetime(values, utc=True, errors="coerce")
    return parsed.dt.as_unit("ns")


# ---------------------------------------------------------------------------------------------
# Redaction: credentials never reach logs, metadata or errors.


def redact_url(url: str) -> str:
    """An SQLAlchemy URL with its password masked (``***``)."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


_ODBC_SECRET = re.compile(r"(?i)\b(PWD|PASSWORD)\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)")


def redact_odbc(connection_string: str) -> str:
    """An ODBC connection string with ``PWD=`` / ``Password=`` masked."""
    return _ODBC_SECRET.sub(lambda m: f"{m.group(1)}=***", str(connection_string))


def _odbc_password(connection_string: str) -> str | None:
    match = _ODBC_SECRET.search(connection_string)
    if not match:
        return None
    value = match.group(2).strip()
    if value.startswith("{") and value.endswith("}"):
        value = value[1:-1].replace("}}", "}")
    return value or None


def _scrub(message: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


def _first_line(error: BaseException) -> str:
    """The driver's own message (the innermost cause), first line only: no SQL echo."""
    seen = 0
    while seen < 5 and (getattr(error, "orig", None) or error.__cause__) is not None:
        error = getattr(error, "orig", None) or error.__cause__
        seen += 1
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _odbc_host(connection_string: str) -> str:
    fields = {k.strip().upper(): v.strip() for k, _, v in (p.partition("=") for p in connection_string.split(";")) if k}
    host = fields.get("SERVER") or fields.get("SERVERNAME") or fields.get("HOST")
    if host:
        port = fields.get("PORT")
        return f"{host}:{port}" if port else host
    return f"DSN {fields['DSN']}" if "DSN" in fields else "unknown host"


def _quote_identifier(name: str, quote: str = '"') -> str:
    """A table name (optionally schema-qualified) as quoted identifiers; quotes inside are doubled."""
    return ".".join(quote + part.replace(quote, quote * 2) + quote for part in name.split("."))


def _window_filter(frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    keep = (frame["timestamp"] >= start) & (frame["timestamp"] < end)
    return frame.loc[keep.fillna(False).to_numpy(dtype=bool)]


def _as_utc(value: pd.Timestamp) -> pd.Timestamp:
    value = pd.Timestamp(value)
    return value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")


class _MappedSource(TelemetrySource):
    mapping: ColumnMapping
    chunk_rows: int = 50_000
    name: str = "telemetry"

    def _source_chunks(self, start: pd.Timestamp, end: pd.Timestamp) -> Iterator[pd.DataFrame]:
        """The source's own rows for the window, ``chunk_rows`` at a time, as delivered."""
        raise NotImplementedError

    def read_window_chunks(self, start: pd.Timestamp, end: pd.Timestamp) -> Iterator[pd.DataFrame]:
        start, end = _as_utc(start), _as_utc(end)
        for chunk in self._source_chunks(start, end):
            part = _window_filter(self.mapping.apply(chunk), start, end)
            if len(part):
                yield part

    def read_window(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        parts = list(self.read_window_chunks(start, end))
        if not parts:
            return self.mapping.apply(pd.DataFrame({c: pd.Series(dtype=object) for c in self.mapping.source_columns()}))
        return pd.concat(parts, ignore_index=True).sort_values(["device_id", "timestamp"], ignore_index=True)

    def contract(self) -> TelemetryContract:
        return self.mapping.build_contract(self.name)

    def label_columns(self) -> tuple[str, ...]:
        return (LABEL_COLUMN,) if self.mapping.label else ()


class SqlTelemetrySource(_MappedSource):
    """Rows from a table or a query through SQLAlchemy (``mssql+pyodbc://``, PostgreSQL, SQLite, ...).

    ``query`` must select the mapped columns and use the bound parameters ``:start`` and ``:end``
    (``WHERE ts >= :start AND ts < :end``). With ``table`` the query is built from quoted names.
    """

    url: str
    table: str | None = None
    query: str | None = None
    # Bind the window as naive UTC datetimes (for columns without a time zone, e.g. SQLite text).
    naive_utc_parameters: bool = False

    def describe(self) -> str:
        what = f"table {self.table}" if self.table else "query"
        return f"SQL source {redact_url(self.url)} ({what})"

    def _host(self) -> str:
        import sqlalchemy as sa

        try:
            parsed = sa.engine.make_url(self.url)
        except Exception:
            return "unparseable URL"
        if parsed.host:
            return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host
        return f"{parsed.drivername} database {parsed.database or '(memory)'}"

    def _statement(self):
        import sqlalchemy as sa

        if bool(self.table) == bool(self.query):
            raise ValueError("SqlTelemetrySource needs exactly one of table or query")
        if self.query:
            text = sa.text(self.query)
            if not {"start", "end"} <= set(text._bindparams):
                raise ValueError("the telemetry query must use the bound parameters :start and :end")
            return text
        schema, _, name = self.table.rpartition(".")
        columns = [sa.column(c) for c in self.mapping.source_columns()]
        table = sa.table(name, *columns, schema=schema or None)
        ts = table.c[self.mapping.timestamp]
        # Ordered by device: the partition path then reads raw_telemetry a chunk of devices at a time.
        statement = sa.select(*columns).select_from(table).where(ts >= sa.bindparam("start"), ts < sa.bindparam("end"))
        return statement.order_by(table.c[self.mapping.device_id], ts)

    def _source_chunks(self, start: pd.Timestamp, end: pd.Timestamp) -> Iterator[pd.DataFrame]:
        statement = self._statement()
        params = {"start": start.to_pydatetime(), "end": end.to_pydatetime()}
        if self.naive_utc_parameters:
            params = {k: v.replace(tzinfo=None) for k, v in params.items()}
        with _sql_connection(self.url, f"telemetry source '{self.name}' at {self._host()} ({redact_url(self.url)})") as connection:
            yield from pd.read_sql(statement, connection, params=params, chunksize=self.chunk_rows)


class OdbcTelemetrySource(_MappedSource):
    """Rows through pyodbc from a connection string or DSN (``DSN=fleet;UID=..;PWD=..``).

    ``query`` uses two ``?`` placeholders, the window start and end (naive UTC datetimes).
    """

    connection_string: str
    table: str | None = None
    query: str | None = None
    identifier_quote: str = '"'  # '[' is not supported; SQL Server accepts '"' with QUOTED_IDENTIFIER ON
    timeout_seconds: int = 10

    def describe(self) -> str:
        what = f"table {self.table}" if self.table else "query"
        return f"ODBC source {redact_odbc(self.connection_string)} ({what})"

    def _sql(self) -> str:
        if bool(self.table) == bool(self.query):
            raise ValueError("OdbcTelemetrySource needs exactly one of table or query")
        if self.query:
            if self.query.count("?") != 2:
                raise ValueError("the ODBC telemetry query must hold exactly two '?' placeholders: start, end")
            return self.query
        q = self.identifier_quote
        columns = ", ".join(_quote_identifier(c, q) for c in self.mapping.source_columns())
        ts = _quote_identifier(self.mapping.timestamp, q)
        device = _quote_identifier(self.mapping.device_id, q)
        return f"SELECT {columns} FROM {_quote_identifier(self.table, q)} WHERE {ts} >= ? AND {ts} < ? ORDER BY {device}, {ts}"

    def _source_chunks(self, start: pd.Timestamp, end: pd.Timestamp) -> Iterator[pd.DataFrame]:
        sql = self._sql()
        secrets = [_odbc_password(self.connection_string)]
        where = f"telemetry source '{self.name}' at {_odbc_host(self.connection_string)}"
        try:
            import pyodbc
        except ImportError as error:
            raise TelemetrySourceError(f"{where}: pyodbc cannot load ({error}); install unixodbc") from None
        try:
            connection = pyodbc.connect(self.connection_string, timeout=self.timeout_seconds, autocommit=True)
        except pyodbc.Error as error:
            raise TelemetrySourceError(
                _scrub(f"{where} ({redact_odbc(self.connection_string)}) is unreachable: {_first_line(error)}", secrets)
            ) from None
        try:
            cursor = connection.cursor()
            cursor.execute(sql, start.tz_localize(None).to_pydatetime(), end.tz_localize(None).to_pydatetime())
            names = [d[0] for d in cursor.description]

            while rows := cursor.fetchmany(self.chunk_rows):
                yield pd.DataFrame.from_records([tuple(r) for r in rows], columns=names)
        except pyodbc.Error as error:
            raise TelemetrySourceError(_scrub(f"{where}: the read failed: {_first_line(error)}", secrets)) from None
        finally:
            connection.close()


class FileTelemetrySource(_MappedSource):
    """CSV or parquet files matched by a glob; rows are selected by the timestamp column."""

    glob: str
    format: Literal["csv", "parquet", "auto"] = "auto"

    def describe(self) -> str:
        return f"files {self.glob} ({self.format})"

    def _files(self) -> list[str]:
        files = sorted(globlib.glob(self.glob, recursive=True))
        if not files:
            raise TelemetrySourceError(f"telemetry source '{self.name}': no file matches {self.glob}")
        return files

    def _format_of(self, path: str) -> str:
        if self.format != "auto":
            return self.format
        return "parquet" if path.endswith((".parquet", ".pq")) else "csv"

    def _source_chunks(self, start: pd.Timestamp, end: pd.Timestamp) -> Iterator[pd.DataFrame]:
        columns = self.mapping.source_columns()
        for path in self._files():
            if self._format_of(path) == "parquet":
                import pyarrow.parquet as pq

                parquet = pq.ParquetFile(path)
                for batch in parquet.iter_batches(batch_size=self.chunk_rows, columns=columns):
                    yield batch.to_pandas()
            else:
                yield from pd.read_csv(path, usecols=columns, chunksize=self.chunk_rows, dtype={self.mapping.device_id: str})

    def read_window_chunks(self, start: pd.Timestamp, end: pd.Timestamp) -> Iterator[pd.DataFrame]:
        # A file that cannot be read or mapped is named, as before streaming.
        try:
            yield from super().read_window_chunks(start, end)
        except (OSError, ValueError) as error:
            raise TelemetrySourceError(f"telemetry source '{self.name}' ({self.glob}): {error}") from None


class InventorySource(dg.ConfigurableResource):
    """Device metadata from the fleet management database (optional).

    ``url`` empty means not configured: ``device_inventory`` then skips with a warning.
    ``columns`` maps cohort attribute names to inventory columns; ``device_id`` is the key.
    """

    url: str = ""
    table: str = "devices"
    device_id: str = "device_id"
    columns: dict[str, str] = {}

    def configured(self) -> bool:
        return bool(self.url)

    def describe(self) -> str:
        return f"inventory {redact_url(self.url)} (table {self.table})" if self.url else "inventory (not configured)"

    def read(self) -> pd.DataFrame:
        import sqlalchemy as sa

        if not self.url:
            raise TelemetrySourceError("the device inventory is not configured (ANOMALY_ASSETS_INVENTORY_URL is empty)")
        schema, _, name = self.table.rpartition(".")
        wanted = [self.device_id, *self.columns.values()] if self.columns else None
        with _sql_connection(self.url, self.describe()) as connection:
            if wanted:
                table = sa.table(name, *[sa.column(c) for c in dict.fromkeys(wanted)], schema=schema or None)
                frame = pd.read_sql(sa.select(*table.c), connection)
            else:
                frame = pd.read_sql(sa.select(sa.text("*")).select_from(sa.table(name, schema=schema or None)), connection)
        rename = {self.device_id: "device_id", **{v: k for k, v in self.columns.items()}}
        frame = frame.rename(columns=rename)
        frame["device_id"] = frame["device_id"].astype("str")
        return frame


@contextlib.contextmanager
def _sql_connection(url: str, what: str):
    """A connection to ``url``. Driver and SQLAlchemy errors become a TelemetrySourceError that
    names ``what`` and never carries the password."""
    import sqlalchemy as sa

    try:
        password = sa.engine.make_url(url).password
    except Exception:
        password = None
    engine = None
    try:
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            yield connection
    except TelemetrySourceError:
        raise
    except (sa.exc.SQLAlchemyError, OSError, ImportError) as error:
        kind = "unreachable or refused the read" if isinstance(error, sa.exc.OperationalError) else "failed"
        raise TelemetrySourceError(
            _scrub(f"{what} {kind}: {type(error).__name__}: {_first_line(error)}", [password])
        ) from None
    finally:
        if engine is not None:
            engine.dispose()


# ---------------------------------------------------------------------------------------------
# Selection from settings (called by anomaly_assets.resources.build_resources).


def _mapping_from_json(text: str, what: str) -> dict:
    import json

    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")
    return value


def build_telemetry_source(settings) -> TelemetrySource:
    """The configured real source. The URL / connection string is a ``dg.EnvVar``: resolved when the
    resource initializes, never stored in settings, logs or metadata."""
    mapping = ColumnMapping(**_mapping_from_json(settings.source_mapping, "ANOMALY_ASSETS_SOURCE_MAPPING"))
    table = settings.source_table or None
    query = settings.source_query or None
    if settings.source == "sql":
        return SqlTelemetrySource(url=dg.EnvVar("ANOMALY_ASSETS_SOURCE_URL"), table=table, query=query, mapping=mapping)
    if settings.source == "odbc":
        return OdbcTelemetrySource(
            connection_string=dg.EnvVar("ANOMALY_ASSETS_SOURCE_ODBC"), table=table, query=query, mapping=mapping
        )
    if settings.source == "files":
        if not settings.source_glob:
            raise ValueError("ANOMALY_ASSETS_SOURCE=files needs ANOMALY_ASSETS_SOURCE_GLOB")
        return FileTelemetrySource(glob=settings.source_glob, format=settings.source_format, mapping=mapping)
    raise ValueError(f"unknown telemetry source {settings.source!r}")


def build_inventory_source(settings) -> InventorySource:
    import os

    columns = _mapping_from_json(settings.inventory_columns, "ANOMALY_ASSETS_INVENTORY_COLUMNS")
    if not os.environ.get("ANOMALY_ASSETS_INVENTORY_URL"):
        return InventorySource(table=settings.inventory_table, columns=columns)
    return InventorySource(url=dg.EnvVar("ANOMALY_ASSETS_INVENTORY_URL"), table=settings.inventory_table, columns=columns)
