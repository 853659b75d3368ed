"""One gesture suite, every backend: ``make_world`` is parametrized over :data:`BACKENDS`.

To add a backend, write its world in ``worlds.py`` (the :class:`GestureWorld` face) and a
branch below; every scenario of ``test_gestures.py`` then runs on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.google_calendar import FakeGoogleCalendar
from tests.gestures.worlds import CalDAVGestureWorld, GestureWorld, GoogleGestureWorld
from tests.integration.google_world import ADMIN
from tests.servers import Server

BACKENDS = ["radicale", "xandikos", "google"]

MakeWorld = Callable[..., GestureWorld]


@pytest.fixture(params=BACKENDS)
def make_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeWorld]:
    """``make_world(settle="2m", own_server=True)``: a fresh world on this backend."""
    name: str = request.param
    made: list[GestureWorld] = []
    fakes: list[FakeGoogleCalendar] = []

    def make(**options: Any) -> GestureWorld:
        world: GestureWorld
        if name in ("radicale", "xandikos"):
            server: Server = request.getfixturevalue(f"{name}_server")
            world = CalDAVGestureWorld(tmp_path, server, **options)
        elif name == "google":
            options.pop("own_server", None)  # the fake is this test's own anyway
            fake = FakeGoogleCalendar(owner=ADMIN).__enter__()
            fakes.append(fake)
            world = GoogleGestureWorld(tmp_path, fake, **options)
        else:
            raise LookupError(f"no gesture world for backend {name!r}")
        made.append(world)
        return world

    yield make
    for world in made:
        world.close()
    for fake in fakes:
        fake.__exit__(None, None, None)
        assert fake.internal_errors == [], fake.internal_errors[0]
