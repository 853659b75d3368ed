"""change revisions: an idle cycle reads what changed, not every session (issue 11)

- ``admins.revision_seq``: the admin's change counter. Every insert or update of one of
  the admin's sessions takes the next value under the admin row's lock, so the values
  commit in the order they are taken.
- ``sessions.revision``: the counter value of the session's last change.
- ``calendars.synced_revision``, ``calendars.synced_id``: every session of the admin up
  to this (revision, id) has been planned in this calendar, in that order (a catch-up
  goes a few hundred sessions a pass); ``calendars.synced_rules``: the gesture rules it
  was planned with (other rules: the calendar catches up from the start again).
- ``mirrors.settled``: the event shows what the session wants; an unsettled mirror (a
  write planned, failed or refused) is planned again on every cycle.

Existing calendars start with no ``synced_revision``: their next cycles catch up on
every session once, a few hundred a pass.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the counters, the marks and their indexes."""
    with op.batch_alter_table("admins") as t:
        t.add_column(sa.Column("revision_seq", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("sessions") as t:
        t.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("calendars") as t:
        t.add_column(sa.Column("synced_revision", sa.Integer(), nullable=True))
        t.add_column(sa.Column("synced_id", sa.String(40), nullable=True))
        t.add_column(sa.Column("synced_rules", sa.String(32), nullable=True))
    with op.batch_alter_table("mirrors") as t:
        t.add_column(sa.Column("settled", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_sessions_admin_revision", "sessions", ["admin_id", "revision", "id"])
    op.create_index("ix_mirrors_calendar_settled", "mirrors", ["calendar_id", "settled"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_mirrors_calendar_settled", table_name="mirrors")
    op.drop_index("ix_sessions_admin_revision", table_name="sessions")
    with op.batch_alter_table("mirrors") as t:
        t.drop_column("settled")
    with op.batch_alter_table("calendars") as t:
        t.drop_column("synced_rules")
        t.drop_column("synced_id")
        t.drop_column("synced_revision")
    with op.batch_alter_table("sessions") as t:
        t.drop_column("revision")
    with op.batch_alter_table("admins") as t:
        t.drop_column("revision_seq")
