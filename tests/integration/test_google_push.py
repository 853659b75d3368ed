"""Push on Google: events.watch channels whose notifications reach the running web server.

The fake posts its notifications (``X-Goog-*`` headers, empty body) to the channel's
address, here the plain-http URL of ``syncd.web.server.start_in_thread`` on port 0 (Google
wants https; ``force=True`` stands in for that). A small loop plays the daemon: it waits
on the wake event, claims the calendars that are due and syncs them.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from adapters.google.push import GoogleNotificationReader
from syncd.app.daemon import claim_calendars, release_calendar
from syncd.config import Config
from syncd.domain.model import Status
from syncd.engine import channels as push
from syncd.engine.runner import CycleReport
from syncd.ports import BackendFactory
from syncd.store.models import CalendarRow
from syncd.web import push as push_web
from syncd.web import server
from tests.fakes.google_calendar import FakeGoogleCalendar, RequestInfo
from tests.integration.google_world import ADMIN, CAL, GoogleWorld


@dataclass
class Web:
    """The running web server, the config whose public_url is its URL, what it notified."""

    server: server.WebServer
    cfg: Config
    notified: list[int] = field(default_factory=list)
    wake: threading.Event = field(default_factory=threading.Event)

    def post(self, calendar_id: int, headers: dict[str, str]) -> int:
        url = urlsplit(self.server.url)
        conn = http.client.HTTPConnection(url.netloc, timeout=5)
        try:
            conn.request("POST", f"/push/google/{calendar_id}", body=b"", headers=headers)
            return conn.getresponse().status
        finally:
            conn.close()


@pytest.fixture
def fake() -> Iterator[FakeGoogleCalendar]:
    with FakeGoogleCalendar(owner=ADMIN) as f:
        yield f
        assert f.internal_errors == [], f.internal_errors[0]


@pytest.fixture
def world(tmp_path: Path, fake: FakeGoogleCalendar) -> GoogleWorld:
    return GoogleWorld(tmp_path, fake)


@pytest.fixture
def web(world: GoogleWorld, monkeypatch: pytest.MonkeyPatch) -> Iterator[Web]:
    """The real web app, with the push routes in front, served on a free port."""
    notified: list[int] = []
    wake = threading.Event()

    def on_notify(calendar_id: int) -> None:
        notified.append(calendar_id)
        wake.set()

    real_create_app = server.create_app

    def create_app(ctx: Any, cfg: Config, *args: Any, **kwargs: Any) -> Any:
        app = real_create_app(ctx, cfg, *args, **kwargs)
        wiring = push_web.PushWiring(
            readers={"google": GoogleNotificationReader()}, on_notify=on_notify
        )
        app.router.routes[0:0] = push_web.routes(ctx, wiring)
        return app

    monkeypatch.setattr(server, "create_app", create_app)
    cfg = world.cfg.model_copy(
        update={"web": world.cfg.web.model_copy(update={"listen": "127.0.0.1:0"})}
    )
    running = server.start_in_thread(world.ctx, cfg)
    cfg = cfg.model_copy(update={"web": cfg.web.model_copy(update={"public_url": running.url})})
    yield Web(running, cfg, notified, wake)
    running.stop()


def opener(world: GoogleWorld) -> BackendFactory:
    """``open_backend`` for syncd.engine.channels: the world's backend (fast retries)."""
    return lambda _name, _settings: world.backend()


def push_of(world: GoogleWorld) -> dict[str, Any]:
    with world.db.read() as orm:
        return dict(orm.get_one(CalendarRow, world.cal_id).push or {})


def next_sync_at(world: GoogleWorld) -> Any:
    with world.db.read() as orm:
        return orm.get_one(CalendarRow, world.cal_id).next_sync_at


def open_channel(world: GoogleWorld, web: Web) -> dict[str, Any]:
    """ensure_channels, then wait for Google's first ("sync") notification."""
    assert push.ensure_channels(
        world.ctx, web.cfg, world.clock.now, force=True, open_backend=opener(world)
    ) == [world.cal_id]
    assert web.wake.wait(5), "the channel's sync message never arrived"
    web.wake.clear()
    web.notified.clear()
    return push_of(world)


def genuine_headers(fake: FakeGoogleCalendar, channel_id: str) -> dict[str, str]:
    with fake.lock:
        return fake.channels[channel_id].headers("exists")


def test_channel_stores_only_the_token_hash(world: GoogleWorld, web: Web) -> None:
    stored = open_channel(world, web)
    channel = world.fake.channels[stored["channel_id"]]
    assert channel.address == f"{web.server.url}/push/google/{world.cal_id}"
    assert channel.token and len(channel.token) >= 43  # 32 random bytes
    assert stored["token_hash"] == push.token_hash(channel.token)
    assert stored["resource_id"] == channel.resource_id
    assert channel.token not in json.dumps(stored)
    expires = push._when(stored["expiration"])
    assert expires is not None and expires - world.clock.now > timedelta(days=6)
    # A live channel is left alone: no second events.watch.
    world.fake.reset_log()
    assert (
        push.ensure_channels(
            world.ctx, web.cfg, world.clock.now, force=True, open_backend=opener(world)
        )
        == []
    )
    assert world.fake.count("events.watch") == 0


def test_a_human_move_is_synced_within_a_second(world: GoogleWorld, web: Web) -> None:
    sid = world.book()
    assert world.sync().writes == 1
    open_channel(world, web)
    with world.db.write() as orm:  # the next poll is far away: only push can bring it in
        orm.get_one(CalendarRow, world.cal_id).next_sync_at = world.clock.now + timedelta(hours=1)
    reports: list[tuple[float, CycleReport]] = []
    stopping = threading.Event()

    def daemon_loop() -> None:
        while not stopping.is_set():
            if not web.wake.wait(0.05):
                continue
            web.wake.clear()
            for cid in claim_calendars(world.ctx, "test", timedelta(minutes=5), due_only=True):
                try:
                    reports.append((time.monotonic(), world.sync()))
                finally:
                    release_calendar(world.ctx, cid, "test", timedelta(hours=1))

    loop = threading.Thread(target=daemon_loop, daemon=True)
    loop.start()
    try:
        new_start = world.session(sid).start + timedelta(days=1)
        moved_at = time.monotonic()
        world.fake.human_move(
            CAL,
            world.remote_id(sid),
            new_start.isoformat(),
            (new_start + timedelta(hours=1)).isoformat(),
            tz="America/New_York",
        )
        deadline = moved_at + 5
        while world.session(sid).start != new_start and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stopping.set()
        loop.join(5)
    done = [t for t, r in reports if f"{sid}: rescheduled" in r.actions]
    assert done, reports
    assert done[0] - moved_at < 1.0, f"synced {done[0] - moved_at:.2f} s after the move"
    assert web.notified and set(web.notified) == {world.cal_id}
    assert world.session(sid).status is Status.BOOKED
    assert ("rescheduled", "ann@example.org", "pending") in world.outbox(sid)


def test_a_forged_notification_is_refused_and_syncs_nothing(world: GoogleWorld, web: Web) -> None:
    stored = open_channel(world, web)
    far = world.clock.now + timedelta(hours=1)
    with world.db.write() as orm:
        orm.get_one(CalendarRow, world.cal_id).next_sync_at = far
    genuine = genuine_headers(world.fake, stored["channel_id"])
    forged = [
        {**genuine, "X-Goog-Channel-Token": "forged-" + genuine["X-Goog-Channel-Token"][7:]},
        {k: v for k, v in genuine.items() if k != "X-Goog-Channel-Token"},
        {**genuine, "X-Goog-Channel-ID": "another-channel"},
        {"X-Goog-Channel-Token": genuine["X-Goog-Channel-Token"]},
        {},
    ]
    for headers in forged:
        assert web.post(world.cal_id, headers) == 403, headers
    assert web.post(world.cal_id + 1, genuine) == 403  # another calendar's address
    assert web.notified == [] and not web.wake.is_set()
    assert next_sync_at(world) == far
    assert web.post(world.cal_id, genuine) == 200
    assert web.notified == [world.cal_id] and web.wake.is_set()
    assert next_sync_at(world) == world.clock.now  # due now


def test_channels_are_renewed_before_expiry_and_stopped_on_shutdown(
    world: GoogleWorld, web: Web
) -> None:
    first = open_channel(world, web)
    old_headers = genuine_headers(world.fake, first["channel_id"])
    soon = world.clock.now + timedelta(minutes=50)
    with world.db.write() as orm:
        orm.get_one(CalendarRow, world.cal_id).push = {**first, "expiration": soon.isoformat()}
    second = open_channel(world, web)
    assert second["channel_id"] != first["channel_id"]
    assert second["token_hash"] != first["token_hash"]
    assert set(world.fake.channels) == {second["channel_id"]}  # the old one was stopped
    assert web.post(world.cal_id, old_headers) == 403
    second_headers = genuine_headers(world.fake, second["channel_id"])
    assert web.post(world.cal_id, second_headers) == 200
    assert push.stop_channels(world.ctx, open_backend=opener(world)) == [world.cal_id]
    assert world.fake.channels == {}
    assert push_of(world) == {}
    assert web.post(world.cal_id, second_headers) == 403  # a stopped channel is forgotten


def test_no_channel_without_https_and_a_failed_watch_backs_off(
    world: GoogleWorld, web: Web
) -> None:
    now = world.clock.now
    world.fake.reset_log()
    assert push.ensure_channels(world.ctx, web.cfg, now, open_backend=opener(world)) == []
    assert world.fake.count("events.watch") == 0  # http public_url: push is off

    def watches(info: RequestInfo) -> bool:
        return info.op == "events.watch"

    world.fake.fail_next(20, 403, "forbidden", match=watches)
    assert (
        push.ensure_channels(world.ctx, web.cfg, now, force=True, open_backend=opener(world)) == []
    )
    assert world.fake.count("events.watch") == 1  # a refusal is not retried
    stored = push_of(world)
    assert "channel_id" not in stored and "forbidden" in stored["error"]
    assert (
        push.ensure_channels(
            world.ctx, web.cfg, now + timedelta(minutes=5), force=True, open_backend=opener(world)
        )
        == []
    )
    assert world.fake.count("events.watch") == 1  # backing off
    world.fake.clear_faults()
    assert push.ensure_channels(
        world.ctx, web.cfg, now + timedelta(minutes=11), force=True, open_backend=opener(world)
    ) == [world.cal_id]
    assert push_of(world)["channel_id"] in world.fake.channels


def test_a_channel_being_opened_is_not_opened_twice(world: GoogleWorld, web: Web) -> None:
    now = world.clock.now
    assert [claimed[0] for claimed in push._claim(world.ctx, now, ["google"])] == [
        world.cal_id
    ]  # worker A
    world.fake.reset_log()
    ensure = push.ensure_channels  # worker B, meanwhile
    assert ensure(world.ctx, web.cfg, now, force=True, open_backend=opener(world)) == []
    assert world.fake.count("events.watch") == 0
    later = now + push.CLAIM_FOR + timedelta(seconds=1)  # worker A died: the claim lapses
    assert ensure(world.ctx, web.cfg, later, force=True, open_backend=opener(world)) == [
        world.cal_id
    ]
    assert list(world.fake.channels) == [push_of(world)["channel_id"]]


def test_a_worker_stops_only_its_own_channels(world: GoogleWorld, web: Web) -> None:
    assert push.ensure_channels(
        world.ctx, web.cfg, world.clock.now, force=True, open_backend=opener(world), worker="A"
    ) == [world.cal_id]
    channel_id = push_of(world)["channel_id"]
    assert push_of(world)["owner"] == "A"
    assert push.stop_channels(world.ctx, open_backend=opener(world), worker="B") == []
    assert channel_id in world.fake.channels and push_of(world)["channel_id"] == channel_id
    assert push.stop_channels(world.ctx, open_backend=opener(world), worker="A") == [world.cal_id]
    assert world.fake.channels == {} and push_of(world) == {}
