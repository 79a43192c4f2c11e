"""indexes for the anomaly explorer's device and cohort lookups

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A device's days (device page), a cohort's incidents and a cohort incident's devices.
    op.create_index("ix_device_daily_summary_device", "device_daily_summary", ["device_id", "partition_date"])
    op.create_index("ix_incidents_cohort", "incidents", ["cohort", "started_at"])
    op.create_index("ix_incidents_cohort_incident", "incidents", ["cohort_incident_id"])
    op.create_index("ix_quarantined_partition_rule", "quarantined_telemetry", ["partition_date", "rule"])


def downgrade() -> None:
    op.drop_index("ix_quarantined_partition_rule", table_name="quarantined_telemetry")
    op.drop_index("ix_incidents_cohort_incident", table_name="incidents")
    op.drop_index("ix_incidents_cohort", table_name="incidents")
    op.drop_index("ix_device_daily_summary_device", table_name="device_daily_summary")
