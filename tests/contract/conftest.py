"""Fixtures of the backend contract suite: real servers and one kit per backend.

``backend_factory`` is parametrized over :data:`BACKENDS`. To add a backend, write a kit
satisfying :class:`tests.contract.kit.BackendKit`, add its name to :data:`BACKENDS` and a
branch in :func:`backend_factory`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme

from syncd.ports import CalendarBackend
from tests.contract.human import HumanEditor
from tests.contract.kit import BackendKit, CalDAVKit
from tests.servers import Server

# The backends every contract test runs against (Google through its faithful fake).
BACKENDS = ["radicale", "xandikos", "google", "microsoft"]


@pytest.fixture(params=BACKENDS)
def backend_factory(request: pytest.FixtureRequest) -> Iterator[BackendKit]:
    """The kit of one backend kind; call it for a backend on a fresh calendar."""
    name: str = request.param
    kit: BackendKit
    if name in ("radicale", "xandikos"):
        server: Server = request.getfixturevalue(f"{name}_server")
        kit = CalDAVKit(name, server, request.getfixturevalue("tmp_path"))
    elif name == "google":
        from tests.contract.google_human import GoogleKit

        kit = GoogleKit.start()
    elif name == "microsoft":
        from tests.contract.graph_kit import GraphKit

        kit = GraphKit.start(trustme.CA())
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        for key, value in kit.fake.client_env().items():  # httpx and msal trust the test CA
            monkeypatch.setenv(key, value)
    else:  # a name in BACKENDS without a kit
        raise LookupError(f"no contract kit for backend {name!r}")
    yield kit
    kit.close()


@pytest.fixture
def backend(backend_factory: BackendKit) -> CalendarBackend:
    """A backend on a fresh, empty calendar."""
    return backend_factory()


@pytest.fixture
def human(backend_factory: BackendKit) -> HumanEditor:
    """The admin editing events, on the same server as ``backend``."""
    return backend_factory.human
