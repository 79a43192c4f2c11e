"""Real telemetry sources: SQL (SQLAlchemy), ODBC (pyodbc) and files (CSV / parquet by glob).

Every source takes a :class:`ColumnMapping` (contract name -> source column) and returns the
same contract as the synthetic source: ``device_id`` (text), UTC ``timestamp``, cohort
attributes, numeric metrics and, when mapped, the label column ``is_injected_anomaly``.

Safety rules shared by all of them:

- the partition window is passed as bound parameters (``:start`` / ``:end`` for SQLAlchemy,
  ``?`` for ODBC), never formatted into SQL; table and column names are quoted identifiers;
- reads are chunked (``chunk_rows``), each chunk is mapped and filtered before the next is read;
- credentials come only from environment variables (``dagster.EnvVar`` in ``build_resources``)
  and are masked in every message by :func:`anomaly_assets.redaction.redact`.
"""

from __future__ import annotations

import contextlib

import glob as globlib
from collections.abc import Iterator
from typing import Any, Literal

import dagster as dg
import pandas as pd

from anomaly_assets.core.contract import (
    SOURCE_ERROR,
    ContractError,
    TelemetryContract,
    contract_from_mapping,
    load_contract,
)
from anomaly_assets.core.timestamps import parse_utc, placeable, plausible_bounds
from anomaly_assets.redaction import redact, url_secrets
from anomaly_assets.resources.telemetry_source import TelemetrySource

LABEL_COLUMN = "is_injected_anomaly"  # the label name the training and registry assets look for


class TelemetrySourceError(RuntimeError):
    """The source cannot be read: the message names the source and host, never credentials."""


class ColumnMapping(dg.Config):
    """Which source column feeds each contract column (keys: contract names, values: source names).

    The rules are ``telemetry_contract.yaml``'s: a mapped metric or cohort column with a name the
    contract knows gets the contract's rule. ``rules`` overlays the contract in the file's own
    syntax, e.g. ``{"metrics": {"cpu": {"min": 0, "max": 100}, "bytes_total": {"counter": true}},
    "max_bad_row_share": 0.1}``: a metric's entry replaces its rule, other fields replace the
    contract's."""

    device_id: str = "device_id"
    timestamp: str = "timestamp"
    cohorts: dict[str, str] = {}
    metrics: dict[str, str] = {}
    label: str | None = None  # source column of 0/1 labels, delivered as ``is_injected_anomaly``
    rules: dict[str, Any] = {}

    def source_columns(self) -> list[str]:
        columns = [self.device_id, self.timestamp, *self.cohorts.values(), *self.metrics.values()]
        if self.label:
            columns.append(self.label)
        return list(dict.fromkeys(columns))

    def build_contract(self, name: str = "telemetry", base: TelemetryContract | None = None) -> TelemetryContract:
        """The YAML contract (``base``, default the packaged one) for this mapping's columns, with
        ``rules`` laid over it."""
        if not self.metrics:
            raise ValueError("the column mapping names no metrics: map at least one numeric column")
        spec = (base or load_contract()).to_mapping()
        known_metrics = spec["metrics"]
        overlay = dict(self.rules)
        metric_rules = overlay.pop("metrics", {}) or {}
        if not isinstance(metric_rules, dict):
            raise ContractError(f"{MAPPING_RULES}.metrics must map metric names to rules, got {metric_rules!r}")
        unmapped = sorted(set(metric_rules) - set(self.metrics))
        if unmapped:
            raise ContractError(f"{MAPPING_RULES}.metrics names metric(s) {unmapped} that the mapping does not map")
        for field in ("cohort_columns", "keys"):
            if field in overlay:
                raise ContractError(f"{MAPPING_RULES}.{field} is set by the mapping itself, not by rules")
        spec.update(overlay)
        spec["cohort_columns"] = list(self.cohorts)
        spec["metrics"] = {m: metric_rules.get(m, known_metrics.get(m, {})) for m in self.metrics}
        spec["optional_columns"] = [LABEL_COLUMN] if self.label else []
        spec["name"] = name
        return contract_from_mapping(spec, source=f"{MAPPING_RULES} over the telemetry contract")

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rename a chunk of source rows into the contract's names. Values stay as delivered: ids
        and cohorts are written as text, a datetime column is read as UTC, and everything else
        (a timestamp given as text, a metric cell that is not a number) is left for validation."""
        missing = [c for c in self.source_columns() if c not in frame.columns]
        if missing:
            raise TelemetrySourceError(f"the source lacks mapped column(s) {missing}; it has {list(frame.columns)}")
        out = pd.DataFrame(index=frame.index)
        out["device_id"] = _as_text(frame[self.device_id])
        stamps = frame[self.timestamp]
        is_datetime = pd.api.types.is_datetime64_any_dtype(stamps.dtype)
        out["timestamp"] = parse_utc(stamps) if is_datetime else stamps
        for name, column in self.cohorts.items():
            out[name] = _as_text(frame[column])
        for name, column in self.metrics.items():
            out[name] = frame[column]
        if self.label:
            out[LABEL_COLUMN] = pd.to_numeric(frame[self.label], errors="coerce").fillna(0).astype(bool)
        if SOURCE_ERROR in frame:  # what the source found wrong with a row (files: a row cut off)
            out[SOURCE_ERROR] = frame[SOURCE_ERROR]
        return out.reset_index(drop=True)


MAPPING_RULES = "ANOMALY_ASSETS_SOURCE_MAPPING rules"


def _as_text(values: pd.Series) -> pd.Series:
    return values.where(values.isna(), values.astype("str"))


# ---------------------------------------------------------------------------------------------
# Redaction: credentials never reach logs, metadata or errors (anomaly_assets.redaction).


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


def _as_utc(value: pd.Timestamp) -> pd.Timestamp:
    value = pd.Timestamp(value)
    return value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")


class _MappedSource(TelemetrySource):
    mapping: ColumnMapping
    chunk_rows: int = 50_000
    name: str = "telemetry"

    def _source_chunks(self, start: pd.Timestamp, end: pd.Timestamp) -> Iterator[pd.DataFrame]:
        """The source's rows for the window (and rows no window can place), ``chunk_rows`` at a
        time, as delivered."""
        raise NotImplementedError

    def _selects_window(self) -> bool:
        """Whether every row ``_source_chunks`` yields was selected for the window by the source
        itself (a database's WHERE); files yield every row and are selected here."""
        return True

    def read_window_chunks(self, start: pd.Timestamp, end: pd.Timestamp) -> Iterator[pd.DataFrame]:
        start, end = _as_utc(start), _as_utc(end)
        for chunk in self._source_chunks(start, end):
            part = self.mapping.apply(chunk)
            if not self._selects_window():
                part = part.loc[_claimed_by_window(part["timestamp"], start, end).to_numpy()]
            if len(part):
                yield part

    def read_window(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        parts = list(self.read_window_chunks(start, end))
        if not parts:
            return self.mapping.apply(pd.DataFrame({c: pd.Series(dtype=object) for c in self.mapping.source_columns()}))
        return pd.concat(parts, ignore_index=True)

    def contract(self) -> TelemetryContract:
        return self.mapping.build_contract(self.name)

    def label_columns(self) -> tuple[str, ...]:
        return (LABEL_COLUMN,) if self.mapping.label else ()


def _claimed_by_window(stamps: pd.Series, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    """Rows the window [start, end) takes: its own, and those no window can ever place (an
    unreadable, missing or implausible timestamp), which validation then quarantines."""
    parsed = parse_utc(stamps)
    return ((parsed >= start) & (parsed < end)).fillna(False) | ~placeable(parsed)


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
        return f"SQL source {redact(self.url)} ({what})"

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
        # The window's rows, and the rows no window can place (no timestamp, or an implausible one),
        # which the window takes so that validation quarantines them instead of their being lost.
        in_window = sa.and_(ts >= sa.bindparam("start"), ts < sa.bindparam("end"))
        unplaceable = sa.or_(ts.is_(None), ts < sa.bindparam("earliest"), ts >= sa.bindparam("latest"))
        # Ordered by device: the partition path then reads raw_telemetry a chunk of devices at a time.
        statement = sa.select(*columns).select_from(table).where(sa.or_(in_window, unplaceable))
        return statement.order_by(table.c[self.mapping.device_id], ts)

    def _source_chunks(self, start: pd.Timestamp, end: pd.Timestamp) -> Iterator[pd.DataFrame]:
        statement = self._statement()
        bounds = {"start": start, "end": end, **({} if self.query else plausible_bounds())}
        params = {k: v.to_pydatetime() for k, v in bounds.items()}
        if self.naive_utc_parameters:
            params = {k: v.replace(tzinfo=None) for k, v in params.items()}
        with _sql_connection(self.url, f"telemetry source '{self.name}' at {self._host()} ({redact(self.url)})") as connection:
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
        return f"ODBC source {redact(self.connection_string)} ({what})"

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
        # The window's rows and the rows no window can place (see SqlTelemetrySource._statement).
        where = f"({ts} >= ? AND {ts} < ?) OR {ts} IS NULL OR {ts} < ? OR {ts} >= ?"
        return f"SELECT {columns} FROM {_quote_identifier(self.table, q)} WHERE {where} ORDER BY {device}, {ts}"

    def _source_chunks(self, start: pd.Timestamp, end: pd.Timestamp) -> Iterator[pd.DataFrame]:
        sql = self._sql()
        secrets = url_secrets(self.connection_string)
        where = f"telemetry source '{self.name}' at {_odbc_host(self.connection_string)}"
        try:
            import pyodbc
        except ImportError as error:
            raise TelemetrySourceError(f"{where}: pyodbc cannot load ({error}); install unixodbc") from None
        try:
            connection = pyodbc.connect(self.connection_string, timeout=self.timeout_seconds, autocommit=True)
        except pyodbc.Error as error:
            raise TelemetrySourceError(
                redact(f"{where} ({self.connection_string}) is unreachable: {_first_line(error)}", secrets)
            ) from None
        try:
            cursor = connection.cursor()
            bounds = [start, end] if self.query else [start, end, *plausible_bounds().values()]
            cursor.execute(sql, *(b.tz_localize(None).to_pydatetime() for b in bounds))
            names = [d[0] for d in cursor.description]

            while rows := cursor.fetchmany(self.chunk_rows):
                yield pd.DataFrame.from_records([tuple(r) for r in rows], columns=names)
        except pyodbc.Error as error:
            raise TelemetrySourceError(redact(f"{where}: the read failed: {_first_line(error)}", secrets)) from None
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

    def _selects_window(self) -> bool:
        return False  # files hold every day: the window's rows are selected after reading

    def _source_chunks(self, start: pd.Timestamp, end: pd.Timestamp) -> Iterator[pd.DataFrame]:
        columns = self.mapping.source_columns()
        for path in self._files():
            if self._format_of(path) == "parquet":
                import pyarrow.parquet as pq

                parquet = pq.ParquetFile(path)
                groups = row_groups_for_window(parquet, self.mapping.timestamp, start, end)
                if not groups:
                    continue
                for batch in parquet.iter_batches(batch_size=self.chunk_rows, row_groups=groups, columns=columns):
                    yield batch.to_pandas().assign(**{SOURCE_ERROR: None})
            else:
                yield from read_csv_as_delivered(path, columns, self.chunk_rows)

    def read_window_chunks(self, start: pd.Timestamp, end: pd.Timestamp) -> Iterator[pd.DataFrame]:
        # A file that cannot be read or mapped is named, as before streaming.
        try:
            yield from super().read_window_chunks(start, end)
        except (OSError, ValueError) as error:
            raise TelemetrySourceError(f"telemetry source '{self.name}' ({self.glob}): {error}") from None


def row_groups_for_window(parquet, timestamp: str, start: pd.Timestamp, end: pd.Timestamp) -> list[int]:
    """The row groups of a parquet file that can hold rows the window [start, end) takes.

    A group is skipped only when its timestamp column is a datetime type, its statistics say it
    has no null, and its whole range is plausible (placeable) and outside the window: then none
    of its rows is the window's, nor one that no window can place. Any other group is read (a
    file of daily files' month is then read a day's groups at a time, not whole for each day)."""
    import pyarrow as pa

    groups = list(range(parquet.metadata.num_row_groups))
    names = parquet.schema_arrow.names
    if timestamp not in names or not pa.types.is_timestamp(parquet.schema_arrow.field(timestamp).type):
        return groups
    column = _leaf_index(parquet, timestamp)
    if column is None:
        return groups
    bounds = plausible_bounds()
    kept = []
    for group in groups:
        stats = parquet.metadata.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max or stats.null_count is None or stats.null_count > 0:
            kept.append(group)
            continue
        low, high = (_as_utc(pd.Timestamp(v)) for v in (stats.min, stats.max))
        plausible = low >= bounds["earliest"] and high < bounds["latest"]
        if not plausible or (high >= start and low < end):
            kept.append(group)
    return kept


def _leaf_index(parquet, name: str) -> int | None:
    """The parquet column index of top-level column ``name`` (None if it is nested)."""
    for index in range(parquet.metadata.num_columns):
        if parquet.schema.column(index).path == name:
            return index
    return None


def read_csv_as_delivered(path: str, columns: list[str], chunk_rows: int = 50_000) -> Iterator[pd.DataFrame]:
    """A CSV file's ``columns``, ``chunk_rows`` at a time (roughly), as delivered.

    Every cell is read as text; a column whose every non-empty cell in the chunk reads as a number
    becomes numeric, as CSV readers do, and any other column stays text (``"3.3%"``, ``"N/A"``),
    for validation to judge. Only an empty cell is missing. A row whose number of fields differs
    from the header's (a file cut off mid-row) is kept with the fields it has and the problem in
    the column ``source_error``, which validation quarantines."""
    import csv

    import pyarrow as pa
    import pyarrow.csv as pacsv

    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise ValueError(f"{path} is empty (no header row)")
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{path} lacks mapped column(s) {missing}; it has {header}")
    malformed: list[dict[str, Any]] = []

    def keep_malformed(row: Any) -> str:
        fields = next(csv.reader([row.text]), [])
        line = f"line {row.number}" if row.number is not None and row.number >= 0 else "a line"
        values = dict(zip(header, fields))
        malformed.append(
            {
                **{c: values.get(c) for c in columns},
                SOURCE_ERROR: f"{path} {line} has {row.actual_columns} field(s), the header {row.expected_columns}",
            }
        )
        return "skip"

    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=max(chunk_rows * 96, 1 << 20), use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=keep_malformed),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns,
            column_types={c: pa.string() for c in columns},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    for batch in reader:
        frame = batch.to_pandas().assign(**{SOURCE_ERROR: None})
        if malformed:
            frame = pd.concat([frame, pd.DataFrame(malformed, columns=frame.columns)], ignore_index=True)
            malformed.clear()
        yield frame.assign(**{c: _numbers_if_all_read(frame[c]) for c in columns})
    if malformed:  # rows cut off at the very end of the file
        frame = pd.DataFrame(malformed, columns=[*columns, SOURCE_ERROR])
        yield frame.assign(**{c: _numbers_if_all_read(frame[c]) for c in columns})


def _numbers_if_all_read(text: pd.Series) -> pd.Series:
    """A CSV column as numbers when every non-empty cell reads as one, else unchanged."""
    if text.dtype != object and not pd.api.types.is_string_dtype(text.dtype):
        return text
    numbers = pd.to_numeric(text, errors="coerce")
    return numbers if bool((numbers.notna() | text.isna()).all()) and text.notna().any() else text


class InventorySource(dg.ConfigurableResource):
    """Device metadata from the fleet management database (optional).

    ``url`` empty means not configured: ``device_inventory`` then skips with a warning.
    ``columns`` maps cohort attribute names to inventory columns; ``device_id`` is the key. Those
    attributes become cohort columns of the features (``validated_telemetry`` joins them).
    """

    url: str = ""
    table: str = "devices"
    device_id: str = "device_id"
    columns: dict[str, str] = {}

    def configured(self) -> bool:
        return bool(self.url)

    def cohort_attributes(self) -> tuple[str, ...]:
        """The attributes joined onto telemetry as cohort columns (none when not configured).
        They must be named: every column of a fleet table (serial numbers, owners) would otherwise
        become a cohort."""
        if not self.configured():
            return ()
        if not self.columns:
            raise ValueError(
                "the device inventory is configured without ANOMALY_ASSETS_INVENTORY_COLUMNS: name the cohort "
                'attributes to take from it as JSON {attribute: inventory column}, e.g. {"site": "site_code"}'
            )
        return tuple(self.columns)

    def describe(self) -> str:
        return f"inventory {redact(self.url)} (table {self.table})" if self.url else "inventory (not configured)"

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
            redact(f"{what} {kind}: {type(error).__name__}: {_first_line(error)}", url_secrets(url))
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
    source = InventorySource(url=dg.EnvVar("ANOMALY_ASSETS_INVENTORY_URL"), table=settings.inventory_table, columns=columns)
    source.cohort_attributes()  # a configuration without named attributes fails when the code location loads
    return source
