"""Executing a committed plan's calendar writes, and recording what each one wrote.

Every write is conditional (``If-None-Match`` / ``If-Match``); a 412 leaves the mirror as
it was, so the next cycle re-reads and plans the admin's gesture first. A write that fails
in any way is planned again next cycle, because the planner compares what a session wants
with what was last written; one failing write never stops the others.

What each write stored (etag, content hash) is recorded in one transaction for a run of
up to :data:`RECORD_BATCH` writes, and always before :func:`execute` returns, so before
anything (the runner's next pass, the next cycle, another worker) reads the mirror rows
again. A crash in between loses only the record, never the event: the next cycle finds
the event showing what the session wants and adopts its etag (the planner's "a write
whose etag was never recorded"); a delete whose record was lost is planned again and
finds the event gone.

A backend may allow several writes at once (``write_concurrency``; CalDAV: 4): the first
goes alone, then up to that many run on worker threads, started in plan order, and two
writes that share a session or an event id never overlap. Results are settled and
recorded on the calling thread only, as they land and once the writes that replace them
have started, so the database work overlaps the server's (even with one write at a time:
a backend that sets ``write_concurrency`` at all is written from a worker thread). A
backend that implements :class:`NotesRecorded` is told what was recorded (after each
batch commits), so its next feed read may leave out syncd's own echoes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from sqlalchemy import select

from syncd.domain.model import Notice, NoticeKind
from syncd.engine import state
from syncd.engine.desired import GestureRules, content_hash, desired_hash
from syncd.engine.plantypes import Create, Delete, Write
from syncd.engine.report import CycleReport
from syncd.notify.outbox import enqueue
from syncd.ports import BackendError, CalendarBackend, NotFound, PreconditionFailed, WriteRefused
from syncd.store.context import Context
from syncd.store.models import AdminRow, MirrorRow, OutboxRow, SessionRow
from syncd.store.repo import admin_from_row, load_sessions

log = logging.getLogger("syncd.engine")

#: Writes whose results are recorded in one transaction (and at the end of a run).
RECORD_BATCH = 50


@dataclass(frozen=True)
class _Written:
    """What one write left on the server, to record on the session's mirror row."""

    session_id: str
    etag: str | None
    digest: str | None
    gone: bool = False
    seen: str | None = None
    remote_id: str | None = None
    href: str | None = None  # where the write left ``etag``


@runtime_checkable
class NotesRecorded(Protocol):
    """A backend that wants to know the etags syncd recorded for its writes.

    Told after each batch commits (``None``: the event is gone), it may skip reading those
    events back from its change feed while they still carry that etag: the planner would
    find each one equal to what it last saw, and do nothing.
    """

    def recorded(self, etags: Mapping[str, str | None]) -> None:
        """``href -> etag`` just recorded on the mirror rows."""


class _Recorder:
    """Records the results of a run of writes, :data:`RECORD_BATCH` per transaction."""

    def __init__(
        self, ctx: Context, calendar_id: int, report: CycleReport, backend: CalendarBackend
    ) -> None:
        self._ctx, self._cid, self._report = ctx, calendar_id, report
        self._notes = backend if isinstance(backend, NotesRecorded) else None
        self._pending: list[_Written] = []

    def add(self, result: _Written) -> None:
        self._pending.append(result)
        self._report.writes += 1
        if len(self._pending) >= RECORD_BATCH:
            self.flush()

    def flush(self) -> None:
        """Record what is pending in one transaction; a failure leaves it to the next cycle."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            recorded = _record(self._ctx, self._cid, batch)
        except Exception as err:  # the events stand; the next cycle adopts their etags
            log.exception("calendar %s: could not record %d writes", self._cid, len(batch))
            self._report.writes -= len(batch)
            self._report.write_failures += len(batch)
            self._report.error = self._report.error or f"{type(err).__name__}: {err}"
            return
        if self._notes is not None and recorded:
            self._notes.recorded(recorded)


def execute(
    ctx: Context,
    rules: GestureRules,
    calendar_id: int,
    backend: CalendarBackend,
    writes: list[Write],
    report: CycleReport,
    over_budget: Callable[[], bool] = lambda: False,
) -> None:
    """Run the calendar writes; record each new etag; a failure is retried next cycle.

    Past the cycle's time budget the remaining writes
    wait for the next cycle (the planner plans them again). The results are recorded in
    batches, all of them before this returns (see the module).
    """
    recorder = _Recorder(ctx, calendar_id, report, backend)
    try:
        _run(ctx, rules, calendar_id, backend, writes, report, over_budget, recorder)
    finally:
        recorder.flush()


def _keys(backend: CalendarBackend, w: Write) -> set[str]:
    """What a write touches: its session and its event's id (a create's future id)."""
    if isinstance(w, Create):
        return {w.session_id, backend.remote_id_for(w.event.uid, w.session_id)}
    return {w.session_id, w.remote_id}


def _lanes(backend: CalendarBackend) -> int:
    """Writes one calendar keeps in flight: what the backend allows now (1 unless it says;
    it may lower it while the writes run)."""
    allowed = getattr(backend, "write_concurrency", 1)
    return max(1, allowed) if isinstance(allowed, int) else 1


def _threaded(backend: CalendarBackend) -> bool:
    """Whether the backend's writes may run on a worker thread: it says how many at once
    (``write_concurrency``, even 1). Others are written from the calling thread only."""
    return isinstance(getattr(backend, "write_concurrency", None), int)


def _run(
    ctx: Context,
    rules: GestureRules,
    calendar_id: int,
    backend: CalendarBackend,
    writes: list[Write],
    report: CycleReport,
    over_budget: Callable[[], bool],
    recorder: _Recorder,
) -> None:
    """The writes in plan order, up to :func:`_lanes` at a time past the first (which goes
    alone: it settles authentication and the connection for the others)."""
    lanes = min(_lanes(backend), len(writes))
    todo = iter(writes)
    for w in todo:
        if over_budget():
            _stop(calendar_id)
            return
        began = time.monotonic()
        outcome = _attempt(rules, backend, w)
        alone = time.monotonic() - began
        _settle(ctx, calendar_id, w, outcome, report, recorder)
        if _threaded(backend):
            pace = _Pace(calendar_id, lanes, alone)
            _overlapped(ctx, rules, calendar_id, backend, todo, report, over_budget, recorder, pace)


#: Writes landed in flight together before :class:`_Pace` judges whether they pay.
PROBE_PER_LANE = 3
#: How much faster than one at a time writes in flight together must land to go on so.
PAYS = 1.3


class _Pace:
    """How many writes to keep in flight: the backend's allowance while it pays.

    A server that stores one write at a time (Radicale, on the same machine) gains nothing
    from several in flight, and each one it holds while it stores another costs it CPU:
    5-20 % more for a first mirror of 300 on Radicale (docs/BENCHMARKS.md). So once
    ``PROBE_PER_LANE`` writes a lane have landed together, their rate is compared with the
    first write's, which went alone; unless they landed ``PAYS`` times faster, the rest
    go one at a time (still on the worker, so the bookkeeping overlaps). A distant server
    pays (20 ms away: 4 in flight take 0.45 of the time of one at a time), and so does one
    that stores writes in parallel."""

    def __init__(self, calendar_id: int, lanes: int, alone_s: float) -> None:
        self.lanes, self._cid, self._alone = lanes, calendar_id, alone_s
        self._landed, self._judged = 0, False
        self._since = time.monotonic()

    def landed(self, n: int) -> None:
        """``n`` more writes landed; judges once, after the probe."""
        if self.lanes <= 1 or self._judged:
            return
        self._landed += n
        if self._landed < PROBE_PER_LANE * self.lanes:
            return
        self._judged = True
        took = time.monotonic() - self._since
        rate, alone = self._landed / max(took, 1e-9), 1 / max(self._alone, 1e-9)
        if rate < PAYS * alone:
            log.info(
                "calendar %s: writes in flight together land %.1fx as fast as one alone; "
                "the rest go one at a time",
                self._cid,
                rate / alone,
            )
            self.lanes = 1


def _overlapped(
    ctx: Context,
    rules: GestureRules,
    calendar_id: int,
    backend: CalendarBackend,
    todo: Iterator[Write],
    report: CycleReport,
    over_budget: Callable[[], bool],
    recorder: _Recorder,
    pace: _Pace,
) -> None:
    """Up to ``pace.lanes`` writes in flight on worker threads, started in plan order; two
    writes that share a session or an event id never overlap (the second starts once the
    first is done). Results are settled and recorded on this thread, after the writes that
    take the place of the landed ones have started: the server is never left waiting for
    syncd's bookkeeping, even one write at a time."""
    flying: dict[Future[_Written], tuple[Write, set[str]]] = {}
    busy: set[str] = set()
    held: Write | None = None  # the next write in plan order, waiting for one it overlaps
    stopped = False

    def start(pool: ThreadPoolExecutor) -> None:
        nonlocal held, stopped
        while not stopped and len(flying) < min(pace.lanes, _lanes(backend)):
            w, held = held or next(todo, None), None
            if w is None:
                return
            keys = _keys(backend, w)
            if keys & busy:
                held = w
                return
            if over_budget():
                _stop(calendar_id)
                stopped = True
                return
            busy.update(keys)
            flying[pool.submit(_write_one, rules, backend, w)] = (w, keys)

    name = f"syncd-writes-{calendar_id}"
    with ThreadPoolExecutor(max(1, pace.lanes), thread_name_prefix=name) as pool:
        try:
            start(pool)
            while flying:
                done, _ = wait(flying, return_when=FIRST_COMPLETED)
                landed = [(fut, *flying.pop(fut)) for fut in [f for f in flying if f in done]]
                for _, _, keys in landed:
                    busy.difference_update(keys)
                pace.landed(len(landed))
                start(pool)
                for fut, w, _ in landed:
                    _settle(ctx, calendar_id, w, fut.result, report, recorder)
        finally:
            for fut in flying:  # only after an error above: what is still in flight lands
                w, _ = flying[fut]
                _settle(ctx, calendar_id, w, fut.result, report, recorder)


def _stop(calendar_id: int) -> None:
    log.warning("calendar %s: time budget spent; writes continue next cycle", calendar_id)


def _attempt(rules: GestureRules, backend: CalendarBackend, w: Write) -> Callable[[], _Written]:
    """The write, done now; its outcome (a result, or the error it raised) for _settle."""
    try:
        result = _write_one(rules, backend, w)
    except Exception as err:
        failure = err

        def fail() -> _Written:
            raise failure

        return fail
    return lambda: result


def _settle(
    ctx: Context,
    calendar_id: int,
    w: Write,
    outcome: Callable[[], _Written],
    report: CycleReport,
    recorder: _Recorder,
) -> None:
    """Record one write's result, or count its failure (``outcome`` raises it)."""
    try:
        recorder.add(outcome())
    except PreconditionFailed as err:
        log.info(
            "calendar %s: %s changed meanwhile (%s); re-read next cycle",
            calendar_id,
            w.session_id,
            err,
        )
        report.write_failures += 1
    except WriteRefused as err:  # not an outage: the admin is told once
        log.warning("calendar %s: %s left alone: %s", calendar_id, w.session_id, err)
        report.write_failures += 1
        _tell_refused(ctx, calendar_id, w, str(err))
    except BackendError as err:
        log.warning("calendar %s: write for %s failed: %s", calendar_id, w.session_id, err)
        report.write_failures += 1
        report.error = report.error or str(err)
    except Exception as err:  # an adapter bug on one event never stops the others
        log.exception("calendar %s: write for %s broke", calendar_id, w.session_id)
        report.write_failures += 1
        report.error = report.error or f"{type(err).__name__}: {err}"


def _tell_refused(ctx: Context, calendar_id: int, w: Write, reason: str) -> None:
    """One admin email per session whose event syncd refuses to write."""
    what = (
        "delete the event (the session was canceled)"
        if isinstance(w, Delete)
        else ("write the session's time and status onto the event")
    )
    with ctx.db.write() as orm:
        kind = NoticeKind.WRITE_REFUSED
        told = select(OutboxRow.id).where(
            OutboxRow.session_id == w.session_id, OutboxRow.kind == kind.value
        )
        row = orm.get(SessionRow, w.session_id)
        if row is None or orm.scalars(told).first() is not None:
            return
        cal = state.get_calendar(orm, calendar_id)
        admin = admin_from_row(orm.get_one(AdminRow, cal.admin_id))
        session = load_sessions(orm, [row], with_history=False)[0]
        data = {"what": what, "reason": reason, "calendar": str(calendar_id)}
        notice = Notice(kind, w.session_id, MappingProxyType(data))
        now = ctx.clock().replace(microsecond=0)
        enqueue(orm, [notice], session, admin, ctx.uid(w.session_id), now, ctx.host)


def monotonic_deadline(budget_s: float | None) -> Callable[[], bool]:
    """A predicate that turns true once ``budget_s`` seconds have passed (never if None)."""
    if budget_s is None:
        return lambda: False
    end = time.monotonic() + budget_s
    return lambda: time.monotonic() >= end


def _record(ctx: Context, calendar_id: int, batch: list[_Written]) -> dict[str, str | None]:
    """Record a batch of write results on their mirror rows, in order, in one transaction.

    Returns ``href -> etag`` of what now stands recorded as both written and seen there
    (``None``: recorded gone)."""
    sids = {r.session_id for r in batch}
    out: dict[str, str | None] = {}
    with ctx.db.write() as orm:
        rows = {
            m.session_id: m
            for m in orm.scalars(
                select(MirrorRow).where(
                    MirrorRow.calendar_id == calendar_id, MirrorRow.session_id.in_(sids)
                )
            )
        }
        for r in batch:
            m = rows.get(r.session_id)
            if m is None:
                continue
            if r.remote_id is not None and r.remote_id != m.remote_id:
                m.remote_id = r.remote_id  # the server chose where to keep it
            m.written_etag, m.written_hash = r.etag, r.digest
            m.seen_etag = r.seen if r.seen is not None else r.etag
            m.gone = r.gone
            if r.href is not None and (r.gone or m.seen_etag == r.etag):
                out[r.href] = None if r.gone else r.etag
    return out


def _write_one(rules: GestureRules, backend: CalendarBackend, w: Write) -> _Written:
    """One write on the server; what to record of it."""
    if isinstance(w, Delete):
        try:
            backend.delete(w.remote_id, w.etag)
        except PreconditionFailed:
            # The session is canceled; whatever the admin changed since, the event goes.
            try:
                fresh = backend.get(w.remote_id)
            except NotFound:
                fresh = None
            if fresh is not None:
                backend.delete(w.remote_id, fresh.etag)
        return _Written(w.session_id, None, None, gone=True, href=w.remote_id)
    digest = desired_hash(w.event, rules)
    if isinstance(w, Create):
        remote_id = backend.remote_id_for(w.event.uid, w.session_id)
        try:
            ev = backend.create(w.event)
        except PreconditionFailed:
            ev = backend.get(remote_id)
            if content_hash(ev.content, rules, w.event.summary) != digest:
                # Someone else's content at our id: make the next cycle write ours over it.
                return _Written(w.session_id, None, digest, seen=ev.etag)
        return _Written(w.session_id, ev.etag, digest, remote_id=ev.remote_id, href=ev.remote_id)
    ev = backend.update(w.remote_id, w.event, w.etag)
    return _Written(w.session_id, ev.etag, digest, href=ev.remote_id)
