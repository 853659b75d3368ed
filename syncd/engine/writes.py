"""Executing a committed plan's calendar writes, and recording what each one wrote.

Every write is conditional (``If-None-Match`` / ``If-Match``); a 412 leaves the mirror as
it was, so the next cycle re-reads and plans the admin's gesture first. A write that fails
in any way is planned again next cycle, because the planner compares what a session wants
with what was last written; one failing write never stops the others.

What each write stored (etag, content hash) is recorded in one transaction for a run of
up to :data:`RECORD_BATCH` writes, and always before :func:`execute` returns, so before
anything (the runner's next pass, the next cycle, another worker) reads the mirror rows
again; a write that left its live session's event showing what was written, with no
gesture pending, also settles it (:func:`_settled_by_write`). A crash in between loses
only the record, never the event: the next cycle finds the event showing what the
session wants and adopts its etag (the planner's "a write whose etag was never
recorded"); a delete whose record was lost is planned again and finds the event gone.

A backend may allow several writes at once (``write_concurrency``; CalDAV: 4): the first
goes alone, then up to that many run on worker threads (lanes), started in plan order,
and two writes that share a session or an event id never overlap. A backend that sets
``write_concurrency`` at all is written from a lane even one write at a time. Each lane
takes its next write itself as soon as its last one landed; the calling thread prepares
the writes ahead of the lanes (a create's body, where the backend can build it ahead:
:class:`PreparesCreates`) and settles and records the results, a batch at a time. So
the server never waits for syncd's bookkeeping. A backend that implements
:class:`NotesRecorded` is told what was recorded (after each batch commits), so its next
feed read may leave out syncd's own echoes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from sqlalchemy import select
from sqlalchemy.orm import Session as Orm

from syncd.domain.model import Notice, NoticeKind, Status
from syncd.engine import state
from syncd.engine.desired import GestureRules, content_hash, desired_hash
from syncd.engine.plantypes import Create, Delete, Write
from syncd.engine.report import CycleReport
from syncd.notify.outbox import enqueue
from syncd.ports import (
    BackendError,
    CalendarBackend,
    DesiredEvent,
    NotFound,
    PreconditionFailed,
    WriteRefused,
)
from syncd.store.context import Context
from syncd.store.models import AdminRow, IntentRow, MirrorRow, OutboxRow, SessionRow
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
    sequence: int | None = None  # the SEQUENCE written
    times: tuple[datetime, datetime] | None = None  # the start and end written


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
            recorded = _record(self._ctx, self._cid, batch, self._notes is not None)
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


#: Writes prepared ahead of the lanes (their keys, digest and, where the backend can,
#: what it will send): the preparing is off the writes' path, and memory stays bounded.
AHEAD = 32


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
    """Up to ``pace.lanes`` writes in flight, each lane a worker thread that takes the next
    write in plan order itself as soon as its last one landed, already prepared by this
    thread while the lanes wait for the server. So the server never waits for this
    thread's bookkeeping, for a hand-over between threads or for a write's preparation
    (together 0.5-0.7 ms a write of a first mirror, docs/BENCHMARKS.md). Two writes that
    share a session or an event id never overlap: the second, and every write after it in
    plan order, waits until the first is done. Results are settled and recorded on this
    thread, :data:`RECORD_BATCH` at a time, in the order they landed."""
    run = _Lanes(rules, calendar_id, backend, todo, over_budget, pace)

    def lane(index: int) -> None:
        try:
            while (ready := run.take(index)) is not None:
                run.done(ready, _attempt(rules, backend, ready.write, ready.digest))
        except BaseException as err:  # a bug outside any one write: the cycle's error
            run.broke = run.broke or err
            run.stop()
        finally:
            run.retire()

    threads = [
        threading.Thread(target=lane, args=(i,), name=f"syncd-writes-{calendar_id}-{i}")
        for i in range(run.alive)
    ]
    for t in threads:
        t.start()
    try:
        while batch := run.next_batch():
            for w, outcome in batch:
                _settle(ctx, calendar_id, w, outcome, report, recorder)
    finally:
        run.stop()  # a no-op unless an error above: then no new write starts
        for t in threads:
            t.join()
        for w, outcome in run.rest():
            _settle(ctx, calendar_id, w, outcome, report, recorder)
    if run.broke is not None:
        raise run.broke


@runtime_checkable
class PreparesCreates(Protocol):
    """A backend that can build ahead what a create will send (off the write's path)."""

    def prepare_create(self, event: DesiredEvent) -> None:
        """Build what ``create(event)`` will send; it may be called for this object."""


@dataclass(frozen=True)
class _Ready:
    """A write prepared for a lane: what it touches, and the digest it will record."""

    write: Write
    keys: frozenset[str]
    digest: str | None


class _Lanes:
    """The writes of one run and their results, shared by the lanes and the recording
    thread under one lock (see :func:`_overlapped`)."""

    def __init__(
        self,
        rules: GestureRules,
        calendar_id: int,
        backend: CalendarBackend,
        todo: Iterator[Write],
        over_budget: Callable[[], bool],
        pace: _Pace,
    ) -> None:
        self._rules, self._cid, self._backend, self._todo = rules, calendar_id, backend, todo
        self._over, self._pace = over_budget, pace
        self._preparer = backend if isinstance(backend, PreparesCreates) else None
        self.alive = max(1, pace.lanes)
        lock = threading.Lock()
        self._to_lanes = threading.Condition(lock)  # a write may start, or none will
        self._to_recorder = threading.Condition(lock)  # a batch landed, or prepare more
        self._ready: deque[_Ready] = deque()  # prepared, in plan order
        self._head: _Ready | None = None  # the next to start, waiting for one it overlaps
        self._busy: set[str] = set()  # the keys of the writes in flight (never shared)
        self._landed: list[tuple[Write, Callable[[], _Written]]] = []
        self._drained = self._stopped = False
        self.broke: BaseException | None = None  # what broke a lane (raised once all landed)

    def _prepare_next(self) -> _Ready | None:
        """The next write in plan order, prepared (under the lock); None when all are."""
        w = next(self._todo, None)
        if w is None:
            self._drained = True
            return None
        digest = None
        try:  # a failure here is the write's own: it meets it again, in _attempt
            if not isinstance(w, Delete):
                digest = desired_hash(w.event, self._rules)
            if isinstance(w, Create) and self._preparer is not None:
                self._preparer.prepare_create(w.event)
        except Exception:
            log.debug("calendar %s: %s not prepared ahead", self._cid, w.session_id, exc_info=True)
        return _Ready(w, frozenset(_keys(self._backend, w)), digest)

    def take(self, index: int) -> _Ready | None:
        """The next write for lane ``index``; None once it has no more to do (the writes
        are all started, the budget is spent, or the pace keeps fewer lanes than this)."""
        with self._to_lanes:
            while True:
                if self._stopped or index >= min(self._pace.lanes, _lanes(self._backend)):
                    return None
                if self._head is None:
                    if self._ready:
                        self._head = self._ready.popleft()
                    elif self._drained or (head := self._prepare_next()) is None:
                        return None
                    else:
                        self._head = head  # the recorder fell behind: prepared here
                ready = self._head
                if ready.keys & self._busy:
                    self._to_lanes.wait()  # for the write it overlaps
                    continue
                if self._over():
                    _stop(self._cid)
                    self._stop_locked()
                    return None
                self._head = None
                self._busy |= ready.keys
                if len(self._ready) < AHEAD // 2 and not self._drained:
                    self._to_recorder.notify()
                return ready

    def done(self, ready: _Ready, outcome: Callable[[], _Written]) -> None:
        """A write landed (or failed): what waited for it may start."""
        with self._to_lanes:
            self._busy -= ready.keys
            self._pace.landed(1)
            self._landed.append((ready.write, outcome))
            if self._head is not None:
                self._to_lanes.notify_all()
            if len(self._landed) >= RECORD_BATCH:
                self._to_recorder.notify()

    def retire(self) -> None:
        with self._to_lanes:
            self.alive -= 1
            self._to_recorder.notify()

    def next_batch(self) -> list[tuple[Write, Callable[[], _Written]]]:
        """For the recording thread: the next batch of landed writes, preparing those
        ahead of the lanes while it waits; empty once the lanes are done and all is taken."""
        with self._to_recorder:
            prepared = 0
            while self.alive and len(self._landed) < RECORD_BATCH:
                if self._stopped or self._drained or len(self._ready) >= AHEAD:
                    self._to_recorder.wait()
                    continue
                ready = self._prepare_next()
                if ready is not None:
                    self._ready.append(ready)
                prepared += 1
                if prepared % 8 == 0:  # let a lane whose write landed have the interpreter
                    self._to_recorder.release()
                    time.sleep(0)
                    self._to_recorder.acquire()
            batch, self._landed = self._landed, []
            return batch

    def stop(self) -> None:
        with self._to_lanes:
            self._stop_locked()

    def _stop_locked(self) -> None:
        self._stopped = True
        self._to_lanes.notify_all()
        self._to_recorder.notify()

    def rest(self) -> list[tuple[Write, Callable[[], _Written]]]:
        with self._to_lanes:
            batch, self._landed = self._landed, []
            return batch


def _stop(calendar_id: int) -> None:
    log.warning("calendar %s: time budget spent; writes continue next cycle", calendar_id)


def _attempt(
    rules: GestureRules, backend: CalendarBackend, w: Write, digest: str | None = None
) -> Callable[[], _Written]:
    """The write, done now; its outcome (a result, or the error it raised) for _settle."""
    try:
        result = _write_one(rules, backend, w, digest)
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


def _record(
    ctx: Context, calendar_id: int, batch: list[_Written], echoes: bool = False
) -> dict[str, str | None]:
    """Record a batch of write results on their mirror rows, in order, in one transaction.

    Returns ``href -> etag`` of what now stands recorded as both written and seen there
    (``None``: recorded gone). With ``echoes`` (a backend that leaves them out of its
    feed, :class:`NotesRecorded`) each such etag is also kept as the mirror's echo
    (``echo_etag``) until a read of the feed moves past it."""
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
        shown: set[str] = set()  # sessions whose event now shows what was written
        for r in batch:
            m = rows.get(r.session_id)
            if m is None:
                continue
            if r.remote_id is not None and r.remote_id != m.remote_id:
                m.remote_id = r.remote_id  # the server chose where to keep it
            m.written_etag, m.written_hash = r.etag, r.digest
            m.written_start, m.written_end = r.times or (None, None)
            if r.sequence is not None:
                top = -1 if m.top_sequence is None else m.top_sequence
                m.top_sequence = max(top, r.sequence)
            m.seen_etag = r.seen if r.seen is not None else r.etag
            m.gone = r.gone
            m.echo_etag = None
            if r.href is not None and (r.gone or m.seen_etag == r.etag):
                out[r.href] = None if r.gone else r.etag
                m.echo_etag = None if r.gone or not echoes else r.etag
            if not r.gone and r.etag is not None and r.digest is not None and r.seen is None:
                shown.add(r.session_id)
            else:
                shown.discard(r.session_id)
        for sid in _settled_by_write(orm, calendar_id, shown):
            rows[sid].settled = True
    return out


def _settled_by_write(orm: Orm, calendar_id: int, shown: set[str]) -> set[str]:
    """Of the sessions whose event now shows what syncd wrote, those it settles: live,
    with no gesture pending (the rule of :func:`syncd.engine.settled.settle_marks`, whose
    last term, the hash written is the one wanted, holds unless the session changed since
    the plan, and then its newer revision has it planned anyway). The cycle's next pass
    then need not load them only to find them settled."""
    if not shown:
        return set()
    ids = sorted(shown)
    live = set(
        orm.scalars(
            select(SessionRow.id).where(
                SessionRow.id.in_(ids), SessionRow.status != Status.CANCELED.value
            )
        )
    )
    pending = set(
        orm.scalars(
            select(IntentRow.session_id).where(
                IntentRow.calendar_id == calendar_id, IntentRow.session_id.in_(ids)
            )
        )
    )
    return live - pending


def _write_one(
    rules: GestureRules, backend: CalendarBackend, w: Write, digest: str | None = None
) -> _Written:
    """One write on the server; what to record of it (``digest``: the event's
    :func:`desired_hash`, when it was prepared ahead)."""
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
    digest = digest or desired_hash(w.event, rules)
    if isinstance(w, Create):
        try:
            ev = backend.create(w.event)
        except PreconditionFailed:
            ev = backend.get(backend.remote_id_for(w.event.uid, w.session_id))
            if content_hash(ev.content, rules, w.event.summary) != digest:
                # Someone else's content at our id: make the next cycle write ours over it.
                return _Written(w.session_id, None, digest, seen=ev.etag)
        return _Written(
            w.session_id,
            ev.etag,
            digest,
            remote_id=ev.remote_id,
            href=ev.remote_id,
            sequence=ev.content.sequence,
            times=(ev.content.start, ev.content.end),
        )
    ev = backend.update(w.remote_id, w.event, w.etag)
    return _Written(
        w.session_id,
        ev.etag,
        digest,
        href=ev.remote_id,
        sequence=ev.content.sequence,
        times=(ev.content.start, ev.content.end),
    )
