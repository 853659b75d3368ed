"""Issue 11 goal 6: a calendar's writes run several at a time, and nothing is lost or doubled.

A backend that sets ``write_concurrency`` gets that many writes in flight
(:mod:`syncd.engine.writes`); the first write goes alone, two writes of one session or one
event id never overlap, every result is recorded once, and a failed or refused write is
left to the next cycle exactly as when they ran one by one. On the real runner over the
in-memory calendar (made thread-safe here); the first test fails with sequential writes
(its barrier never fills), the others guard the rules the overlap must keep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from syncd.domain.model import Customer, NoticeKind
from syncd.engine import state, writes
from syncd.engine.plantypes import Delete, PendingIntent, Write
from syncd.engine.report import CycleReport
from syncd.engine.runner import Fence, sync_calendar
from syncd.ports import DesiredEvent, RemoteEvent, Transient, WriteRefused
from syncd.services import booking as services
from syncd.store.models import MirrorRow
from tests.fakes.memory_backend import MemoryBackend, MemoryCalendar
from tests.unit.harness import ADMIN, NOW, Harness

N = 23
LANES = 4


class Parallel(MemoryBackend):
    """The in-memory calendar with ``LANES`` writes allowed at once; counts what overlaps."""

    write_concurrency = LANES

    def __init__(self, cal: MemoryCalendar) -> None:
        super().__init__(cal)
        self.lock = threading.Lock()
        self.flying: list[str] = []
        self.most = 0
        self.calls = 0
        self.gate: threading.Barrier | None = None  # held by writes 2..LANES+1
        self.fail: set[str] = set()  # session ids whose create fails
        self.refuse: set[str] = set()  # session ids whose create is refused
        self.slow, self.slowed = "", threading.Event()  # a delete that waits for another

    def _enter(self, key: str) -> threading.Barrier | None:
        with self.lock:
            assert key not in self.flying, f"two writes of {key} overlap"
            self.flying.append(key)
            self.most = max(self.most, len(self.flying))
            self.calls += 1
            return self.gate if 2 <= self.calls <= LANES + 1 else None

    def _leave(self, key: str) -> None:
        with self.lock:
            self.flying.remove(key)

    def create(self, event: DesiredEvent) -> RemoteEvent:
        gate = self._enter(event.session_id)
        try:
            if gate is not None:
                gate.wait(timeout=20)  # only fills when LANES writes are in flight together
            if event.session_id in self.fail:
                raise Transient("connection reset")
            if event.session_id in self.refuse:
                raise WriteRefused("the server would email the attendees")
            with self.lock:
                return super().create(event)
        finally:
            self._leave(event.session_id)

    def delete(self, remote_id: str, etag: str | None) -> None:
        self._enter(remote_id)
        try:
            if remote_id == self.slow:  # lets any write that would overlap it start first
                self.slowed.clear()
                self.slowed.wait(timeout=1)
            else:
                self.slowed.set()
            with self.lock:
                super().delete(remote_id, etag)
        finally:
            self._leave(remote_id)


@pytest.fixture
def h() -> Iterator[Harness]:
    world = Harness([])
    world.backend = Parallel(world.cal)  # type: ignore[assignment]
    yield world
    world.close()


def book(h: Harness, n: int) -> list[str]:
    out = []
    for i in range(n):
        start = NOW + timedelta(days=2, hours=i)
        customer = Customer(f"c{i}@example.org", f"C{i}", "UTC")
        out.append(services.book(h.ctx, ADMIN, customer, start, start + timedelta(hours=1)).id)
    return out


def recorded(h: Harness) -> dict[str, tuple[str, str | None, str | None]]:
    with h.db.read() as orm:
        rows = orm.scalars(select(MirrorRow).where(MirrorRow.calendar_id == h.cal_id))
        return {m.session_id: (m.remote_id, m.written_etag, m.seen_etag) for m in rows}


def test_writes_of_one_calendar_overlap_and_each_is_recorded_once(h: Harness) -> None:
    backend: Parallel = h.backend  # type: ignore[assignment]
    backend.gate = threading.Barrier(LANES, timeout=20)
    book(h, N)
    report = h.cycle()
    assert report.error is None and report.write_failures == 0, report
    assert report.writes == N and backend.calls == N
    assert backend.most == LANES  # the barrier filled: LANES writes were in flight at once
    rows = recorded(h)
    assert len(rows) == N == len(h.cal.events)
    for remote_id, etag, seen in rows.values():
        assert etag == seen == h.cal.events[remote_id].etag
    again = h.cycle()
    assert again.writes == 0 and backend.calls == N  # nothing written twice


def test_a_failed_or_refused_write_among_others_waits_for_the_next_cycle(h: Harness) -> None:
    backend: Parallel = h.backend  # type: ignore[assignment]
    sids = book(h, N)
    backend.fail, backend.refuse = {sids[5]}, {sids[9]}
    report = h.cycle()
    assert report.writes == N - 2 and report.write_failures == 2, report
    assert report.error and "connection reset" in report.error
    rows = recorded(h)
    assert rows[sids[5]][1] is None and rows[sids[9]][1] is None  # unsettled, as before
    assert len(h.cal.events) == N - 2
    told = [e for e in h.emails(ADMIN) if e[0] == NoticeKind.WRITE_REFUSED.value]
    assert len(told) == 1  # the admin is told once, from the recording thread
    backend.fail, backend.refuse = set(), set()
    second = h.cycle()
    assert second.error is None and second.writes == 2  # exactly the two, once each
    assert len(h.cal.events) == N
    assert h.cycle().writes == 0


def test_two_writes_of_one_event_never_overlap(h: Harness) -> None:
    """Writes that share a session or an event id run in plan order, one after the other
    (the backend asserts that no key is in flight twice)."""
    backend: Parallel = h.backend  # type: ignore[assignment]
    backend.slow = "/cal/b.ics"
    plan: list[Write] = [
        Delete(sid, f"/cal/{name}.ics", None)
        for sid, name in [("s0", "a"), ("s1", "b"), ("s1", "c"), ("s2", "b"), ("s3", "e")]
    ]
    report = CycleReport(h.cal_id)
    writes.execute(h.ctx, h.settings.rules, h.cal_id, backend, plan, report)
    assert report.write_failures == 0 and report.writes == 5, report
    assert backend.calls == 5  # and the backend saw no session or event id twice at once


def test_writes_past_the_budget_wait_and_those_in_flight_are_recorded(h: Harness) -> None:
    backend: Parallel = h.backend  # type: ignore[assignment]
    book(h, N)
    h.take_lease("w1")
    report = sync_calendar(
        h.ctx, h.settings, h.cal_id, backend, Fence("w1", lambda: backend.calls >= 9)
    )
    started = backend.calls
    assert 9 <= started <= 9 + LANES and report.writes == started
    rows = recorded(h)
    written = [sid for sid, (_, etag, _) in rows.items() if etag is not None]
    assert len(written) == started == len(h.cal.events)
    assert h.cycle().writes == N - started
    assert len(h.cal.events) == N


class Ordered(Parallel):
    """``lanes`` writes at once; each write's start sets its event in ``started``."""

    def __init__(self, cal: MemoryCalendar, lanes: int) -> None:
        super().__init__(cal)
        self.write_concurrency = lanes
        self.order: list[str] = []
        self.started: dict[str, threading.Event] = {}

    def create(self, event: DesiredEvent) -> RemoteEvent:
        with self.lock:
            self.order.append(event.session_id)
            self.started.setdefault(event.session_id, threading.Event()).set()
        return super().create(event)


@pytest.mark.parametrize("lanes", [1, 2])
def test_the_next_write_starts_before_the_last_result_is_recorded(
    h: Harness, monkeypatch: pytest.MonkeyPatch, lanes: int
) -> None:
    """syncd's bookkeeping of a landed write (its settling, a batch's transaction) never
    keeps the server waiting: the write that takes its place has started by then, also
    one write at a time, and still no more are in flight than the backend allows."""
    backend = Ordered(h.cal, lanes)
    h.backend = backend  # type: ignore[assignment]
    monkeypatch.setattr(writes, "PAYS", 0.0)  # instant writes: keep every lane (see Paced)
    sids = book(h, 12)
    plan = sorted(sids)  # the planner's order: by session id
    late: list[str] = []  # writes whose successor had not started when they were settled
    real = writes._settle

    def settle(*args: Any, **kwargs: Any) -> None:
        sid = args[2].session_id
        i = plan.index(sid)
        if 1 <= i < len(plan) - lanes and not late:  # past the first write, which goes alone
            with backend.lock:
                successor = backend.started.setdefault(plan[i + lanes], threading.Event())
            if not successor.wait(timeout=2):
                late.append(sid)
        real(*args, **kwargs)

    monkeypatch.setattr(writes, "_settle", settle)
    report = h.cycle()
    assert report.writes == 12 and report.write_failures == 0, report
    assert late == [], (late, plan, backend.order)
    assert backend.order == plan  # started in plan order
    assert backend.most <= lanes


class Paced(MemoryBackend):
    """4 writes allowed at once, each taking 20 ms; ``serial``: the server stores one at a
    time (its lock held throughout), as Radicale does. Counts what overlaps late in the run."""

    write_concurrency = LANES

    def __init__(self, cal: MemoryCalendar, serial: bool) -> None:
        super().__init__(cal)
        self.lock, self.store = threading.Lock(), threading.Lock()
        self.serial = serial
        self.calls = self.flying = self.late_most = 0

    def create(self, event: DesiredEvent) -> RemoteEvent:
        with self.lock:
            self.calls += 1
            self.flying += 1
            if self.calls > 20:  # well past the probe (the first write and 3 a lane)
                self.late_most = max(self.late_most, self.flying)
        try:
            if self.serial:
                with self.store:
                    time.sleep(0.02)
            else:
                time.sleep(0.02)
            with self.lock:
                return super().create(event)
        finally:
            with self.lock:
                self.flying -= 1


@pytest.mark.parametrize(("serial", "late"), [(True, 1), (False, LANES)])
def test_writes_in_flight_together_go_on_only_where_they_pay(
    h: Harness, serial: bool, late: int
) -> None:
    """Against a server that stores one write at a time, writes in flight together land
    no faster than one alone, and only cost it: after a probe the rest go one at a time.
    Against one that stores them in parallel they land about 4 times as fast: they go on."""
    backend = Paced(h.cal, serial)
    h.backend = backend  # type: ignore[assignment]
    book(h, 30)
    report = h.cycle()
    assert report.writes == 30 and report.write_failures == 0, report
    assert backend.late_most == late


class Prepared(MemoryBackend):
    """One write at a time (5 ms each), and creates built ahead: records which thread
    prepared each event object and whether its create found it prepared."""

    write_concurrency = 1

    def __init__(self, cal: MemoryCalendar) -> None:
        super().__init__(cal)
        self.lock = threading.Lock()
        self.prepared: dict[int, str] = {}  # id(event) -> the thread that prepared it
        self.found: list[str | None] = []  # per create: who had prepared it (None: nobody)
        self.bad = ""  # a session whose event cannot be built (BadPrepare)

    def prepare_create(self, event: DesiredEvent) -> None:
        with self.lock:
            self.prepared[id(event)] = threading.current_thread().name

    def create(self, event: DesiredEvent) -> RemoteEvent:
        with self.lock:
            self.found.append(self.prepared.pop(id(event), None))
        time.sleep(0.005)
        with self.lock:
            return super().create(event)


def test_creates_are_prepared_ahead_by_the_recording_thread(h: Harness) -> None:
    """What a create sends is built while the writes before it are in flight, on the
    thread that records results, not on the lane between two writes: the server never
    waits for it. Only the first write (alone) and a lane's very first may be built on
    the spot."""
    backend = Prepared(h.cal)
    h.backend = backend  # type: ignore[assignment]
    book(h, 20)
    caller = threading.current_thread().name
    report = h.cycle()
    assert report.writes == 20 and report.write_failures == 0, report
    assert len(backend.found) == 20
    assert backend.found[0] is None  # the first goes alone, as it is
    ahead = [who for who in backend.found[2:] if who == caller]
    assert len(ahead) == 18, backend.found


class BadPrepare(Prepared):
    """Building one event ahead fails (an adapter bug); its create then fails as well."""

    def prepare_create(self, event: DesiredEvent) -> None:
        if event.session_id == self.bad:
            raise ValueError("cannot build this one")
        super().prepare_create(event)

    def create(self, event: DesiredEvent) -> RemoteEvent:
        if event.session_id == self.bad:
            raise ValueError("cannot build this one")
        return super().create(event)


def test_an_event_that_cannot_be_prepared_fails_alone(h: Harness) -> None:
    """Preparing ahead never turns one bad event into a stopped cycle: its write fails on
    its own, as when nothing was prepared, and every other write lands."""
    backend = BadPrepare(h.cal)
    h.backend = backend  # type: ignore[assignment]
    sids = sorted(book(h, 12))
    backend.bad = sids[6]
    report = h.cycle()
    assert (report.writes, report.write_failures) == (11, 1), report
    assert report.error is not None and "cannot build" in report.error
    assert {sid for sid, (_, etag, _) in recorded(h).items() if etag} == set(sids) - {sids[6]}


def test_a_recorded_write_settles_only_a_live_session_with_no_gesture_pending(
    h: Harness,
) -> None:
    """Recording a write that landed marks its mirror settled (the cycle's next pass then
    need not load it) only where :func:`settle_marks` would: the session is live and no
    gesture of the admin's waits on it. A write whose answer showed someone else's event
    settles nothing."""
    live, canceled, gesture, foreign = sorted(book(h, 4))
    h.cycle()
    services.cancel(h.ctx, canceled, "ill")
    with h.db.write() as orm:
        orm.query(MirrorRow).update({MirrorRow.settled: False})
        pending = PendingIntent(gesture, "cancel", {}, "observed", NOW)
        state.save_intent(orm, h.cal_id, pending)
    batch = [
        writes._Written(sid, f'"e-{sid}"', "digest", href=f"/cal/{sid}.ics")
        for sid in (live, canceled, gesture)
    ]
    batch.append(writes._Written(foreign, None, "digest", seen='"theirs"'))
    writes._record(h.ctx, h.cal_id, batch)
    with h.db.read() as orm:
        settled = {m.session_id: m.settled for m in orm.scalars(select(MirrorRow))}
    assert settled == {live: True, canceled: False, gesture: False, foreign: False}


class BrokenId(Prepared):
    """Naming one session's event breaks (a bug outside any single write's attempt)."""

    def remote_id_for(self, uid: str, session_id: str) -> str:
        on_lane = threading.current_thread().name.startswith("syncd-writes")
        if session_id == self.bad and on_lane:
            raise RuntimeError("no id for this one")
        return super().remote_id_for(uid, session_id)


def test_a_lane_that_breaks_outside_a_write_is_the_cycles_error(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What breaks a lane between writes is not lost on its thread: the writes already
    in flight are recorded, none starts after it, and the cycle reports the error."""
    monkeypatch.setattr(writes, "AHEAD", 0)  # the lanes prepare their writes themselves
    backend = BrokenId(h.cal)
    h.backend = backend  # type: ignore[assignment]
    sids = sorted(book(h, 12))
    backend.bad = sids[6]
    report = h.cycle()
    assert report.error is not None and "no id for this one" in report.error, report
    assert 1 <= report.writes < 12 and report.write_failures == 0, report
    assert len([etag for _, etag, _ in recorded(h).values() if etag]) == report.writes
