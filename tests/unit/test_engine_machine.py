"""A Hypothesis state machine over the engine (planner + runner + store), hostile client.

In the spirit of vdirsyncer's SyncMachine, against the in-memory calendar: the admin drags
(UTC instants, floating wall times, an unknown TZID), deletes, undoes, copies events (new
UID, same notes and X- properties), edits titles and notes with and without keywords
(one customer is named "Cancel: Bob"), changes STATUS; the server re-serializes; the
platform reschedules and cancels concurrently; reads, GETs and writes fail, answers are
lost, a second worker commits between another's plan and commit, a concurrent edit makes
syncd's write lose its ``If-Match`` (412), and the process crashes between steps.

Invariants: every admin-calendar action comes from one admin gesture on that session;
every customer email from exactly one action, never "moved from 12:00 to 12:00"; after
quiescence the last email each customer got states the session's final state, and the
event and the session agree.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import select

from syncd.domain.model import Actor, Status
from syncd.engine.planner import BreakerRules
from syncd.engine.runner import EngineSettings
from syncd.errors import SyncdError
from syncd.ports import RemoteEvent
from syncd.services import booking as services
from syncd.store.models import HistoryRow
from tests.fakes.memory_backend import MemoryBackend
from tests.unit.harness import ADMIN, ADMIN_TZ, Harness

NAMES = ["Cancel: Bob", "Reschedule: Ann", "Cy", "Di"]
TITLES = [
    "renamed by the admin",
    "Cancel: Bob — 1:1 session",
    "Cancel: Bob",
    "Reschedule: Ann — 1:1 session, bring notes",
    "cancel: I am ill",
    "reschedule: please pick another slot",
]
NOTES = ["bring the contract", "cancel: family matters", "new time: next week please", ""]


def meaning(text: str, own_title: str = "") -> set[str]:
    """What the admin meant by writing ``text`` first in the title (of an event whose
    syncd title is ``own_title``) or the notes: syncd's own title, cut or extended, is
    the customer's name, not a command."""
    lower = text.lower()
    if own_title and (own_title.lower().startswith(lower) or lower.startswith(own_title.lower())):
        return set()
    if lower.startswith("cancel:"):
        return {"canceled"}
    if lower.startswith(("reschedule:", "new time:")):
        return {"let_customer_choose"}
    return set()


class Crash(BaseException):
    """The process dies (kill -9) in the middle of a step."""


class CrashingBackend(MemoryBackend):
    """Dies at its first calendar write, after the cycle committed."""

    def create(self, event):  # type: ignore[no-untyped-def]
        raise Crash()

    def update(self, remote_id, event, etag):  # type: ignore[no-untyped-def]
        raise Crash()

    def delete(self, remote_id, etag):  # type: ignore[no-untyped-def]
        raise Crash()


class EngineMachine(RuleBasedStateMachine):
    """The calendar, the database and a count of the admin's gestures per session."""

    @initialize(every_change=st.booleans())
    def setup(self, every_change: bool) -> None:
        """``every_change``: a feed that reports every change since a cursor, so a cycle
        that wrote ends without reading its echoes (Radicale, Google, Graph), or one that
        may not (Xandikos), so it reads them before it ends."""
        self.h = Harness(
            NAMES,
            EngineSettings(
                settle=timedelta(minutes=2),
                breaker=BreakerRules(100, 1.0, False),
                reconcile=timedelta(minutes=10),
            ),
        )
        self.h.cal.every_change = every_change
        self.gestures = [0] * len(NAMES)
        #: What the admin's gestures on each session meant, as the gesture table reads them.
        self.meant: list[set[str]] = [set() for _ in NAMES]
        #: The highest SEQUENCE of the admin's revisions a read of syncd's could have shown
        #: (a revision written over before the next cycle, as an undo can, is never seen).
        self.max_seq = [0] * len(NAMES)
        real_cycle = self.h.cycle

        def cycle(*args: Any, **kwargs: Any) -> Any:
            self.note_seen()
            return real_cycle(*args, **kwargs)

        self.h.cycle = cycle  # type: ignore[method-assign]
        self.admin_etag: list[str | None] = [None] * len(NAMES)
        self.before: dict[int, RemoteEvent] = {}
        #: When each event in ``before`` was first touched (its gestures settle from then).
        self.touched_at: dict[int, datetime] = {}
        self.copies = 0

    def teardown(self) -> None:
        """Every run ends quiet: the final state is checked once more, then released."""
        if hasattr(self, "h"):
            try:
                self.quiesce()
            finally:
                self.h.close()

    # --- helpers --------------------------------------------------------------------------
    def touch(self, i: int) -> RemoteEvent | None:
        ev = self.h.event(i)
        if ev is not None and i not in self.before:
            self.before[i] = ev
            self.touched_at[i] = self.h.now
        return ev

    def note_seen(self) -> None:
        """Before a cycle reads the calendar: the admin's revisions it can see now."""
        for i in range(len(NAMES)):
            ev = self.h.event(i)
            if ev is not None and ev.etag == self.admin_etag[i]:
                self.max_seq[i] = max(self.max_seq[i], ev.content.sequence)

    def live(self, i: int) -> bool:
        return self.h.session(i).status is not Status.CANCELED

    # --- the admin in a calendar app ------------------------------------------------------
    def edit(self, i: int, **change: Any) -> None:
        """The admin saves the event; their client bumps SEQUENCE, as real ones do."""
        ev = self.h.event(i)
        assert ev is not None
        seq = ev.content.sequence + 1
        self.h.cal.human_set(ev.remote_id, sequence=seq, **change)
        self.admin_etag[i] = self.h.cal.events[ev.remote_id].etag

    @rule(
        i=st.integers(0, 3),
        hours=st.integers(-30, 30).filter(lambda x: x != 0),
        style=st.sampled_from(["utc", "floating", "unknown-tzid", "microseconds"]),
    )
    def admin_drag(self, i: int, hours: int, style: str) -> None:
        ev = self.touch(i)
        if ev is None:
            return
        start, end = instants(ev)
        d = timedelta(hours=hours)
        self.drag_to(i, start + d, end + d, style)

    @rule(i=st.integers(0, 3), seconds=st.integers(1, 150))
    def admin_drag_soon(self, i: int, seconds: int) -> None:
        """To a time in the future now that is in the past once the window settled."""
        if self.touch(i) is not None:
            start = self.h.now + timedelta(seconds=seconds)
            self.drag_to(i, start, start + timedelta(hours=1), "utc")

    def drag_to(self, i: int, start: datetime, end: datetime, style: str) -> None:
        extra: dict[str, Any] = {"floating": False, "unreadable": ""}
        if style == "floating":  # the instant, written as wall time in the admin's zone
            start = start.astimezone(ADMIN_TZ_INFO).replace(tzinfo=UTC)
            end = end.astimezone(ADMIN_TZ_INFO).replace(tzinfo=UTC)
            extra["floating"] = True
        elif style == "unknown-tzid":
            extra["unreadable"] = "unknown time zone 'Mars/Olympus'"
        elif style == "microseconds":
            start, end = start + timedelta(microseconds=300), end + timedelta(microseconds=700)
        self.edit(i, start=start, end=end, **extra)
        self.gestures[i] += 1
        if style != "unknown-tzid":  # unreadable: no action, whatever the times say
            self.meant[i].add("rescheduled")

    @rule(i=st.integers(0, 3), shape=st.sampled_from(["all_day", "recurring"]))
    def admin_bad_shape(self, i: int, shape: str) -> None:
        if self.touch(i) is not None:
            self.edit(i, **{shape: True})
            self.gestures[i] += 1

    @rule(i=st.integers(0, 3))
    def admin_delete(self, i: int) -> None:
        if self.touch(i) is not None:
            self.h.cal.human_delete(self.h.rid(i))
            self.gestures[i] += 1
            self.meant[i].add("canceled")

    @rule(i=st.integers(0, 3), status=st.sampled_from(["cancelled", "confirmed", "tentative"]))
    def admin_status(self, i: int, status: str) -> None:
        ev = self.touch(i)
        if ev is not None:
            self.edit(i, status=status)
            self.gestures[i] += 1
            if status == "cancelled":
                self.meant[i].add("canceled")

    @rule(i=st.integers(0, 3))
    def admin_undo(self, i: int) -> None:
        before = self.before.get(i)
        if before is not None and self.live(i):  # an undo after the cancel is a new event
            self.h.cal.human_put(before)
            self.admin_etag[i] = self.h.cal.events[before.remote_id].etag
            if self.h.now - self.touched_at[i] >= self.h.settings.settle:
                # Once settled, what it undoes may have been applied: moving the event
                # back is then a gesture of its own (within the window it is none).
                self.gestures[i] += 1
                self.meant[i].add("rescheduled")

    @rule(i=st.integers(0, 3), hours=st.integers(1, 40))
    def admin_copies(self, i: int, hours: int) -> None:
        """A client duplicates the event (new UID, same notes and X- properties)."""
        ev = self.h.event(i)
        if ev is not None:
            self.copies += 1
            d = timedelta(hours=hours)
            self.h.cal.human_copy(
                ev.remote_id,
                f"/cal/copy-{self.copies}.ics",
                f"copy-{self.copies}@client",
                start=ev.content.start + d,
                end=ev.content.end + d,
            )

    @rule(i=st.integers(0, 3), title=st.sampled_from(TITLES))
    def admin_title(self, i: int, title: str) -> None:
        ev = self.touch(i)
        if ev is not None:
            self.edit(i, summary=title)
            self.gestures[i] += 1
            self.meant[i] |= meaning(title, f"{NAMES[i]} — 1:1 session")

    @rule(i=st.integers(0, 3), line=st.sampled_from(NOTES))
    def admin_notes(self, i: int, line: str) -> None:
        ev = self.touch(i)
        if ev is not None:
            self.edit(i, description=f"{line}\n\n{ev.content.description}")
            self.gestures[i] += 1
            self.meant[i] |= meaning(line)

    @rule(i=st.integers(0, 3))
    def server_noise(self, i: int) -> None:
        if self.h.rid(i) in self.h.cal.events:
            self.noise(self.h.rid(i))

    def noise(self, rid: str) -> None:
        """The server re-serializes one event; the admin's revision stays theirs."""
        ours = [i for i in range(len(NAMES)) if self.h.rid(i) == rid]
        noisy = [i for i in ours if self.h.cal.events[rid].etag == self.admin_etag[i]]
        self.h.cal.noise(rid)
        for i in noisy:  # the admin's revision, re-serialized
            self.admin_etag[i] = self.h.cal.events[rid].etag

    # --- the platform and the infrastructure ----------------------------------------------
    @rule(i=st.integers(0, 3), days=st.integers(1, 5), cancel=st.booleans())
    def platform_changes(self, i: int, days: int, cancel: bool) -> None:
        s = self.h.session(i)
        try:
            if cancel:
                services.cancel(self.h.ctx, s.id, "closed", actor=Actor.ADMIN)
            else:
                new = s.start + timedelta(days=days, minutes=7)
                services.reschedule(self.h.ctx, s.id, new, actor=Actor.ADMIN)
        except SyncdError:
            pass  # refused (already canceled): nothing happened

    @rule(
        fault=st.sampled_from(
            ["none", "reads", "writes", "gets", "lost", "412", "race", "crash", "hide"]
        ),
        seconds=st.integers(0, 200),
    )
    def cycle(self, fault: str, seconds: int) -> None:
        h, f = self.h, self.h.cal.faults
        h.now += timedelta(seconds=seconds)
        f.fail_reads, f.fail_writes, f.fail_gets = (
            fault == "reads",
            fault == "writes",
            fault == "gets",
        )
        h.backend.lose_answers = fault == "lost"
        if fault == "412":  # another client saves every event right after syncd's read
            f.after_feed = lambda: [self.noise(r) for r in list(h.cal.events)]  # type: ignore[func-returns-value]
        if fault == "hide":  # the server's delta leaves every change out, token advanced
            f.hide_in_feed = set(h.cal.events) | {rid for _, rid in h.cal.log}
        if fault == "race":  # a second worker runs a whole cycle between plan and commit
            other = MemoryBackend(h.cal)
            f.after_feed = lambda: h.cycle(backend=other)  # type: ignore[assignment,return-value]
        try:
            if fault == "crash":
                with contextlib.suppress(Crash):
                    h.cycle(backend=CrashingBackend(h.cal))
            else:
                h.cycle()
        finally:
            f.fail_reads = f.fail_writes = f.fail_gets = False
            f.after_feed = None
            f.hide_in_feed = set()
            h.backend.lose_answers = False

    @rule()
    def racing_workers_once_settled(self) -> None:
        """The settle window passes; a second worker commits between this one's plan and
        its commit (a cycle that outlived its lease)."""
        h = self.h
        h.now += timedelta(minutes=3)
        other = MemoryBackend(h.cal)
        h.cal.faults.after_feed = lambda: h.cycle(backend=other)  # type: ignore[assignment,return-value]
        try:
            h.cycle()
        finally:
            h.cal.faults.after_feed = None

    @rule()
    def quiesce(self) -> None:
        """Faults off, the settle window passes, cycles run until nothing changes."""
        self.h.settle(cycles=5)
        self.before = {}
        self.check_final_state()

    # --- invariants -----------------------------------------------------------------------
    def history(self) -> list[HistoryRow]:
        with self.h.db.read() as orm:
            return list(orm.scalars(select(HistoryRow).order_by(HistoryRow.id)))

    @invariant()
    def every_admin_action_comes_from_a_gesture(self) -> None:
        if not hasattr(self, "h"):
            return
        for i, sid in enumerate(self.h.sids):
            acted = [a for s, a in self.h.admin_actions() if s == sid]
            assert len(acted) <= self.gestures[i], (NAMES[i], acted, self.gestures[i])
            assert set(acted) <= self.meant[i], (NAMES[i], acted, self.meant[i])

    @invariant()
    def every_customer_email_comes_from_one_action(self) -> None:
        if not hasattr(self, "h"):
            return
        history = self.history()
        for sid in self.h.sids:
            moves = [x for x in history if x.session_id == sid and x.action != "booked"]
            rows = [e for e in self.h.customer_emails() if e[2]["session"]["id"] == sid]
            assert len(rows) <= len(moves), (sid, [r[0] for r in rows], [m.action for m in moves])
            for kind, _, payload in rows:
                data = payload.get("data", {})
                if kind == "rescheduled" and data.get("old_start"):
                    assert data["old_start"] != payload["session"]["start"], "moved to itself"

    def check_final_state(self) -> None:
        for i, sid in enumerate(self.h.sids):
            s = self.h.session(i)
            ev = self.h.event(i)
            if s.status is Status.CANCELED:
                assert ev is None or ev.content.status == "cancelled", f"{sid}: event left"
            else:
                assert ev is not None, f"{sid} live but its event is missing"
                c = ev.content
                assert instants(ev) == (s.start, s.end), (NAMES[i], c, s)
                assert not c.all_day and not c.recurring and not c.unreadable
                assert c.status != "cancelled"
                assert s.start.microsecond == 0 and s.end.microsecond == 0
                wrote_over = self.admin_etag[i] is not None and ev.etag != self.admin_etag[i]
                if wrote_over:  # syncd wrote over the admin's revisions: newer than any seen
                    assert c.sequence > self.max_seq[i], (NAMES[i], c.sequence, self.max_seq[i])
            rows = [e for e in self.h.emails() if e[1] != ADMIN and e[2]["session"]["id"] == sid]
            kind, _, payload = rows[-1]
            if s.status is Status.CANCELED:
                assert kind == "canceled", (NAMES[i], kind)
            elif s.status is Status.AWAITING_CUSTOMER:
                assert kind == "choose", (NAMES[i], kind)
            else:
                assert kind in ("booked", "rescheduled", "confirmed"), (NAMES[i], kind)
                assert payload["session"]["start"] == s.start.isoformat(), (NAMES[i], kind)


ADMIN_TZ_INFO = ZoneInfo(ADMIN_TZ)


def instants(ev: RemoteEvent) -> tuple[datetime, datetime]:
    """The event's instants as the admin meant them (the model's own reading)."""
    c = ev.content
    start, end = c.start.replace(microsecond=0), c.end.replace(microsecond=0)
    if not c.floating:
        return start, end
    return (
        start.replace(tzinfo=ADMIN_TZ_INFO).astimezone(UTC),
        end.replace(tzinfo=ADMIN_TZ_INFO).astimezone(UTC),
    )


TestEngineMachine = EngineMachine.TestCase
TestEngineMachine.settings = settings(
    max_examples=30,
    # No shrinking: a failing run is reported as found, within pytest's timeout (drop this
    # line locally to shrink one).
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_lost_write_answer_is_adopted_without_an_action() -> None:
    """A platform change written, its answer lost: adopted on the next read, no action."""
    h = Harness(NAMES)
    try:
        services.reschedule(
            h.ctx, h.sids[0], h.session(0).start + timedelta(days=1), actor=Actor.ADMIN
        )
        h.backend.lose_answers = True
        h.cycle()
        h.backend.lose_answers = False
        ev = h.event(0)
        assert ev is not None and ev.content.start == h.session(0).start  # written, not recorded
        h.settle()
        assert h.admin_actions() == []
    finally:
        h.close()


def test_command_left_by_an_interrupted_write_is_never_read_twice() -> None:
    """`reschedule:` consumed, the placeholder write fails, the platform moves the session,
    then the admin edits the title: no second "choose" email."""
    h = Harness(NAMES)
    try:
        rid = h.rid(2)
        h.cal.human_set(rid, summary="reschedule: sorry, please pick again")
        h.cycle()  # seen; the settle window starts
        h.cal.faults.fail_writes = True
        h.now += timedelta(minutes=3)
        h.cycle()  # the gesture is applied; writing the placeholder fails
        h.cal.faults.fail_writes = False
        assert h.session(2).status is Status.AWAITING_CUSTOMER
        services.reschedule(
            h.ctx, h.sids[2], h.session(2).start + timedelta(days=1), actor=Actor.ADMIN
        )
        h.now += timedelta(minutes=3)
        h.cycle()  # the platform change is written, and the stale command goes with it
        assert "reschedule:" not in h.cal.events[rid].content.summary
        h.cal.human_set(rid, summary="Cy, bring the contract")
        h.settle(cycles=3)
        assert [a for _, a in h.admin_actions()] == ["let_customer_choose"]
    finally:
        h.close()
