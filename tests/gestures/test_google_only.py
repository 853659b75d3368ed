"""What only Google has, beyond the shared gesture suite (test_gestures.py): the wire shape
of a mirrored event, one request per idle cycle, revived event ids (no second event next
to a tombstone), a revoked refresh token, and storms of 429/403 rate-limit answers. Through
the faithful fake and the real google-api-python-client (tests/integration/google_world.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from syncd.domain.model import Actor, Status
from syncd.engine.runner import CycleReport
from syncd.store.models import CalendarRow, IntentRow
from tests.cli_helpers import syncd
from tests.fakes.google_calendar import (
    DEFAULT_REFRESH_TOKEN,
    RATE_LIMIT_403,
    RATE_LIMIT_429,
    USER_RATE_LIMIT_403,
    FakeGoogleCalendar,
    RequestInfo,
)
from tests.integration.google_world import ADMIN, CAL, GoogleWorld

MakeWorld = Callable[..., GoogleWorld]


@pytest.fixture
def fake() -> Iterator[FakeGoogleCalendar]:
    with FakeGoogleCalendar(owner=ADMIN) as f:
        yield f
        assert f.internal_errors == [], f.internal_errors[0]


@pytest.fixture
def google_world(tmp_path: Path, fake: FakeGoogleCalendar) -> MakeWorld:
    def make(**options: Any) -> GoogleWorld:
        return GoogleWorld(tmp_path, fake, **options)

    return make


def api_requests(fake: FakeGoogleCalendar) -> Counter[str]:
    """Calendar API requests by method since the last reset (token refreshes left out)."""
    with fake.lock:
        return Counter({op: n for (_, op), n in fake.request_log.items() if op != "token"})


def converge(w: GoogleWorld, max_cycles: int = 40) -> list[str]:
    """Cycles until one runs clean and changes nothing; every action taken on the way."""
    actions: list[str] = []
    for _ in range(max_cycles):
        report: CycleReport = w.sync()
        actions += report.actions
        quiet = not (report.actions or report.writes or report.write_failures)
        with w.db.read() as orm:
            pending = orm.scalar(select(func.count()).select_from(IntentRow)) or 0
        if report.error is None and quiet and not pending:
            return actions
    raise AssertionError(f"no convergence in {max_cycles} cycles; actions so far: {actions}")


def test_booking_is_mirrored_and_an_idle_cycle_is_one_request(google_world: MakeWorld) -> None:
    w = google_world()
    sid = w.book()
    w.fake.reset_log()
    report = w.sync()
    assert report.error is None and report.writes == 1
    # One read: a cycle that wrote on Google does not read its own echo before it ends.
    assert api_requests(w.fake) == Counter({"events.list": 1, "events.insert": 1})
    ev, s = w.event(sid), w.session(sid)
    assert (ev.content.start, ev.content.end) == (s.start, s.end)
    assert ev.content.uid == f"syncd-{sid}@book.example.com"
    assert ev.content.session_id == sid
    assert "ann@example.org" in ev.content.description
    raw = w.raw(sid)
    assert raw["extendedProperties"]["private"]["syncd_session"] == sid
    assert raw["iCalUID"] == f"syncd-{sid}@book.example.com"
    assert w.fake.send_updates_of(CAL, w.remote_id(sid)) == "none"  # Google mails nobody
    w.assert_quiet()
    w.fake.reset_log()
    report = w.sync()
    assert report.error is None and report.actions == [] and report.writes == 0
    assert api_requests(w.fake) == Counter({"events.list": 1})
    assert w.fake.count("token") <= 1  # a new backend per cycle refreshes its access token


def test_mass_deletion_trips_the_breaker_and_restore_revives_the_events(
    google_world: MakeWorld,
) -> None:
    w = google_world()
    sids = [w.book(days=2 + i, name=f"C{i}") for i in range(8)]
    w.sync()
    ids = {sid: w.remote_id(sid) for sid in sids}
    for sid in sids[:5]:
        w.fake.human_delete(CAL, ids[sid])
    report = w.sync()
    assert report.tripped and report.held == 5 and report.actions == [], report
    assert all(w.session(s).status is Status.BOOKED for s in sids)
    assert all(o[0] == "booked" for o in w.customer_rows())
    assert ("breaker_tripped", ADMIN, "pending") in w.outbox()
    assert w.sync().actions == []  # still held, nothing happens
    assert all(w.session(s).status is Status.BOOKED for s in sids)
    cfg = w.config_file()
    status = syncd(cfg, "status")
    assert "BREAKER TRIPPED" in status.out, status
    r = syncd(cfg, "breaker", "restore", str(w.cal_id))
    assert r.code == 0, r.err
    for sid in sids[:5]:
        assert w.remote_id(sid) == ids[sid]
        raw = w.raw(sid)
        assert raw["id"] == ids[sid] and raw["status"] == "confirmed"  # the same event, revived
        assert w.event(sid).content.start == w.session(sid).start
    assert {k: len(v) for k, v in w.live_events().items()} == {sid: 1 for sid in sids}
    assert len(w.fake.events(CAL)) == 8  # no second event next to a tombstone
    assert not w.calendar()["tripped"]
    assert all(o[0] == "booked" for o in w.customer_rows())
    w.assert_quiet()


def test_revoked_refresh_token_pauses_the_calendar_and_tells_the_admin(
    google_world: MakeWorld,
) -> None:
    w = google_world()
    sids = [w.book(days=2 + i, name=f"C{i}") for i in range(3)]
    w.sync()
    w.fake.revoke(DEFAULT_REFRESH_TOKEN)
    for _ in range(2):
        report = w.sync()
        assert report.auth_revoked and report.error is not None, report
        assert report.actions == [] and report.writes == 0
    cal = w.calendar()
    assert cal["paused_reason"] and "credentials refused" in cal["paused_reason"]
    assert "invalid_grant" in cal["paused_reason"]
    assert [o for o in w.outbox() if o[0] == "auth_revoked"] == [("auth_revoked", ADMIN, "pending")]
    assert all(w.session(s).status is Status.BOOKED for s in sids)
    with w.db.read() as orm:
        assert orm.scalar(select(func.count()).select_from(IntentRow)) == 0  # no deletion
    status = syncd(w.config_file(), "status")
    assert "PAUSED: credentials refused" in status.out, status
    assert "invalid_grant" in status.out
    # Recovery, as 'syncd auth google' does it: a new refresh token, the calendar unpaused.
    w.fake.add_refresh_token("1//renewed")
    w.write_credentials("1//renewed")
    with w.db.write() as orm:
        orm.get_one(CalendarRow, w.cal_id).paused_reason = None
    report = w.sync()
    assert report.error is None and report.actions == [] and report.writes == 0, report
    assert all(w.session(s).status is Status.BOOKED for s in sids)
    w.assert_quiet()


@pytest.mark.parametrize("seed", [20, 21, 22])
def test_rate_limit_storm_applies_every_change_exactly_once(
    google_world: MakeWorld, seed: int
) -> None:
    w = google_world()
    fake = w.fake
    faults: list[int] = []
    pick = fake._pick_fault

    def counting(info: RequestInfo) -> Any:
        fault = pick(info)
        if fault is not None:
            faults.append(fault.status)
        return fault

    fake._pick_fault = counting  # type: ignore[method-assign]
    sids = [w.book(days=2 + i, name=f"C{i}") for i in range(10)]
    fake.inject_errors(0.3, kinds=[RATE_LIMIT_429, RATE_LIMIT_403, USER_RATE_LIMIT_403], seed=seed)
    assert converge(w) == []
    ids = {sid: w.remote_id(sid) for sid in sids}
    moved = {}
    for sid in sids[:3]:
        new_start = w.session(sid).start + timedelta(days=10, hours=1)
        moved[sid] = new_start
        fake.human_move(
            CAL,
            ids[sid],
            new_start.isoformat(),
            (new_start + timedelta(hours=1)).isoformat(),
            tz="America/New_York",
        )
    for sid in sids[3:5]:
        fake.human_delete(CAL, ids[sid])
    w.human.edit_title(ids[sids[5]], "cancel: double-booked")
    w.human.add_note_line(ids[sids[6]], "reschedule: pick another day")
    new = [w.book(days=20 + i, name=f"N{i}") for i in range(3)]
    actions = converge(w)
    assert sorted(actions) == sorted(
        [
            *(f"{sid}: rescheduled" for sid in sids[:3]),
            *(f"{sid}: canceled" for sid in sids[3:6]),
            f"{sids[6]}: let_customer_choose",
        ]
    ), actions
    fake.clear_faults()
    # The storm was real: faults of both kinds (19, 8 and 4 for the three seeds; a cycle
    # that wrote no longer reads its echoes, so seed 22 draws 4 instead of 5).
    assert len(faults) >= 4 and {429, 403} <= set(faults), faults
    for sid, start in moved.items():
        s = w.session(sid)
        assert s.start == start and s.sequence == 1
    for sid in sids[:7]:
        history = w.session(sid).history
        assert sum(1 for h in history if h.actor is Actor.ADMIN_CALENDAR) == 1, history
    for sid in sids[3:5]:
        assert w.session(sid).cancel_reason == "Your host had to cancel this session."
    assert w.session(sids[5]).cancel_reason == "double-booked"
    assert w.session(sids[6]).status is Status.AWAITING_CUSTOMER
    assert w.raw(sids[6])["status"] == "tentative"
    # No duplicate event: one id per session ever, live exactly for the live sessions.
    everything = Counter(
        (b.get("extendedProperties") or {}).get("private", {}).get("syncd_session")
        for b in fake.events(CAL)
    )
    assert everything == Counter({sid: 1 for sid in [*sids, *new]})
    live = w.live_events()
    assert set(live) == {*sids[:3], *sids[6:], *new}
    assert all(len(v) == 1 for v in live.values())
    # Exactly one outbox row per gesture (earlier mail was delivered before the gestures).
    pending = sorted(o for o in w.outbox() if o[2] == "pending")
    assert pending == sorted(
        [
            *(("rescheduled", f"c{i}@example.org", "pending") for i in range(3)),
            *(("canceled", f"c{i}@example.org", "pending") for i in range(3, 6)),
            ("choose", "c6@example.org", "pending"),
        ]
    ), pending
    w.assert_quiet()
