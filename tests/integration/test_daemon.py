"""The daemon loop: it mirrors, acts on a gesture, keeps backends open, stops in order."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from syncd.app.daemon import Daemon
from syncd.domain.model import Status
from syncd.store.context import utcnow
from tests.fakes.google_calendar import FakeGoogleCalendar
from tests.integration.google_world import GoogleWorld
from tests.smtp_server import start_smtp


@pytest.fixture
def fake() -> Iterator[FakeGoogleCalendar]:
    with FakeGoogleCalendar() as f:
        yield f


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_daemon_loop_acts_on_a_drag_and_reuses_its_google_backend(
    tmp_path: Path, fake: FakeGoogleCalendar, monkeypatch: pytest.MonkeyPatch
) -> None:
    # systemd's notify socket, as Type=notify gives it to the service.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    messages: list[str] = []
    listening = threading.Event()
    listening.set()

    def listen() -> None:
        while listening.is_set():
            with contextlib.suppress(TimeoutError):
                messages.append(notify.recv(256).decode())

    listener = threading.Thread(target=listen)
    listener.start()
    w = GoogleWorld(tmp_path, fake, extra_config="")
    cfg = w.cfg.model_copy(
        update={
            "sync": w.cfg.sync.model_copy(update={"poll_interval": timedelta(seconds=0.2)}),
            # Plain http: no push channels (the fake would post to the public URL).
            "web": w.cfg.web.model_copy(update={"public_url": "http://127.0.0.1:9"}),
        }
    )
    sid = w.book()
    daemon = Daemon(replace(w.ctx, clock=utcnow), cfg)  # the daemon runs on the wall clock
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run()))
    thread.start()
    try:
        wait_for(lambda: any(True for _ in fake.events("admin@example.com")))
        remote_id = w.remote_id(sid)
        s = w.session(sid)
        new_start = s.start + timedelta(days=1)
        fake.human_move(
            "primary",
            remote_id,
            new_start.isoformat(),
            (new_start + timedelta(hours=1)).isoformat(),
            tz="America/New_York",
        )
        wait_for(lambda: w.session(sid).start == new_start)
        assert w.session(sid).status is Status.BOOKED
        assert w.session(sid).history[-1].actor.value == "admin-calendar"
        cycles_before = fake.count("events.list")
        wait_for(lambda: fake.count("events.list") >= cycles_before + 3)
    finally:
        daemon.stop()
        thread.join(timeout=30)
    assert result == [0]
    time.sleep(0.3)
    listening.clear()
    listener.join()
    notify.close()
    assert messages[0] == "READY=1" and "WATCHDOG=1" in messages
    assert messages[-1] == "STOPPING=1"
    # One backend kept across cycles: one OAuth refresh, not one per cycle.
    assert fake.count("token") == 1


def test_one_broken_calendar_never_stops_the_others_or_the_outbox(
    tmp_path: Path, fake: FakeGoogleCalendar
) -> None:
    """Issue 10, item 10: a calendar whose cycle raises something that is no BackendError
    (a Google proxy answering 200 with an HTML page; a bad setting) is recorded as that
    calendar's error; the other calendar syncs and the outbox is drained."""
    from syncd.app.daemon import run_cycle, worker_id
    from syncd.store.models import CalendarRow, OutboxRow

    w = GoogleWorld(tmp_path, fake)
    with w.db.write() as orm:
        broken = CalendarRow(admin_id=1, backend="caldav", settings={}, busy_only=False)
        orm.add(broken)
        orm.flush()
        broken_id = broken.id
    sid = w.book()
    with w.db.write() as orm:  # the booking email is still to be sent
        for row in orm.query(OutboxRow):
            row.status = "pending"
    smtp = start_smtp()
    cfg = w.cfg.model_copy(update={"smtp": w.cfg.smtp.model_copy(update={"port": smtp.port})})
    try:
        summary = run_cycle(w.ctx, cfg, worker_id(), due_only=False)
    finally:
        smtp.stop()
    errors = {r.calendar_id: r.error for r in summary.reports}
    assert errors[w.cal_id] is None and errors[broken_id], errors
    assert any(True for _ in fake.events("admin@example.com"))  # the good one was mirrored
    assert w.remote_id(sid)
    with w.db.read() as orm:
        assert orm.get_one(CalendarRow, broken_id).last_error
        statuses = [r.status for r in orm.query(OutboxRow)]
    assert summary.mail.sent == 1 and statuses == ["sent"], statuses
    assert len(smtp.messages) == 1
