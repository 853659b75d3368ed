"""calendars: when the last full reconciliation ran, and removals in the breaker's window

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calendars", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reconciled_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("recent_removals", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calendars", schema=None) as batch_op:
        batch_op.drop_column("recent_removals")
        batch_op.drop_column("reconciled_at")
