"""Read-only listings of a SQLite file over the standard library's ``sqlite3`` (issue 11).

``syncd session list``, ``calendar list`` and ``status`` read a few hundred rows: over
SQLAlchemy they cost a fresh process about 0.5 s of CPU, nearly all of it importing
SQLAlchemy (``import sqlalchemy`` alone is 0.25 s, ``sqlalchemy.orm`` and the models
another 0.1 s), against a goal of 0.3 s for the whole command. ``sqlite3`` is in the
interpreter already.

The rule that keeps this path from drifting away from the canonical one (the services over
SQLAlchemy): every function here answers the plain case or returns ``None``, and on
``None`` the caller asks the canonical path, which answers or raises the one error message
of that case (a URL that is not a plain SQLite file, PostgreSQL, a missing file, a file
that is not a database, no schema yet, an unknown admin, a bad ``--status``). No error is
worded twice here. The column names are those of :mod:`syncd.store.models`;
tests/integration/test_startup_listing.py compares every answer with the canonical path's.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from syncd.domain.model import Actor, Customer, HistoryEntry, Session, Status

T = TypeVar("T")

#: ``sqlite:///path`` (relative) or ``sqlite:////path``: no query, no escapes, no memory.
_PLAIN_SQLITE = re.compile(r"sqlite(?:\+pysqlite)?:///([^?#%]+)")
#: The outbox rows ``status`` counts as not sent yet (as :mod:`syncd.app.status` does).
UNSENT = ("pending", "sending")


@dataclass(frozen=True)
class CalendarRecord:
    """The columns of a ``calendars`` row the listings show (as the ORM row has them)."""

    id: int
    backend: str
    settings: dict[str, Any]
    busy_only: bool
    last_sync_at: datetime | None
    last_error: str | None
    breaker_tripped_at: datetime | None
    paused_reason: str | None
    lease_owner: str | None
    lease_until: datetime | None


@dataclass(frozen=True)
class IntentRecord:
    """A pending gesture as ``status`` shows it."""

    calendar_id: int
    session_id: str
    kind: str
    first_seen: datetime
    held: bool


@dataclass(frozen=True)
class StatusRows:
    """What ``syncd status`` reads, from either path (:func:`syncd.app.status.document`)."""

    calendars: list[tuple[CalendarRecord, str, str]]  # (calendar, admin email, admin tz)
    outbox: dict[str, int]
    mirrors: dict[int, int]
    intents: list[IntentRecord]
    oldest_unsent: datetime | None
    last_unsent_error: str | None


def sqlite_path(url: str) -> str | None:
    """The file of a plain SQLite URL, or None (anything else takes the canonical path)."""
    match = _PLAIN_SQLITE.fullmatch(url)
    if match is None or match[1] == ":memory:":
        return None
    return match[1]


@contextmanager
def _snapshot(path: str) -> Iterator[sqlite3.Connection]:
    """One read transaction (plain ``BEGIN``: WAL readers never wait for a writer)."""
    conn = sqlite3.connect(
        f"file:{quote(path)}?mode=rw", uri=True, timeout=30, isolation_level=None
    )
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("BEGIN")
        yield conn
    finally:
        conn.close()  # nothing was written: closing ends the transaction


def read(url: str, query: Callable[[sqlite3.Connection], T | None]) -> T | None:
    """``query`` in one snapshot of the SQLite file of ``url``; None: ask the canonical path."""
    path = sqlite_path(url)
    if path is None or not os.path.isfile(path):
        return None
    try:
        with _snapshot(path) as conn:
            schema = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sessions'"
            if conn.execute(schema).fetchone() is None:
                return None
            return query(conn)
    except (sqlite3.Error, ValueError, TypeError, KeyError):
        return None  # not a database, an older schema, odd rows: the canonical path says


def instant(value: str | None) -> datetime | None:
    """A stored instant (naive UTC text, as SQLAlchemy writes it) read back aware."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _aware(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


# --- session list -------------------------------------------------------------------------


def sessions(
    admin_email: str | None, status: str | None
) -> Callable[[sqlite3.Connection], tuple[list[Session], dict[str, str]] | None]:
    """The query of ``session list``: the sessions by start, and every admin's zone."""

    def query(conn: sqlite3.Connection) -> tuple[list[Session], dict[str, str]] | None:
        if status is not None and status not in {s.value for s in Status}:
            return None
        where, params = [], []
        if admin_email:
            found = conn.execute(
                "SELECT id FROM admins WHERE email = ?", (admin_email.lower(),)
            ).fetchone()
            if found is None:
                return None
            where.append("admin_id = ?")
            params.append(found["id"])
        if status:
            where.append("status = ?")
            params.append(status)
        cond = f" WHERE {' AND '.join(where)}" if where else ""
        # The canonical query's shape (all columns, ORDER BY start): the same plan, so
        # sessions that start at the same instant come in the same order.
        rows = conn.execute(f"SELECT * FROM sessions{cond} ORDER BY start", params).fetchall()
        admins = conn.execute("SELECT id, email, tz FROM admins").fetchall()
        emails = {a["id"]: a["email"] for a in admins}
        zones = {a["email"]: a["tz"] for a in admins}
        customers = {
            c["id"]: Customer(c["email"], c["name"], c["tz"])
            for c in conn.execute(
                "SELECT id, email, name, tz FROM customers WHERE id IN "
                f"(SELECT customer_id FROM sessions{cond})",
                params,
            )
        }
        history: dict[str, list[HistoryEntry]] = {r["id"]: [] for r in rows}
        for h in conn.execute(
            "SELECT * FROM session_history WHERE session_id IN "
            f"(SELECT id FROM sessions{cond}) ORDER BY id",
            params,
        ):
            history[h["session_id"]].append(
                HistoryEntry(
                    _aware(h["at"]),
                    Actor(h["actor"]),
                    h["action"],
                    instant(h["from_start"]),
                    instant(h["to_start"]),
                    h["detail"],
                )
            )
        found_sessions = [
            Session(
                id=r["id"],
                admin_email=emails[r["admin_id"]],
                customer=customers[r["customer_id"]],
                start=_aware(r["start"]),
                end=_aware(r["end"]),
                status=Status(r["status"]),
                sequence=r["sequence"],
                cancel_reason=r["cancel_reason"],
                choose_message=r["choose_message"],
                history=tuple(history[r["id"]]),
            )
            for r in rows
        ]
        return found_sessions, zones

    return query


# --- calendar list and status -------------------------------------------------------------


def _calendar(row: sqlite3.Row) -> CalendarRecord:
    return CalendarRecord(
        id=row["id"],
        backend=row["backend"],
        settings=json.loads(row["settings"]),
        busy_only=bool(row["busy_only"]),
        last_sync_at=instant(row["last_sync_at"]),
        last_error=row["last_error"],
        breaker_tripped_at=instant(row["breaker_tripped_at"]),
        paused_reason=row["paused_reason"],
        lease_owner=row["lease_owner"],
        lease_until=instant(row["lease_until"]),
    )


def calendars(conn: sqlite3.Connection) -> list[tuple[CalendarRecord, str, str]]:
    """Every calendar by id, with its admin's email and zone."""
    rows = conn.execute(
        "SELECT calendars.*, admins.email AS admin_email, admins.tz AS admin_tz "
        "FROM calendars JOIN admins ON admins.id = calendars.admin_id ORDER BY calendars.id"
    )
    return [(_calendar(r), r["admin_email"], r["admin_tz"]) for r in rows]


def status_rows(conn: sqlite3.Connection) -> StatusRows:
    """Everything ``syncd status`` shows, in one snapshot."""
    marks = ", ".join("?" for _ in UNSENT)
    oldest = conn.execute(
        f"SELECT min(created_at) FROM outbox WHERE status IN ({marks})", UNSENT
    ).fetchone()[0]
    failing = conn.execute(
        f"SELECT last_error FROM outbox WHERE status IN ({marks}) AND last_error IS NOT NULL "
        "ORDER BY next_attempt_at DESC, id DESC LIMIT 1",
        UNSENT,
    ).fetchone()
    return StatusRows(
        calendars=calendars(conn),
        outbox={
            r[0]: int(r[1])
            for r in conn.execute("SELECT status, count(*) FROM outbox GROUP BY status")
        },
        mirrors={
            r[0]: int(r[1])
            for r in conn.execute(
                "SELECT calendar_id, count(*) FROM mirrors WHERE gone = 0 GROUP BY calendar_id"
            )
        },
        intents=[
            IntentRecord(
                r["calendar_id"],
                r["session_id"],
                r["kind"],
                _aware(r["first_seen"]),
                bool(r["held"]),
            )
            for r in conn.execute(
                "SELECT calendar_id, session_id, kind, first_seen, held FROM intents "
                "ORDER BY first_seen, id"
            )
        ],
        oldest_unsent=instant(oldest),
        last_unsent_error=failing[0] if failing is not None else None,
    )
