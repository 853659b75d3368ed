"""echoes and SEQUENCE: what syncd wrote since the feed was last read; the top SEQUENCE

- ``mirrors.echo_etag``: the etag of syncd's last write to the event, recorded with the
  write and cleared once a read of the feed has moved past it. While the event still
  carries it, the feed's next read leaves it out (neither fetched nor parsed), whichever
  worker or process reads next; a cycle that wrote need not read its own echoes before it
  ends where the feed reports every change since its cursor (Radicale, see
  ``adapters/caldav/feed.py``).
- ``ix_mirrors_calendar_echo``: a calendar's echoes, found without reading its mirrors.
- ``mirrors.top_sequence``: the highest SEQUENCE syncd wrote to the event or read from
  it. syncd's next write goes above it, even after a client put back an older revision
  with a lower SEQUENCE (NULL: none known).
- ``mirrors.written_start``, ``mirrors.written_end``: the times syncd last wrote or
  adopted there. An admin's edit of an event that still shows them is no move, even when
  the session has moved since (a platform change not yet written): it must not move the
  session back.

Existing mirrors start with neither.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column and its index."""
    with op.batch_alter_table("mirrors") as t:
        t.add_column(sa.Column("echo_etag", sa.String(200), nullable=True))
        t.add_column(sa.Column("top_sequence", sa.Integer(), nullable=True))
        t.add_column(sa.Column("written_start", sa.DateTime(), nullable=True))
        t.add_column(sa.Column("written_end", sa.DateTime(), nullable=True))
    op.create_index("ix_mirrors_calendar_echo", "mirrors", ["calendar_id", "echo_etag"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_mirrors_calendar_echo", table_name="mirrors")
    with op.batch_alter_table("mirrors") as t:
        t.drop_column("written_end")
        t.drop_column("written_start")
        t.drop_column("top_sequence")
        t.drop_column("echo_etag")
