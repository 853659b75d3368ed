"""Loading and saving the engine's state: calendars, mirror rows, pending intents."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType

from sqlalchemy import delete, false, func, inspect, literal, or_, select, tuple_
from sqlalchemy.orm import Session as Orm

from syncd.domain.model import Admin, Session, Status
from syncd.engine.planner import MirrorState, PendingIntent
from syncd.errors import NotFoundError
from syncd.store.models import AdminRow, CalendarRow, IntentRow, MirrorRow, SessionRow
from syncd.store.repo import admin_from_row, load_sessions

#: More sessions than this touched in one cycle: the cycle loads the calendar whole.
MAX_PARTIAL = 500


@dataclass(frozen=True)
class Head:
    """What a cycle reads before the feed: the calendar row, its admin, pending intents."""

    calendar_id: int
    backend: str
    cursor: str | None
    breaker_tripped: bool
    admin: Admin
    admin_id: int
    intents: dict[str, PendingIntent]
    reconciled_at: datetime | None
    recent_removals: dict[str, datetime]
    synced_revision: int | None
    synced_id: str | None
    synced_rules: str | None
    #: Some mirror holds the etag of a write the feed was not read past yet (its echo).
    echoes: bool = False


@dataclass(frozen=True)
class CalendarState:
    """One calendar's state as the planner needs it.

    ``complete``: every session that matters now is loaded. Otherwise (an idle or small
    cycle, :func:`load_changed`) only the sessions that changed since the last plan, those
    the feed reported, those with a pending gesture and those whose event is not settled.
    ``settled``: loaded sessions whose mirror was marked settled; ``revision``: the admin's
    change number every loaded session is at least as new as (stored at commit).
    """

    calendar_id: int
    backend: str
    cursor: str | None
    breaker_tripped: bool
    admin: Admin
    sessions: dict[str, Session]
    mirrors: dict[str, MirrorState]
    intents: dict[str, PendingIntent]
    reconciled_at: datetime | None = None
    recent_removals: dict[str, datetime] = field(default_factory=dict)
    complete: bool = True
    settled: frozenset[str] = frozenset()
    revision: int | None = None
    revision_id: str = ""
    #: Only part of what changed was loaded (a catch-up): the next pass goes on.
    more: bool = False
    unloaded_upcoming: int = 0
    #: Events a full listing lacks that later passes will plan (the breaker counts them).
    unplanned_removals: int = 0
    #: The feed was read with syncd's echoes at hand: a commit past it clears them.
    echoes: bool = False


def get_calendar(orm: Orm, calendar_id: int, lock: bool = False) -> CalendarRow:
    """The calendar row, or NotFoundError."""
    stmt = select(CalendarRow).where(CalendarRow.id == calendar_id)
    if lock:
        stmt = stmt.with_for_update()
    row = orm.scalars(stmt).first()
    if row is None:
        raise NotFoundError(f"There is no calendar {calendar_id} (see 'syncd calendar list').")
    return row


def load_head(orm: Orm, calendar_id: int) -> Head:
    """The calendar row, its admin and its pending intents."""
    cal = get_calendar(orm, calendar_id)
    admin = admin_from_row(orm.get_one(AdminRow, cal.admin_id))
    intents = {
        i.session_id: PendingIntent(
            i.session_id,
            i.kind,  # type: ignore[arg-type]
            MappingProxyType(dict(i.payload)),
            i.observed_hash,
            i.first_seen,
            i.held,
        )
        for i in orm.scalars(select(IntentRow).where(IntentRow.calendar_id == calendar_id))
    }
    return Head(
        calendar_id,
        cal.backend,
        cal.cursor,
        cal.breaker_tripped_at is not None,
        admin,
        cal.admin_id,
        intents,
        cal.reconciled_at,
        removals_of(cal),
        cal.synced_revision,
        cal.synced_id,
        cal.synced_rules,
    )


def load_state(
    orm: Orm, calendar_id: int, now: datetime, head: Head | None = None
) -> CalendarState:
    """Every session of the calendar's admin that matters now, with mirrors and intents."""
    head = head or load_head(orm, calendar_id)
    # Read before the sessions: each one loaded below is at least this new.
    last = orm.execute(
        select(SessionRow.revision, SessionRow.id)
        .where(SessionRow.admin_id == head.admin_id)
        .order_by(SessionRow.revision.desc(), SessionRow.id.desc())
        .limit(1)
    ).first()
    return _load(orm, head, now, None, (last[0], last[1]) if last else (0, ""))


def load_changed(
    orm: Orm,
    head: Head,
    now: datetime,
    remote_ids: set[str],
    session_ids: set[str],
    count_rest: bool = False,
    since: tuple[int, str] = (-1, ""),
) -> CalendarState:
    """The sessions a cycle must plan: what the feed reported (``remote_ids``,
    ``session_ids``), pending gestures, unsettled events, and the sessions changed after
    ``since`` (revision, id) — at most :data:`MAX_PARTIAL` of those and of the unsettled
    ones, oldest first: then ``more`` is set and the next pass goes on from there.

    With ``count_rest`` (removals are about: the breaker needs the calendar's size), the
    upcoming mirrored sessions left unloaded are counted, in the same read.
    """
    cid = head.calendar_id
    rev, last_id = since
    newer = orm.execute(
        select(SessionRow.revision, SessionRow.id)
        .where(
            SessionRow.admin_id == head.admin_id,
            # A row value: one range of the (admin_id, revision, id) index.
            tuple_(SessionRow.revision, SessionRow.id) > tuple_(literal(rev), literal(last_id)),
        )
        .order_by(SessionRow.revision, SessionRow.id)
        .limit(MAX_PARTIAL + 1)
    ).all()
    more = len(newer) > MAX_PARTIAL
    newer = newer[:MAX_PARTIAL]
    sids = set(head.intents) | set(session_ids) | {sid for _, sid in newer}
    if remote_ids:
        sids.update(
            orm.scalars(
                select(MirrorRow.session_id).where(
                    MirrorRow.calendar_id == cid, MirrorRow.remote_id.in_(sorted(remote_ids))
                )
            )
        )
    unsettled = list(
        orm.scalars(
            select(MirrorRow.session_id)
            .join(SessionRow, SessionRow.id == MirrorRow.session_id)
            .where(
                MirrorRow.calendar_id == cid,
                MirrorRow.settled == false(),
                SessionRow.end > now - WINDOW,
            )
            .limit(MAX_PARTIAL)  # no ORDER BY: it would walk every mirror to sort
        )
    )
    sids.update(unsettled)
    mark = (newer[-1][0], newer[-1][1]) if newer else since
    st = replace(_load(orm, head, now, sids, mark), more=more)
    if not count_rest:
        return st
    loaded = sum(
        1 for sid, s in st.sessions.items() if s.live and s.end > now and sid in st.mirrors
    )
    return replace(st, unloaded_upcoming=count_upcoming(orm, cid, head.admin_id, now) - loaded)


def count_upcoming(orm: Orm, calendar_id: int, admin_id: int, now: datetime) -> int:
    """Live sessions not yet ended with an event in the calendar (the planner's upcoming)."""
    n = orm.scalar(
        select(func.count())
        .select_from(MirrorRow)
        .join(SessionRow, SessionRow.id == MirrorRow.session_id)
        .where(
            MirrorRow.calendar_id == calendar_id,
            SessionRow.admin_id == admin_id,
            SessionRow.status != Status.CANCELED.value,
            SessionRow.end > now,
        )
    )
    return int(n or 0)


#: Sessions that ended longer ago than this are no longer planned.
WINDOW = timedelta(days=1)


def _load(
    orm: Orm, head: Head, now: datetime, only: set[str] | None, mark: tuple[int, str]
) -> CalendarState:
    cid = head.calendar_id
    mirror_q = select(MirrorRow).where(MirrorRow.calendar_id == cid)
    if only is not None:
        mirror_q = mirror_q.where(MirrorRow.session_id.in_(sorted(only)))
    mirror_rows = list(orm.scalars(mirror_q)) if only is None or only else []
    mirrors = {
        m.session_id: MirrorState(
            m.session_id,
            m.remote_id,
            m.written_etag,
            m.written_hash,
            m.seen_etag,
            m.gone,
            -1 if m.top_sequence is None else m.top_sequence,
            None
            if m.written_start is None or m.written_end is None
            else (m.written_start, m.written_end),
        )
        for m in mirror_rows
    }
    not_gone = [sid for sid, m in mirrors.items() if not m.gone]
    if only is None:
        rows: Sequence[SessionRow] = orm.scalars(
            select(SessionRow).where(
                SessionRow.admin_id == head.admin_id,
                SessionRow.end > now - WINDOW,
                or_(SessionRow.status != Status.CANCELED.value, SessionRow.id.in_(not_gone)),
            )
        ).all()
    else:
        # The same rule, on rows read by primary key: given the other terms, a planner
        # may walk the admin's whole (admin_id, end) range to find a handful of ids.
        live = set(not_gone)
        by_id = select(SessionRow).where(SessionRow.id.in_(sorted(only)))
        rows = [
            r
            for r in (orm.scalars(by_id).all() if only else [])
            if r.admin_id == head.admin_id
            and r.end > now - WINDOW
            and (r.status != Status.CANCELED.value or r.id in live)
        ]
    sessions = {s.id: s for s in load_sessions(orm, rows, with_history=False)}
    return CalendarState(
        cid,
        head.backend,
        head.cursor,
        head.breaker_tripped,
        head.admin,
        sessions,
        {k: v for k, v in mirrors.items() if k in sessions},
        head.intents,
        head.reconciled_at,
        head.recent_removals,
        complete=only is None,
        settled=frozenset(
            m.session_id for m in mirror_rows if m.settled and m.session_id in sessions
        ),
        revision=mark[0],
        revision_id=mark[1],
    )


def known_etags(orm: Orm, calendar_id: int, admin_id: int, now: datetime) -> dict[str, str]:
    """remote id → etag of every event mirrored for a session that matters now."""
    return dict(iter_known(orm, calendar_id, admin_id, now))


def iter_known(
    orm: Orm, calendar_id: int, admin_id: int, now: datetime
) -> Iterator[tuple[str, str]]:
    """:func:`known_etags`, as a stream of pairs (a few thousand rows held at a time)."""
    rows = orm.execute(
        select(MirrorRow.remote_id, MirrorRow.seen_etag, MirrorRow.written_etag)
        .join(SessionRow, SessionRow.id == MirrorRow.session_id)
        .where(
            MirrorRow.calendar_id == calendar_id,
            MirrorRow.gone == false(),
            SessionRow.admin_id == admin_id,
            SessionRow.end > now - WINDOW,
        )
        .execution_options(yield_per=2000)
    )
    for rid, seen, written in rows:
        yield rid, (seen or written or "")


def removals_of(cal: CalendarRow) -> dict[str, datetime]:
    """The removals recorded for the breaker's window (session id → when)."""
    out: dict[str, datetime] = {}
    for sid, at in (cal.recent_removals or {}).items():
        try:
            out[str(sid)] = datetime.fromisoformat(str(at))
        except ValueError:
            continue
    return out


def intents_snapshot(orm: Orm, calendar_id: int) -> dict[str, tuple[str, str, bool]]:
    """(kind, observed hash, held) of every pending intent, read under the caller's lock."""
    return {
        i.session_id: (i.kind, i.observed_hash, i.held)
        for i in orm.scalars(select(IntentRow).where(IntentRow.calendar_id == calendar_id))
    }


def mirror_row(orm: Orm, calendar_id: int, session_id: str) -> MirrorRow | None:
    """The mirror row of a session in a calendar, if any.

    Read once a transaction: a commit asks for the same row at each step of a gesture, and
    the row found stays in the ORM session (``orm.info`` keeps it by calendar and session).
    """
    found: dict[tuple[int, str], MirrorRow] = orm.info.setdefault("mirror_rows", {})
    key = (calendar_id, session_id)
    row = found.get(key)
    if row is not None and inspect(row).persistent:
        return row
    row = orm.scalars(
        select(MirrorRow).where(
            MirrorRow.calendar_id == calendar_id, MirrorRow.session_id == session_id
        )
    ).first()
    if row is not None:
        found[key] = row
    return row


def mirror_rows(orm: Orm, calendar_id: int, session_ids: Sequence[str]) -> None:
    """Read the mirror rows of many sessions into :func:`mirror_row`'s cache, a read per
    500 (a commit of many gestures asks for each)."""
    found: dict[tuple[int, str], MirrorRow] = orm.info.setdefault("mirror_rows", {})
    ids = sorted({sid for sid in session_ids if (calendar_id, sid) not in found})
    for i in range(0, len(ids), 500):
        for row in orm.scalars(
            select(MirrorRow).where(
                MirrorRow.calendar_id == calendar_id, MirrorRow.session_id.in_(ids[i : i + 500])
            )
        ):
            found[(calendar_id, row.session_id)] = row


def mirrored(orm: Orm, calendar_id: int, session_ids: list[str]) -> set[str]:
    """Which of ``session_ids`` have a mirror row in the calendar (a few queries for many)."""
    found: set[str] = set()
    for i in range(0, len(session_ids), 500):
        found.update(
            orm.scalars(
                select(MirrorRow.session_id).where(
                    MirrorRow.calendar_id == calendar_id,
                    MirrorRow.session_id.in_(session_ids[i : i + 500]),
                )
            )
        )
    return found


def save_intent(orm: Orm, calendar_id: int, intent: PendingIntent) -> None:
    """Insert or replace the pending intent of a session."""
    row = orm.scalars(
        select(IntentRow).where(
            IntentRow.calendar_id == calendar_id, IntentRow.session_id == intent.session_id
        )
    ).first()
    if row is None:
        row = IntentRow(calendar_id=calendar_id, session_id=intent.session_id)
        orm.add(row)
    row.kind = intent.kind
    row.payload = dict(intent.payload)
    row.observed_hash = intent.observed_hash
    row.first_seen = intent.first_seen
    row.held = intent.held


def drop_intent(orm: Orm, calendar_id: int, session_id: str) -> None:
    """Forget a session's pending intent."""
    orm.execute(
        delete(IntentRow).where(
            IntentRow.calendar_id == calendar_id, IntentRow.session_id == session_id
        )
    )


def held_intents(orm: Orm, calendar_id: int) -> list[IntentRow]:
    """Deletions the breaker holds in this calendar."""
    return list(
        orm.scalars(select(IntentRow).where(IntentRow.calendar_id == calendar_id, IntentRow.held))
    )
