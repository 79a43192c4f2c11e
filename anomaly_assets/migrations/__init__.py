"""Alembic migrations of the results database (SQLite embedded, PostgreSQL in production)."""
