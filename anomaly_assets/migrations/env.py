"""Alembic environment: runs on the connection ResultsStore hands over (see results_store.upgrade)."""

from alembic import context

from anomaly_assets.resources.results_store import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
