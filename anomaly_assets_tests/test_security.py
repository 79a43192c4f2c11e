"""Least privilege in PostgreSQL: deploy/postgres-init.sh run against the machine's server (roles
and databases with a unique prefix, dropped afterwards). The results writer and the read-only
role may do what their services need and nothing more; the migrations run under the owner."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import sqlalchemy as sa

from anomaly_assets import audit
from anomaly_assets.cli import main
from anomaly_assets.core.audit import Actor
from anomaly_assets.resources.results_store import ResultsStore, SchemaNotMigrated, anomaly_events
from anomaly_assets_tests.conftest import provisioned_roles


@pytest.fixture(scope="module")
def cluster():
    with provisioned_roles() as url:
        yield url


def _denied(url: str, statement: str) -> str:
    """Runs ``statement`` and returns PostgreSQL's error code (42501: insufficient privilege)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(statement))
    except sa.exc.DBAPIError as error:
        return getattr(error.orig, "pgcode", None) or type(error.orig).__name__
    finally:
        engine.dispose()
    return "allowed"


def _row() -> pd.DataFrame:
    return pd.DataFrame([{
        "partition_date": "2026-11-08", "device_id": "dev-1", "timestamp": pd.Timestamp("2026-11-08T03:00", tz="UTC"),
        "cohort": "a", "score": 0.9, "severity": 3.0, "top_feature_1": "cpu", "top_feature_2": None, "top_feature_3": None,
        "model_name": "m", "model_version": "1",
    }])  # fmt: skip


def test_each_role_may_do_what_its_service_needs_and_no_more(cluster, restore_environ, capsys):
    owner, writer, reader = (cluster(r, "results") for r in ("results_owner", "results_writer", "results_reader"))

    # Before the owner migrates, the writer cannot create the schema, and says what to do.
    with pytest.raises(SchemaNotMigrated, match="anomaly-assets migrate"):
        _ = ResultsStore(url=writer).engine

    # The migrations run under the owner role, through the CLI.
    os.environ.update({"ANOMALY_ASSETS_ENV": "production", "ANOMALY_ASSETS_RESULTS_URL": owner})
    assert main(["migrate"]) == 0
    assert "migrated empty -> 0003" in capsys.readouterr().out

    # The writer replaces partitions (DELETE + COPY) and appends to the audit trail ...
    store = ResultsStore(url=writer)
    assert store.replace_partitions(anomaly_events, ["2026-11-08"], _row()) == 1
    audit.record(store, Actor("alice", "cli"), "champion.promote", "champion", "version 1 -> 2")
    store.engine.dispose()
    # ... but alters no table, drops none, creates none, and cannot rewrite the audit trail.
    assert _denied(writer, "DROP TABLE anomaly_events") == "42501"
    assert _denied(writer, "ALTER TABLE anomaly_events ADD COLUMN note text") == "42501"
    assert _denied(writer, "CREATE TABLE scratch (x int)") == "42501"
    assert _denied(writer, "TRUNCATE anomaly_events") == "42501"
    assert _denied(writer, "DELETE FROM audit_log") == "42501"
    assert _denied(writer, "UPDATE audit_log SET who = 'mallory'") == "42501"
    assert _denied(writer, "UPDATE alembic_version SET version_num = '0001'") == "42501"

    # The read-only role reads (through ResultsStore, as the explorer does) and nothing else.
    read_only = ResultsStore(url=reader)
    assert read_only.count(anomaly_events) == 1
    assert [r["who"] for r in audit.entries(read_only)] == ["alice"]
    read_only.engine.dispose()
    assert _denied(reader, "INSERT INTO audit_log (at, who, via, action, subject, detail) VALUES (now(), 'x', 'cli', 'a', 's', 'd')") == "42501"
    assert _denied(reader, "DELETE FROM anomaly_events") == "42501"
    assert _denied(reader, "DROP TABLE anomaly_events") == "42501"

    # Other services' roles cannot even connect to the results database, nor to each other's.
    assert _denied(cluster("dagster", "results"), "SELECT 1") != "allowed"
    assert _denied(cluster("results_writer", "mlflow"), "SELECT 1") != "allowed"
    assert _denied(cluster("dagster", "dagster"), "CREATE TABLE runs_probe (x int)") == "allowed"  # it owns its own
