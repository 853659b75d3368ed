"""Fixtures of the backend contract suite: real servers and one kit per backend.

``backend_factory`` is parametrized over :data:`BACKENDS`. To add a backend, write a kit
satisfying :class:`tests.contract.kit.BackendKit`, add its name to :data:`BACKENDS` and a
branch in :func:`backend_factory`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from syncd.ports import CalendarBackend
from tests.contract.human import HumanEditor
from tests.contract.kit import DEBIAN, BackendKit, CalDAVKit

# The backends every contract test runs against (Google and Graph through their fakes).
BACKENDS = ["radicale", "xandikos", "cyrus", "davical", "sogo", "google", "microsoft"]


@pytest.fixture(params=BACKENDS)
def backend_factory(request: pytest.FixtureRequest) -> Iterator[BackendKit]:
    """The kit of one backend kind; call it for a backend on a fresh calendar."""
    name: str = request.param
    kit: BackendKit
    mail_before = 0
    if name in ("radicale", "xandikos", *DEBIAN):
        server: Any = request.getfixturevalue(f"{name}_server")
        kit = CalDAVKit(name, server, request.getfixturevalue("tmp_path"))
        mail_before = len(server.mail) if name in DEBIAN else 0  # session-wide server
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
    if name in DEBIAN:  # syncd's writes never make the server email anyone
        sent = server.mail[mail_before:]
        assert sent == [], f"{name} sent mail: {[m['Subject'] for m in sent]}"


@pytest.fixture
def backend(backend_factory: BackendKit) -> CalendarBackend:
    """A backend on a fresh, empty calendar."""
    return backend_factory()


@pytest.fixture
def human(backend_factory: BackendKit) -> HumanEditor:
    """The admin editing events, on the same server as ``backend``."""
    return backend_factory.human
