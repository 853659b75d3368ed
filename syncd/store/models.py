"""SQLAlchemy 2 models. Instants are stored as naive UTC and read back timezone-aware."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    false,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column, object_session
from sqlalchemy.orm import Session as Orm


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC instant on every database (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class AdminRow(Base):
    __tablename__ = "admins"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    tz: Mapped[str] = mapped_column(String(64))
    reschedule_cutoff_s: Mapped[int] = mapped_column(Integer)
    cancel_cutoff_s: Mapped[int] = mapped_column(Integer)
    min_notice_s: Mapped[int] = mapped_column(Integer)
    choose_link_ttl_s: Mapped[int] = mapped_column(Integer)
    default_cancel_reason: Mapped[str] = mapped_column(Text)
    weekly: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    slot_minutes: Mapped[int] = mapped_column(Integer, default=60)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The admin's change counter (see :func:`next_revision`).
    revision_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class CustomerRow(Base):
    """A customer of one admin (the same email with two admins is two rows)."""

    __tablename__ = "customers"
    __table_args__ = (UniqueConstraint("admin_id", "email", name="uq_customers_admin_email"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admins.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    tz: Mapped[str] = mapped_column(String(64))


class SessionRow(Base):
    __tablename__ = "sessions"
    #: Overlap checks read only the admin's sessions ending after the new start (issue 11).
    __table_args__ = (
        Index("ix_sessions_admin_end_start", "admin_id", "end", "start"),
        Index("ix_sessions_admin_revision", "admin_id", "revision", "id"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admins.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    start: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    end: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(24), index=True)
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    cancel_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    choose_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The admin's change counter at the last insert or update (set by the ORM, never by hand).
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class HistoryRow(Base):
    __tablename__ = "session_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(24))
    action: Mapped[str] = mapped_column(String(40))
    from_start: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    to_start: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class CalendarRow(Base):
    __tablename__ = "calendars"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admins.id"), index=True)
    backend: Mapped[str] = mapped_column(String(16))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    busy_only: Mapped[bool] = mapped_column(Boolean, default=False)
    cursor: Mapped[str | None] = mapped_column(Text, nullable=True)
    cursor_version: Mapped[int] = mapped_column(Integer, default=1)
    breaker_tripped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    paused_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(80), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    push: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: The last full listing compared with the mirror (``[sync] reconcile_interval``).
    reconciled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Removals applied lately, session id → ISO instant (the breaker's sliding window).
    recent_removals: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: Every session of the admin up to this revision has been planned here (None: none).
    synced_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: With ``synced_revision``: the last session id planned at that revision (a catch-up
    #: goes in (revision, id) order, so ties such as revision 0 are split exactly).
    synced_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    #: The gesture rules those plans were made with (a change plans everything again).
    synced_rules: Mapped[str | None] = mapped_column(String(32), nullable=True)


class MirrorRow(Base):
    """What syncd last wrote for one session in one calendar."""

    __tablename__ = "mirrors"
    __table_args__ = (
        UniqueConstraint("calendar_id", "session_id"),
        UniqueConstraint("calendar_id", "remote_id"),
        Index("ix_mirrors_calendar_settled", "calendar_id", "settled"),
        Index("ix_mirrors_calendar_echo", "calendar_id", "echo_etag"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    calendar_id: Mapped[int] = mapped_column(ForeignKey("calendars.id"), index=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    remote_id: Mapped[str] = mapped_column(String(400))
    written_etag: Mapped[str | None] = mapped_column(String(200), nullable=True)
    written_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seen_etag: Mapped[str | None] = mapped_column(String(200), nullable=True)
    gone: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The event shows what the session wants: no cycle needs to plan it until it changes.
    settled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: The etag of syncd's write since the feed was last read (its echo there), else None.
    echo_etag: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: The highest SEQUENCE syncd wrote to the event or read from it (None: none known).
    top_sequence: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: The times syncd last wrote or adopted there (None: not known).
    written_start: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    written_end: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class IntentRow(Base):
    """A detected admin gesture waiting for the settle window."""

    __tablename__ = "intents"
    __table_args__ = (UniqueConstraint("calendar_id", "session_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    calendar_id: Mapped[int] = mapped_column(ForeignKey("calendars.id"), index=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(24))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    observed_hash: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    held: Mapped[bool] = mapped_column(Boolean, default=False)


class OutboxRow(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    session_id: Mapped[str | None] = mapped_column(String(40), index=True, nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(320))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(80), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    message_id: Mapped[str] = mapped_column(String(200))
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ChoiceTokenRow(Base):
    """A "choose a new time" link: only the SHA-256 of the token is kept."""

    __tablename__ = "choice_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expiry_notified: Mapped[bool] = mapped_column(Boolean, default=False)


def next_revision(connection: Connection, admin_id: int, count: int = 1) -> int:
    """The admin's next change number (the last of the next ``count``).

    The counter is an UPDATE of the admin row, whose lock is held until the transaction
    ends: a later number cannot commit before an earlier one, so a reader that has seen
    revision N has seen every change numbered below it.
    """
    stmt = (
        update(AdminRow)
        .where(AdminRow.id == admin_id)
        .values(revision_seq=AdminRow.revision_seq + count)
        .returning(AdminRow.revision_seq)
    )
    return int(connection.execute(stmt).scalar_one())


#: ``orm.info`` key: ids of the session rows numbered for the flush under way.
_NUMBERED = "revision_numbered"


@event.listens_for(Orm, "before_flush")
def _number_in_blocks(orm: Orm, _context: Any, _instances: Any) -> None:
    """Number every session a flush writes, one UPDATE an admin for all of them (a commit
    of a hundred gestures took a hundred); the row hooks below number what this missed."""
    by_admin: dict[int, list[SessionRow]] = {}
    for row in (*orm.new, *orm.dirty):
        if (
            isinstance(row, SessionRow)
            and row.admin_id is not None
            and (row in orm.new or orm.is_modified(row, include_collections=False))
        ):
            by_admin.setdefault(row.admin_id, []).append(row)
    numbered: set[int] = orm.info.setdefault(_NUMBERED, set())
    numbered.clear()
    for admin_id, rows in by_admin.items():
        if len(rows) < 2:
            continue  # the row hook takes its number as before
        last = next_revision(orm.connection(), admin_id, len(rows))
        for i, row in enumerate(sorted(rows, key=lambda r: r.id)):
            row.revision = last - len(rows) + 1 + i
            numbered.add(id(row))


def _numbered(row: SessionRow) -> bool:
    orm = object_session(row)
    return orm is not None and id(row) in orm.info.get(_NUMBERED, ())


@event.listens_for(SessionRow, "before_insert")
def _number_new_session(
    _mapper: Mapper[SessionRow], connection: Connection, row: SessionRow
) -> None:
    if not _numbered(row):
        row.revision = next_revision(connection, row.admin_id)


@event.listens_for(SessionRow, "before_update")
def _number_changed_session(
    _mapper: Mapper[SessionRow], connection: Connection, row: SessionRow
) -> None:
    orm = object_session(row)
    if _numbered(row):
        return
    if orm is not None and orm.is_modified(row, include_collections=False):
        row.revision = next_revision(connection, row.admin_id)


@event.listens_for(Orm, "after_flush")
def _numbers_used(orm: Orm, _context: Any) -> None:
    orm.info.pop(_NUMBERED, None)
