"""Issue 11 goal 6: a first mirror on a real server writes in parallel and reads back
nothing of its own.

The read after a cycle's writes moves the cursor past them: on a sync-collection server
it asks for etags alone and leaves out every member still at the etag recorded for
syncd's write (no multiget, no parse). What anyone else changed in between is fetched and
acted on as always. On Xandikos, whose token derives from the collection's contents, that
read is a second pass of the same cycle; on Radicale, whose token keeps the history of
deleted members, it is the next cycle's one request (the cycle that wrote reads once).
Radicale and Xandikos; the first test fails when the echoes are fetched again
(``changed`` counts them).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapters.caldav.backend import CalDAVBackend
from syncd.app.knobs import engine_settings
from syncd.domain.model import Status
from syncd.engine import state
from syncd.engine.runner import CycleReport, sync_calendar
from syncd.store.models import MirrorRow
from tests.contract.samples import desired
from tests.contract.test_caldav_wire import Req, Stub, stub  # noqa: F401 (the fixture)
from tests.integration.world import World
from tests.servers import Server

N = 9

#: Whether a cycle that wrote reads its own echoes before it ends, per server.
READS_ECHOES = {"radicale": False, "xandikos": True}


class Spy(CalDAVBackend):
    """The CalDAV backend, noting every REPORT body it sends."""

    def __init__(self, world: World) -> None:
        server = world.server
        super().__init__(world.url, server.username, server.password, timeout=20)
        self.reports: list[str] = []
        real = self._t.send

        def send(method: str, url: str, body: bytes = b"", *a: Any, **kw: Any) -> Any:
            if method == "REPORT":
                self.reports.append(body.decode())
            return real(method, url, body, *a, **kw)

        self._t.send = send  # type: ignore[method-assign]


def first_cycle(world: World, backend: Spy) -> tuple[CycleReport, dict[str, Any]]:
    """N new sessions mirrored by one cycle through ``backend``, then (where that cycle
    does not read its echoes) the next cycle's read through the same backend, as a daemon
    keeps it; the first cycle's report (the next one's counts added) and the starts as
    booked. The first cycle reads the feed twice exactly where the server needs it."""
    starts = {}
    for i in range(N):
        sid = world.book(days=2 + i / 8, name=f"C{i}")
        starts[sid] = world.session(sid).start
    settings = engine_settings(world.cfg)
    try:
        report = sync_calendar(world.ctx, settings, world.cal_id, backend)
        reads = [r for r in backend.reports if "sync-collection" in r]
        assert len(reads) == (2 if READS_ECHOES[world.server.kind] else 1), backend.reports
        if not READS_ECHOES[world.server.kind] and report.error is None:
            after = sync_calendar(world.ctx, settings, world.cal_id, backend)
            assert after.error is None and after.writes == 0, after
            report.changed += after.changed
        return report, starts
    finally:
        backend.close()


def recorded(world: World) -> dict[str, tuple[str, str | None, str | None]]:
    with world.db.read() as orm:
        rows = orm.scalars(select(MirrorRow).where(MirrorRow.calendar_id == world.cal_id))
        return {m.session_id: (m.remote_id, m.written_etag, m.seen_etag) for m in rows}


def test_the_read_after_the_writes_fetches_and_parses_none_of_syncds_own_events(
    caldav_server: Server, tmp_path: Path
) -> None:
    world = World(tmp_path, caldav_server)
    spy = Spy(world)
    report, _ = first_cycle(world, spy)
    assert report.error is None and report.writes == N and report.write_failures == 0
    assert report.changed == 0, report  # every echo left out
    second = spy.reports[-1]
    assert "sync-collection" in second and "calendar-data" not in second  # etags alone
    assert not any("calendar-multiget" in r for r in spy.reports)
    rows = recorded(world)
    assert len(rows) == N
    reader = CalDAVBackend(world.url, caldav_server.username, caldav_server.password)
    listing = reader.listing()
    reader.close()
    for remote_id, etag, seen in rows.values():
        assert etag == seen == listing[remote_id]  # each write recorded once, as stored
    world.assert_quiet()


def test_a_backend_that_did_not_write_leaves_the_echoes_out_all_the_same(
    caldav_server: Server, tmp_path: Path
) -> None:
    """The echoes are recorded with the writes (``mirrors.echo_etag``): the next read
    through another backend (another worker, or the next ``sync --once``) asks for etags
    alone and fetches none of them, and once it has moved past them none is left."""
    world = World(tmp_path, caldav_server)
    sids = [world.book(days=2 + i / 8, name=f"C{i}") for i in range(N)]
    settings = engine_settings(world.cfg)
    writer = Spy(world)
    try:
        report = sync_calendar(world.ctx, settings, world.cal_id, writer)
    finally:
        writer.close()
    assert report.error is None and report.writes == N, report
    with world.db.read() as orm:
        echoes = list(orm.scalars(select(MirrorRow.echo_etag)))
    if READS_ECHOES[caldav_server.kind]:
        assert echoes == [None] * N  # read past in the same cycle
    else:
        assert None not in echoes and len(echoes) == N
    reader = Spy(world)
    try:
        after = sync_calendar(world.ctx, settings, world.cal_id, reader)
    finally:
        reader.close()
    assert after.error is None and after.changed == 0 and after.writes == 0, after
    assert len(reader.reports) == 1  # no multiget: nothing fetched
    if not READS_ECHOES[caldav_server.kind]:
        assert "calendar-data" not in reader.reports[0]  # etags alone: echoes at hand
    with world.db.read() as orm:
        assert list(orm.scalars(select(MirrorRow.echo_etag))) == [None] * N
    assert all(world.session(s).status is Status.BOOKED for s in sids)
    world.assert_quiet()


def test_an_echo_read_past_is_forgotten_so_an_exact_undo_is_a_move(
    caldav_server: Server, tmp_path: Path
) -> None:
    """An echo lives until a read moves past it: the admin drags syncd's event two hours
    later, then puts back its exact bytes (an undo in the client). Where the etag is a
    hash of the contents the undo brings back the etag syncd's write had, and it must be
    read as the admin's move back, not as syncd's echo."""
    world = World(tmp_path, caldav_server)
    sid = world.book(days=3, name="Ann")
    start = world.session(sid).start
    settings = engine_settings(world.cfg)
    spy = Spy(world)
    try:
        for _ in range(2):  # the write, then (wherever it is) the read past its echo
            assert sync_calendar(world.ctx, settings, world.cal_id, spy).error is None
        url = spy._t.url(world.remote_id(sid))
        status, headers, original = caldav_server.request("GET", url)
        assert status == 200
        etag = {k.lower(): v for k, v in headers.items()}["etag"]
        moved = re.sub(r"(?m)^(DTSTART|DTEND):(\d{8}T\d{6})Z", _later, original.decode())
        status, headers, _ = caldav_server.request(
            "PUT", url, moved.encode(), {"Content-Type": "text/calendar", "If-Match": etag}
        )
        assert status in (200, 201, 204), status
        assert sync_calendar(world.ctx, settings, world.cal_id, spy).error is None
        assert world.session(sid).start == start + timedelta(hours=2)  # the drag applied
        _, headers, _ = caldav_server.request("GET", url)
        etag = {k.lower(): v for k, v in headers.items()}["etag"]
        status, _, _ = caldav_server.request(
            "PUT", url, original, {"Content-Type": "text/calendar", "If-Match": etag}
        )
        assert status in (200, 201, 204), status
        assert sync_calendar(world.ctx, settings, world.cal_id, spy).error is None
    finally:
        spy.close()
    assert world.session(sid).start == start  # the undo applied
    world.assert_quiet()


def test_the_read_after_the_writes_loads_none_of_the_sessions_it_just_wrote(
    caldav_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that lands showing what its live session wants settles that session when
    it is recorded, so the read past syncd's echoes has nothing to load (it used to load
    all N again, only to mark them settled)."""
    world = World(tmp_path, caldav_server)
    loaded: list[int] = []
    real = state.load_sessions

    def counted(orm: Any, rows: Any, **kwargs: Any) -> Any:
        loaded.append(len(rows))
        return real(orm, rows, **kwargs)

    monkeypatch.setattr(state, "load_sessions", counted)
    report, _ = first_cycle(world, Spy(world))
    assert report.error is None and report.writes == N and report.write_failures == 0
    assert [n for n in loaded if n] == [N], loaded  # the first pass only
    with world.db.read() as orm:
        rows = list(orm.scalars(select(MirrorRow).where(MirrorRow.calendar_id == world.cal_id)))
    assert len(rows) == N and all(m.settled for m in rows)
    world.assert_quiet()


def test_an_event_deleted_before_the_next_read_cancels_its_session(
    caldav_server: Server, tmp_path: Path
) -> None:
    """The hazard the read past the echoes guards against: syncd creates events, the admin
    deletes one before the next cycle. On Xandikos the cycle that wrote read its echoes;
    on Radicale it did not, and the next cycle's delta from the older token still reports
    the deletion (Radicale keeps deleted members in its token's history). Either way the
    session is canceled, once, and its customer told once."""
    world = World(tmp_path, caldav_server)
    spy = Spy(world)
    sids = [world.book(days=2 + i / 8, name=f"C{i}") for i in range(3)]
    settings = engine_settings(world.cfg)
    try:
        report = sync_calendar(world.ctx, settings, world.cal_id, spy)
        assert report.error is None and report.writes == 3, report
        reads = [r for r in spy.reports if "sync-collection" in r]
        assert len(reads) == (2 if READS_ECHOES[caldav_server.kind] else 1)
        status, _, _ = caldav_server.request("DELETE", spy._t.url(world.remote_id(sids[1])))
        assert status in (200, 204), status
        after = sync_calendar(world.ctx, settings, world.cal_id, spy)
        assert after.error is None, after
    finally:
        spy.close()
    assert world.session(sids[1]).status is Status.CANCELED
    assert [world.session(s).status for s in (sids[0], sids[2])] == [Status.BOOKED] * 2
    assert [k for k, _, st in world.outbox(sids[1]) if st == "pending"] == ["canceled"]
    world.assert_quiet()


class EditsBetween(Spy):
    """Once the first writes are recorded, the admin moves one event two hours later
    (before the feed is read again)."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self._server = world.server
        self.moved = ""

    def recorded(self, etags: Any) -> None:
        super().recorded(etags)
        if self.moved or not etags:
            return
        href = sorted(etags)[0]
        url = self._t.url(href)
        status, headers, body = self._server.request("GET", url)
        assert status == 200
        text = re.sub(r"(?m)^(DTSTART|DTEND):(\d{8}T\d{6})Z", _later, body.decode())
        etag = {k.lower(): v for k, v in headers.items()}["etag"]
        put_headers = {"Content-Type": "text/calendar; charset=utf-8", "If-Match": etag}
        status, _, _ = self._server.request("PUT", url, text.encode(), put_headers)
        assert status in (200, 201, 204), status
        self.moved = href


def _later(m: re.Match[str]) -> str:
    at = datetime.strptime(m.group(2), "%Y%m%dT%H%M%S") + timedelta(hours=2)
    return f"{m.group(1)}:{at:%Y%m%dT%H%M%S}Z"


def test_an_edit_between_the_writes_and_the_next_read_is_fetched_and_applied(
    caldav_server: Server, tmp_path: Path
) -> None:
    world = World(tmp_path, caldav_server)
    spy = EditsBetween(world)
    report, starts = first_cycle(world, spy)
    assert report.error is None and spy.moved, report
    assert report.changed == 1, report  # the admin's edit, and none of the echoes
    multigets = [r for r in spy.reports if "calendar-multiget" in r]
    assert len(multigets) == 1 and spy.moved in multigets[0]
    sid = next(s for s, (rid, _, _) in recorded(world).items() if rid == spy.moved)
    session = world.session(sid)
    assert session.start == starts[sid] + timedelta(hours=2)  # the move applied
    world.assert_quiet()


def test_a_write_refused_as_locked_is_sent_again_and_the_rest_go_one_at_a_time(
    stub: Stub,  # noqa: F811 (the fixture imported above)
) -> None:
    """Xandikos answers 423 Locked to a write while it stores another: nothing was applied,
    so the adapter sends it again (it is conditional) and stops overlapping writes."""
    locked = {"left": 2}

    def handler(req: Req) -> tuple[int, dict[str, str], str]:
        if req.method == "PUT" and locked["left"]:
            locked["left"] -= 1
            return 423, {}, ""
        if req.method == "PUT":
            assert req.headers.get("if-none-match") == "*"
            return 201, {"ETag": '"e1"'}, ""
        return 500, {}, ""

    stub.handler = handler
    backend = CalDAVBackend(stub.url, "u", "p")
    assert backend.write_concurrency > 1
    ev = backend.create(desired("s1"))
    backend.close()
    assert ev.etag == '"e1"' and stub.methods() == ["PUT", "PUT", "PUT"]
    assert backend.write_concurrency == 1
