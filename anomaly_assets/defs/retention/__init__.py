"""Retention: purge old results in batches, archive old model versions."""
