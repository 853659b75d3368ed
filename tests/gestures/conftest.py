"""One gesture suite, every backend: ``make_world`` is parametrized over :data:`BACKENDS`.

To add a backend, write its world in ``worlds.py`` (the :class:`GestureWorld` face) and a
branch below; every scenario of ``test_gestures.py`` then runs on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.contract.kit import DEBIAN
from tests.fakes.google_calendar import FakeGoogleCalendar
from tests.gestures.worlds import CalDAVGestureWorld, GestureWorld, GoogleGestureWorld
from tests.integration.google_world import ADMIN

BACKENDS = ["radicale", "xandikos", "cyrus", "davical", "sogo", "google", "microsoft"]

MakeWorld = Callable[..., GestureWorld]


@pytest.fixture(params=BACKENDS)
def make_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeWorld]:
    """``make_world(settle="2m", own_server=True)``: a fresh world on this backend."""
    name: str = request.param
    made: list[GestureWorld] = []
    fakes: list[FakeGoogleCalendar] = []
    stops: list[Any] = []  # Graph fakes

    def make(**options: Any) -> GestureWorld:
        world: GestureWorld
        if name in ("radicale", "xandikos", *DEBIAN):
            server: Any = request.getfixturevalue(f"{name}_server")
            world = CalDAVGestureWorld(tmp_path, server, **options)
        elif name == "google":
            options.pop("own_server", None)  # the fake is this test's own anyway
            fake = FakeGoogleCalendar(owner=ADMIN).__enter__()
            fakes.append(fake)
            world = GoogleGestureWorld(tmp_path, fake, **options)
        elif name == "microsoft":
            from tests.gestures.graph_world import GraphWorld, start_fake

            options.pop("own_server", None)
            graph, client_id, secret = start_fake(trustme.CA())
            stops.append(graph)
            monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
            for key, value in graph.client_env().items():  # httpx and msal trust the test CA
                monkeypatch.setenv(key, value)
            world = GraphWorld(tmp_path, graph, client_id, secret, **options)
        else:
            raise LookupError(f"no gesture world for backend {name!r}")
        made.append(world)
        return world

    servers = [request.getfixturevalue(f"{name}_server")] if name in DEBIAN else []
    mail_before = [len(server.mail) for server in servers]
    yield make
    for world in made:
        world.close()
    for server, before in zip(servers, mail_before, strict=True):
        sent = server.mail[before:]  # syncd's writes never make the server email anyone
        assert sent == [], f"{name} sent mail: {[m['Subject'] for m in sent]}"
    for fake in fakes:
        fake.__exit__(None, None, None)
        assert fake.internal_errors == [], fake.internal_errors[0]
    for graph in stops:
        graph.stop()
        assert graph.internal_errors == [], graph.internal_errors[0]
