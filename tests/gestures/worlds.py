"""The worlds the gesture suite runs in: one per backend, all with the same face.

A world is a database, one admin, one calendar on a backend, and the admin's hand on that
calendar (a :class:`tests.contract.human.HumanEditor`). Besides what
:class:`tests.integration.world.WorldBase` gives (book, sync, session, outbox, quiet), a
:class:`GestureWorld` can:

- ``event(sid)``: read the session's event afresh through the adapter (``NotFound`` if gone);
- ``expire_cursor()``: make the stored change-feed cursor invalid (Google 410, CalDAV
  invalid sync-token);
- ``reads_fail_after_feed()``: let the next change feed answer, then make every further read
  fail (the CalDAV server is killed; Google answers 503) until ``peer_back()``;
- ``config_file()``: the world as a TOML file for the real ``syncd`` CLI.

A new backend joins the suite with a world class here and a branch in ``conftest.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from syncd.domain.model import Session
from syncd.engine.runner import CycleReport
from syncd.ports import RemoteEvent
from syncd.store.context import Context
from syncd.store.models import CalendarRow
from tests.cli_helpers import write_config
from tests.contract.gate import GatedServer
from tests.contract.human import CalDAVHuman, HumanEditor
from tests.contract.kit import DEBIAN, start_server
from tests.fakes.google_calendar import RequestInfo
from tests.integration.google_world import CAL, GoogleWorld
from tests.integration.world import Clock, World, event_of
from tests.servers import Server, start_radicale, start_xandikos


class GestureWorld(Protocol):
    """What every gesture scenario may use, on any backend."""

    ADMIN: str
    kind: str
    ctx: Context
    cal_id: int
    clock: Clock
    human: HumanEditor

    def sync(self) -> CycleReport: ...
    def book(self, days: float = 3, name: str = "Ann", tz: str = "America/New_York") -> str: ...
    def session(self, sid: str) -> Session: ...
    def remote_id(self, sid: str) -> str: ...
    def outbox(self, session_id: str | None = None) -> list[tuple[str, str, str]]: ...
    def customer_rows(self) -> list[tuple[str, str, str]]: ...
    def assert_quiet(self) -> None: ...
    def event(self, sid: str) -> RemoteEvent: ...
    def calendar(self) -> dict[str, object]: ...
    def expire_cursor(self) -> None: ...
    def reads_fail_after_feed(self) -> contextlib.AbstractContextManager[None]: ...
    def peer_back(self) -> None: ...
    def config_file(self) -> Path: ...
    def close(self) -> None: ...


class CalDAVGestureWorld(World):
    """The CalDAV world (Radicale, Xandikos, Cyrus, DAViCal, SOGo) with the gesture suite's face.

    A Debian server of the world's own is reached through a :class:`GatedServer`: its data
    lives only while it runs, so "down" is the gate closing and "back" the gate reopening.
    """

    def __init__(
        self, tmp: Path, server: Any, settle: str = "0s", own_server: bool = False
    ) -> None:
        self._own_root: Path | None = None
        if own_server:  # a scenario that stops the server gets one of its own
            self._own_root = tmp / f"own-{server.kind}"
            if server.kind in DEBIAN:
                server = GatedServer(start_server(server.kind, self._own_root))
            else:
                server = _starter(server.kind)(self._own_root)
        try:
            super().__init__(tmp, server, settle=settle)
        except BaseException:  # never leave a server of its own running
            if isinstance(server, GatedServer):
                server.shutdown()
            elif own_server:
                server.stop()
            raise
        self.kind = server.kind
        self.human = CalDAVHuman(server)

    def event(self, sid: str) -> RemoteEvent:
        result: RemoteEvent = event_of(self, sid)
        return result

    def expire_cursor(self) -> None:
        with self.db.write() as orm:
            orm.get_one(
                CalendarRow, self.cal_id
            ).cursor = "sync:http://radicale.org/ns/sync/0000bogus"

    @contextlib.contextmanager
    def reads_fail_after_feed(self) -> Iterator[None]:
        """The change feed answers; then the server dies (it stays down until peer_back)."""
        from adapters.caldav.backend import CalDAVBackend

        server = self.server
        original = CalDAVBackend.changes

        def changes_then_die(backend, cursor, known):  # type: ignore[no-untyped-def]
            result = original(backend, cursor, known)
            server.stop()
            return result

        CalDAVBackend.changes = changes_then_die  # type: ignore[method-assign]
        try:
            yield
        finally:
            CalDAVBackend.changes = original  # type: ignore[method-assign]

    def peer_back(self) -> None:
        assert self._own_root is not None, "make_world(own_server=True) to stop the server"
        if isinstance(self.server, GatedServer):
            self.server.back()
            return
        self.server = _starter(self.kind)(self._own_root, port=self.server.port)
        self.human = CalDAVHuman(self.server)

    def config_file(self) -> Path:
        return write_config(self.tmp / "syncd.toml", f"sqlite:///{self.tmp}/world.db")

    def close(self) -> None:
        """Stop the world's own server, if it has one."""
        if isinstance(self.server, GatedServer):
            sent = self.server.real.mail
            self.server.shutdown()
            assert sent == [], f"{self.kind} sent mail: {[m['Subject'] for m in sent]}"
        elif self._own_root is not None:
            self.server.stop()
        self.db.dispose()


class GoogleGestureWorld(GoogleWorld):
    """The Google world (the faithful fake) with the gesture suite's face."""

    kind = "google"

    def expire_cursor(self) -> None:
        self.fake.expire_sync_tokens(CAL)

    @contextlib.contextmanager
    def reads_fail_after_feed(self) -> Iterator[None]:
        def gets(info: RequestInfo) -> bool:
            return info.op == "events.get"

        self.fake.fail_next(1000, 503, "backendError", match=gets)
        try:
            yield
        finally:
            self.fake.clear_faults()
            self.fake.fail_next(1000, 503, "backendError")  # now nothing answers

    def peer_back(self) -> None:
        self.fake.clear_faults()

    def close(self) -> None:
        """Release the database."""
        self.db.dispose()


def _starter(kind: str) -> Callable[..., Server]:
    return start_radicale if kind == "radicale" else start_xandikos
