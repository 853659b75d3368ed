"""What the contract suite needs from one kind of backend, and the CalDAV implementation.

A kit makes backends on fresh calendars, gives the :class:`HumanEditor` for the same
server and a backend whose server is down. Other suites (integration, demo) can reuse
:class:`CalDAVKit`; sample events come from :mod:`tests.contract.samples`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from adapters.caldav.backend import CalDAVBackend
from syncd.ports import CalendarBackend
from tests.contract.human import CalDAVHuman, HumanEditor
from tests.contract.samples import desired
from tests.servers import start_radicale, start_xandikos

DEBIAN = ("cyrus", "davical", "sogo")
# "repeats": changes in the token's second are reported again (SOGo's tokens count seconds);
# "silent_tokens": an unknown token is answered with a listing, not valid-sync-token.
FEATURES = {
    "davical": frozenset({"silent_tokens"}),
    "sogo": frozenset({"repeats", "silent_tokens"}),
}


def start_server(kind: str, tmp: Path) -> Any:
    """A private server of ``kind`` (Radicale, Xandikos or a Debian one) under ``tmp``."""
    if kind == "radicale":
        return start_radicale(tmp)
    if kind == "xandikos":
        return start_xandikos(tmp)
    from tests.debian_servers import cyrus, davical, sogo

    starters = {"cyrus": cyrus.start_cyrus, "davical": davical.start_davical}
    return starters.get(kind, sogo.start_sogo)(tmp)


@dataclass
class Stopped:
    """A backend whose server is down, with an id and a cursor that were valid before."""

    backend: CalendarBackend
    remote_id: str
    cursor: str


class BackendKit(Protocol):
    """One kind of backend as the contract suite sees it."""

    name: str
    human: HumanEditor
    features: frozenset[str]  # "ctag": the backend takes force_ctag=True
    bogus_cursor: str  # well-formed for this backend, but never issued by the server

    def __call__(self, **options: Any) -> CalendarBackend:
        """A backend on a fresh, empty calendar; ``options`` go to its constructor."""
        ...

    def stopped(self) -> Stopped:
        """A backend whose server was stopped after one event was created and listed."""
        ...

    def close(self) -> None:
        """Release every backend made."""
        ...


@dataclass
class CalDAVKit:
    """:class:`BackendKit` for a running CalDAV server (Radicale, Xandikos, Cyrus, DAViCal,
    SOGo; the Debian ones are ``tests.debian_servers.common.DebianServer``, Server-shaped)."""

    name: str
    server: Any
    scratch: Path  # where stopped() starts its private server
    human: HumanEditor = field(init=False)
    features: frozenset[str] = frozenset({"ctag"})
    bogus_cursor: str = "sync:http://example.invalid/ns/sync/0000"
    _made: list[CalDAVBackend] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.human = CalDAVHuman(self.server)
        self.features = self.features | FEATURES.get(self.name, frozenset())

    def __call__(self, **options: Any) -> CalendarBackend:
        """``CalDAVBackend`` on a new calendar of the server."""
        return self._on(self.server, **options)

    def _on(self, server: Any, **options: Any) -> CalDAVBackend:
        backend = CalDAVBackend(
            server.make_calendar(), server.username, server.password, timeout=5.0, **options
        )
        self._made.append(backend)
        return backend

    def stopped(self) -> Stopped:
        """Start a private server of the same kind, create and list one event, stop it."""
        tmp = self.scratch / f"stopped-{len(self._made)}"
        server = start_server(self.name, tmp)
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
