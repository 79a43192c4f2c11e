"""The anomaly explorer: a read-only web app over the results database (incidents, devices, days,
quarantine). ``anomaly-assets explore`` serves it; it imports no Dagster internals."""
