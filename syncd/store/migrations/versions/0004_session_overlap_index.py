"""an index for bounded overlap checks: sessions by (admin_id, end, start)

A booking or a move checks only the admin's sessions overlapping the new interval
(``end > new start AND start < new end``), read from this index instead of every session
the admin ever had (issue 11).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the index."""
    op.create_index("ix_sessions_admin_end_start", "sessions", ["admin_id", "end", "start"])


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_sessions_admin_end_start", table_name="sessions")
