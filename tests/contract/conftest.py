"""Fixtures of the backend contract suite: real servers and one kit per backend.

``backend_factory`` is parametrized over :data:`BACKENDS`; each kit makes backends on a
fresh calendar, provides the ``human`` editor for that server, and a backend whose server
has been stopped. To add a backend (Google through its fake), write a kit with the same
attributes as :class:`CalDAVKit` and add its name to :data:`BACKENDS` and
:func:`backend_factory`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

if str(Path(__file__).resolve().parents[2]) not in sys.path:  # `tests.*` from any rootdir
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from adapters.caldav_backend import CalDAVBackend  # noqa: E402
from syncd.ports import CalendarBackend  # noqa: E402
from tests.contract.human import CalDAVHuman, HumanEditor  # noqa: E402
from tests.contract.samples import desired  # noqa: E402
from tests.servers import Server, start_radicale, start_xandikos  # noqa: E402

# The backends every contract test runs against. Add "google" here (and a branch in
# backend_factory below) once the Google fake has a kit.
BACKENDS = ["radicale", "xandikos"]


@dataclass
class Stopped:
    """A backend whose server is down, with an id and a cursor that were valid before."""

    backend: CalendarBackend
    remote_id: str
    cursor: str


class BackendKit(Protocol):
    """What the contract suite needs from one kind of backend."""

    name: str
    human: HumanEditor
    features: frozenset[str]  # "ctag": supports force_ctag=True
    bogus_cursor: str  # well-formed for this backend, but never issued by the server

    def __call__(self, **options: Any) -> CalendarBackend:
        """A backend on a fresh, empty calendar."""
        ...

    def stopped(self) -> Stopped:
        """A backend whose server was stopped after one event was created and synced."""
        ...


@dataclass
class CalDAVKit:
    """:class:`BackendKit` for a CalDAV server (Radicale, Xandikos)."""

    name: str
    server: Server
    tmp_path_factory: pytest.TempPathFactory
    human: HumanEditor
    features: frozenset[str] = frozenset({"ctag"})
    bogus_cursor: str = "sync:http://example.invalid/ns/sync/0000"
    _made: list[CalDAVBackend] = field(default_factory=list)

    def __call__(self, **options: Any) -> CalendarBackend:
        """``CalDAVBackend`` on a new calendar; ``options`` go to its constructor."""
        return self._on(self.server, **options)

    def _on(self, server: Server, **options: Any) -> CalDAVBackend:
        backend = CalDAVBackend(
            server.make_calendar(), server.username, server.password, timeout=5.0, **options
        )
        self._made.append(backend)
        return backend

    def stopped(self) -> Stopped:
        """Start a private server of the same kind, use it, stop it."""
        tmp = self.tmp_path_factory.mktemp(f"{self.name}-stopped")
        server = start_radicale(tmp) if self.name == "radicale" else start_xandikos(tmp)
        try:
            backend = self._on(server)
            event = backend.create(desired("stopped"))
            cursor = backend.changes(None, {}).cursor
            assert cursor is not None
        finally:
            server.stop()
        return Stopped(backend, event.remote_id, cursor)

    def close(self) -> None:
        """Close every backend made."""
        for backend in self._made:
            backend.close()


@pytest.fixture(scope="session")
def radicale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One Radicale 3 for the whole run (a fresh calendar per test)."""
    server = start_radicale(tmp_path_factory.mktemp("radicale"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def xandikos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One Xandikos for the whole run (a fresh calendar per test)."""
    server = start_xandikos(tmp_path_factory.mktemp("xandikos"))
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def backend_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendKit]:
    """The kit of one backend kind: call it for a backend on a fresh calendar."""
    name: str = request.param
    if name in ("radicale", "xandikos"):
        server: Server = request.getfixturevalue(f"{name}_server")
        kit = CalDAVKit(name, server, tmp_path_factory, CalDAVHuman(server))
    # elif name == "google": kit = GoogleKit(...)  -- the fake server + google_backend
    else:  # pragma: no cover - a name in BACKENDS without a kit
        raise LookupError(f"no contract kit for backend {name!r}")
    yield kit
    kit.close()


@pytest.fixture
def backend(backend_factory: BackendKit) -> CalendarBackend:
    """A backend on a fresh, empty calendar."""
    return backend_factory()


@pytest.fixture
def human(backend_factory: BackendKit) -> HumanEditor:
    """The admin editing events on the same server as ``backend``."""
    return backend_factory.human
