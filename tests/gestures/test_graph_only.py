"""What only Microsoft Graph has, beyond the shared gesture suite (test_gestures.py): lost POST
answers, a forced delta reset, a storm of 429s, revoked credentials, a dead cached token, an
undo from Deleted Items under a new id, a session far outside the delta window, one request
per idle cycle, at most four requests in flight per mailbox, and a change notification that
wakes the calendar. Through the Graph fake, the real msal and httpx (tests/gestures/graph_world.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from sqlalchemy import func, select

from adapters.microsoft.backend import GraphBackend
from adapters.microsoft.push import GraphNotificationReader
from syncd.app.microsoft_setup import tokens_for
from syncd.config import Config
from syncd.domain.model import Status
from syncd.engine import channels as push
from syncd.store.models import CalendarRow, IntentRow
from syncd.web import push as push_web
from syncd.web import server
from tests.contract.graph_kit import FAST_RETRIES, UPN
from tests.fakes.graph_extras import FakeGraphPlus
from tests.fakes.graph_values import SYNCD_PROPERTY_ID
from tests.gestures.graph_world import ADMIN, GraphWorld, start_fake

MakeWorld = Callable[..., GraphWorld]


@pytest.fixture
def graph(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeGraphPlus, str, str]]:
    fake, client_id, secret = start_fake(trustme.CA())
    for key, value in fake.client_env().items():
        monkeypatch.setenv(key, value)
    yield fake, client_id, secret
    fake.stop()
    assert fake.internal_errors == [], fake.internal_errors[0]


@pytest.fixture
def make_world(tmp_path: Path, graph: tuple[FakeGraphPlus, str, str]) -> Iterator[MakeWorld]:
    made: list[GraphWorld] = []

    def make(**options: Any) -> GraphWorld:
        world = GraphWorld(tmp_path, *graph, **options)
        made.append(world)
        return world

    yield make
    for world in made:
        world.close()


def graph_requests(fake: FakeGraphPlus) -> list[tuple[str, str]]:
    with fake.lock:
        return [(r.method, r.path) for r in fake.requests if r.path.startswith("/v1.0/")]


def by_session(w: GraphWorld) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ev in w.graph_events():
        sid = next(
            (p["value"] for p in ev.get("singleValueExtendedProperties") or []
             if p["id"] == SYNCD_PROPERTY_ID),
            None,
        )  # fmt: skip
        out.setdefault(str(sid), []).append(str(ev["id"]))
    return out


def converge(w: GraphWorld, max_cycles: int = 40) -> list[str]:
    """Cycles until one runs clean and changes nothing; every action taken on the way."""
    actions: list[str] = []
    for _ in range(max_cycles):
        report = w.sync()
        actions += report.actions
        quiet = not (report.actions or report.writes or report.write_failures)
        with w.db.read() as orm:
            pending = orm.scalar(select(func.count()).select_from(IntentRow)) or 0
        if report.error is None and quiet and not pending:
            return actions
    raise AssertionError(f"no convergence in {max_cycles} cycles; actions so far: {actions}")


def test_mirrored_event_wire_shape_and_one_request_per_idle_cycle(make_world: MakeWorld) -> None:
    w = make_world()
    sid = w.book()
    assert w.sync().writes == 1
    with w.fake.lock:  # one read: a cycle that wrote does not read its own echo before it ends
        reads = [r for r in w.fake.requests if r.path.endswith("/calendarView/delta")]
    assert len(reads) == 1, reads
    [event] = w.graph_events()
    assert event["transactionId"] == sid
    assert event["attendees"] == []  # Exchange would mail meeting requests otherwise
    assert event["body"]["contentType"] == "html" and "-- syncd --" in event["body"]["content"]
    assert w.remote_id(sid) == sid  # followed by its property, not by the Graph id
    w.assert_quiet()
    with w.fake.lock:
        w.fake.requests.clear()
    report = w.sync()
    assert report.error is None and report.actions == [] and report.writes == 0
    [(method, path)] = graph_requests(w.fake)
    assert method == "GET" and path.endswith("/calendarView/delta"), path


def test_a_lost_post_answer_makes_one_event(make_world: MakeWorld) -> None:
    w = make_world()
    sid = w.book()
    w.fake.lose_answers(lambda m, t: m == "POST" and "/events" in t)
    report = w.sync()
    assert w.fake.lost == 1 and report.error is None, report
    assert by_session(w) == {sid: [by_session(w)[sid][0]]}
    w.assert_quiet()
    assert len(w.graph_events()) == 1


def test_a_forced_delta_reset_with_nothing_changed_is_no_action(make_world: MakeWorld) -> None:
    w = make_world()
    sids = [w.book(days=2 + i, name=f"C{i}") for i in range(4)]
    w.sync()
    w.human.reserialize(w.remote_id(sids[0]))
    w.fake.force_delta_reset()  # 410 resyncRequired with a Location
    report = w.sync()
    assert report.resynced and report.error is None, report
    assert report.actions == [] and report.writes == 0 and not report.tripped, report
    assert all(w.session(s).sequence == 0 for s in sids)
    w.assert_quiet()


def test_a_429_storm_applies_every_change_once(make_world: MakeWorld) -> None:
    w = make_world()
    sids = [w.book(days=2 + i, name=f"C{i}") for i in range(6)]
    assert converge(w) == []
    moved = {}
    for sid in sids[:3]:
        s = w.session(sid)
        moved[sid] = s.start + timedelta(hours=3)
        w.human.move(w.remote_id(sid), moved[sid], moved[sid] + timedelta(hours=1), "Asia/Tokyo")
    w.human.delete(w.remote_id(sids[3]))
    w.fake.throttle(0.3, seed=7)
    actions = converge(w)
    w.fake.clear_faults()
    assert sorted(actions) == sorted(
        [f"{sid}: rescheduled" for sid in sids[:3]] + [f"{sids[3]}: canceled"]
    )
    for sid in sids[:3]:
        assert w.session(sid).start == moved[sid] and w.session(sid).sequence == 1
        assert [k for k, _, _ in w.outbox(sid)].count("rescheduled") == 1
    assert w.session(sids[3]).status is Status.CANCELED
    assert {k: len(v) for k, v in by_session(w).items()} == {s: 1 for s in sids if s != sids[3]}
    w.assert_quiet()


def test_revoked_credentials_pause_the_calendar_and_alert_the_admin(
    make_world: MakeWorld,
) -> None:
    w = make_world()
    sid = w.book()
    w.sync()
    w.human.delete(w.remote_id(sid))
    w.fake.revoke_secret(w.client_id)
    w.fake.invalidate_access_tokens()
    report = w.sync()
    assert report.auth_revoked and report.actions == [], report
    assert w.session(sid).status is Status.BOOKED
    assert w.calendar()["paused_reason"]
    assert ("auth_revoked", ADMIN, "pending") in w.outbox()
    assert w.sync().actions == []  # still refused: nothing happens, one alert only
    assert [o for o in w.outbox() if o[0] == "auth_revoked"] == [("auth_revoked", ADMIN, "pending")]
    new_secret = w.fake.add_secret(w.client_id)
    (w.tmp / "graph-secret").write_text(new_secret)
    report = w.sync()  # the credentials work again: it resumes by itself
    assert report.error is None and report.actions == [f"{sid}: canceled"], report
    assert w.calendar()["paused_reason"] is None


def test_a_dead_cached_token_is_dropped_after_a_401(make_world: MakeWorld) -> None:
    w = make_world()
    sid = w.book()
    w.sync()
    w.fake.invalidate_access_tokens()  # msal still holds it in memory
    report = w.sync()
    assert report.error is None and not report.auth_revoked, report
    assert w.event(sid).content.session_id == sid


def test_restore_from_deleted_items_under_a_new_id_is_an_undo(make_world: MakeWorld) -> None:
    w = make_world(settle="2m")
    sid = w.book()
    w.sync()
    first = by_session(w)[sid][0]
    w.human.delete(sid)
    assert w.sync().actions == []
    w.clock.advance(seconds=30)
    new_id = w.fake.restore_from_deleted_items(first, upn=UPN)
    assert new_id != first
    w.sync()
    w.clock.advance(minutes=3)
    assert w.sync().actions == []
    assert w.session(sid).status is Status.BOOKED
    assert by_session(w) == {sid: [new_id]}
    assert w.event(sid).content.start == w.session(sid).start
    assert w.customer_rows() == [("booked", "ann@example.org", "sent")]
    w.assert_quiet()


def test_sessions_beyond_the_delta_window_are_never_cancelled(make_world: MakeWorld) -> None:
    w = make_world()
    far = [w.book(days=600 + i, name=f"F{i}") for i in range(5)]  # past the 400-day window:
    near = w.book(days=3, name="Bob")  # delta reports them as @removed once written
    assert w.sync().writes == 6
    for _ in range(3):
        report = w.sync()
        assert report.actions == [] and report.error is None and not report.tripped, report
    assert all(w.session(s).status is Status.BOOKED for s in [*far, near])
    assert not any(o[0] == "breaker_tripped" for o in w.outbox())
    w.clock.advance(days=2)  # a new window (a full round): still not a deletion
    report = w.sync()
    assert report.actions == [] and not report.tripped, report
    w.assert_quiet()


def test_at_most_four_requests_in_flight_per_mailbox(make_world: MakeWorld) -> None:
    w = make_world()
    sids = [w.book(days=2 + i, name=f"C{i}") for i in range(3)]
    w.sync()
    w.fake.latency = 0.05
    w.fake.reset_concurrency()
    settings = {"mailbox": UPN, "auth": "app"}
    workers = [
        GraphBackend(
            UPN, w.graph_calendar, tokens_for(settings, w.cfg), w.cfg.microsoft.graph_endpoint,
            retry_wait=FAST_RETRIES, max_attempts=1,
        )
        for _ in range(6)
    ]  # fmt: skip  # six workers' backends, one mailbox

    def read(i: int) -> str:
        return str(workers[i % 6].get(sids[i % 3]).content.session_id)

    with ThreadPoolExecutor(max_workers=12) as pool:
        got = list(pool.map(read, range(24)))
    w.fake.latency = 0.0
    for b in workers:
        b.close()
    assert sorted(set(got)) == sorted(sids)
    assert 1 < w.fake.max_concurrency(UPN) <= 4


# -- push --------------------------------------------------------------------------------


@pytest.fixture
def web(
    make_world: MakeWorld, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[GraphWorld, Config, threading.Event]]:
    w = make_world()
    wake = threading.Event()
    real_create_app = server.create_app

    def create_app(ctx: Any, cfg: Config, *args: Any, **kwargs: Any) -> Any:
        app = real_create_app(ctx, cfg, *args, **kwargs)
        wiring = push_web.PushWiring(
            readers={"microsoft": GraphNotificationReader()}, on_notify=lambda _c: wake.set()
        )
        app.router.routes[0:0] = push_web.routes(ctx, wiring)
        return app

    monkeypatch.setattr(server, "create_app", create_app)
    cfg = w.cfg.model_copy(update={"web": w.cfg.web.model_copy(update={"listen": "127.0.0.1:0"})})
    running = server.start_in_thread(w.ctx, cfg)
    cfg = cfg.model_copy(update={"web": cfg.web.model_copy(update={"public_url": running.url})})
    yield w, cfg, wake
    running.stop()


def test_a_notification_wakes_the_calendar(web: tuple[GraphWorld, Config, threading.Event]) -> None:
    w, cfg, wake = web
    sid = w.book()
    w.sync()
    opened = push.ensure_channels(
        w.ctx, cfg, w.clock.now, force=True, kinds=("microsoft",),
        open_backend=lambda _n, _s: w.backend(),
    )  # fmt: skip
    assert opened == [w.cal_id]  # the validation handshake was answered
    with w.db.read() as orm:
        stored = dict(orm.get_one(CalendarRow, w.cal_id).push or {})
    with w.fake.lock:
        sub = w.fake.subscriptions[stored["channel_id"]]
        assert sub.client_state and stored["token_hash"] == push.token_hash(sub.client_state)
        assert sub.client_state not in str(stored)
    with w.db.write() as orm:
        orm.get_one(CalendarRow, w.cal_id).next_sync_at = None
    w.human.edit_title(sid, "Ann (moved rooms)")
    assert wake.wait(5), "no notification reached syncd"
    with w.db.read() as orm:
        assert orm.get_one(CalendarRow, w.cal_id).next_sync_at is not None
    w.fake.send_lifecycle(sub.id, "reauthorizationRequired")
    assert w.fake.wait_notifications(5)
    with w.db.read() as orm:
        expiry = push._when((orm.get_one(CalendarRow, w.cal_id).push or {}).get("expiration"))
    assert expiry is not None and expiry <= w.clock.now + timedelta(seconds=1)  # renew soon
