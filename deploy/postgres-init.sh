#!/bin/sh
# The stack's databases, and one role per service with a password from the environment. The
# postgres image runs this once, on an empty data directory (docker-entrypoint-initdb.d), as
# POSTGRES_USER; anomaly_assets_tests/test_security.py runs it against a local server.
#
#   role             database    may
#   dagster          dagster     own its database (Dagster's instance: runs, events, schedules)
#   mlflow           mlflow      own its database (MLflow's tracking and registry store)
#   results_owner    results     own the results schema: only it runs the migrations (`anomaly-assets migrate`)
#   results_writer   results     SELECT, INSERT, UPDATE, DELETE on the tables (the assets, the CLI);
#                                INSERT and SELECT only on audit_log; no CREATE, ALTER, DROP, TRUNCATE
#   results_reader   results     SELECT only (the explorer, analysts)
#
# No role but its own may connect to the dagster and mlflow databases. ANOMALY_ASSETS_PG_PREFIX
# (default empty) prefixes every role and database name, for a cluster shared with other stacks.
set -eu
: "${DAGSTER_DB_PASSWORD:?set DAGSTER_DB_PASSWORD}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD}"
: "${RESULTS_OWNER_PASSWORD:?set RESULTS_OWNER_PASSWORD}"
: "${RESULTS_WRITER_PASSWORD:?set RESULTS_WRITER_PASSWORD}"
: "${RESULTS_READER_PASSWORD:?set RESULTS_READER_PASSWORD}"
p="${ANOMALY_ASSETS_PG_PREFIX:-}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v dagster="${p}dagster" -v mlflow="${p}mlflow" -v results="${p}results" \
    -v owner="${p}results_owner" -v writer="${p}results_writer" -v reader="${p}results_reader" \
    -v dagster_password="$DAGSTER_DB_PASSWORD" -v mlflow_password="$MLFLOW_DB_PASSWORD" \
    -v owner_password="$RESULTS_OWNER_PASSWORD" -v writer_password="$RESULTS_WRITER_PASSWORD" \
    -v reader_password="$RESULTS_READER_PASSWORD" <<'SQL'
CREATE ROLE :"dagster" LOGIN PASSWORD :'dagster_password';
CREATE ROLE :"mlflow" LOGIN PASSWORD :'mlflow_password';
CREATE ROLE :"owner" LOGIN PASSWORD :'owner_password';
CREATE ROLE :"writer" LOGIN PASSWORD :'writer_password';
CREATE ROLE :"reader" LOGIN PASSWORD :'reader_password';

CREATE DATABASE :"dagster" OWNER :"dagster";
CREATE DATABASE :"mlflow" OWNER :"mlflow";
CREATE DATABASE :"results" OWNER :"owner";
-- PUBLIC may connect to (and make temporary tables in) every new database: only the roles named may.
REVOKE ALL ON DATABASE :"dagster", :"mlflow", :"results" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"results" TO :"writer", :"reader";

\connect :"results"
-- The owner (pg_database_owner owns schema public) creates the tables; nobody else may.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"writer", :"reader";
-- Tables the migrations create get these grants (migration 0003 takes UPDATE and DELETE on
-- audit_log back from the writer: the audit trail is append-only).
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"writer";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO :"writer";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"reader";
SQL
