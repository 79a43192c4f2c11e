"""audit trail: who changed the champion, ran retention or changed the alert channels

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Default privileges (deploy/postgres-init.sh) give the results writer UPDATE and DELETE on every
# table the owner creates. The audit trail is append-only and the schema's revision is the
# owner's to move, so those grants are taken back from every role but the one migrating.
_OWNER_ONLY = {"audit_log": "UPDATE, DELETE, TRUNCATE", "alembic_version": "INSERT, UPDATE, DELETE, TRUNCATE"}
_REVOKE = """
DO $$
DECLARE grantee_name text;
BEGIN
  FOR grantee_name IN
    SELECT DISTINCT grantee FROM information_schema.role_table_grants
    WHERE table_schema = current_schema() AND table_name = '{table}' AND grantee NOT IN (current_user, 'PUBLIC')
  LOOP
    EXECUTE format('REVOKE {privileges} ON {table} FROM %I', grantee_name);
  END LOOP;
END $$;
"""


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("who", sa.String(length=256), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
    )
    op.create_index("ix_audit_log_action_at", "audit_log", ["action", "at"])
    if op.get_bind().dialect.name == "postgresql":
        for table, privileges in _OWNER_ONLY.items():
            op.execute(_REVOKE.format(table=table, privileges=privileges))


def downgrade() -> None:
    op.drop_index("ix_audit_log_action_at", table_name="audit_log")
    op.drop_table("audit_log")
