"""Real CalDAV servers for the end-to-end suites, one of each per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import Server, start_radicale, start_xandikos


@pytest.fixture(scope="module", params=["radicale", "xandikos"])
def caldav_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A running Radicale or Xandikos on loopback; every test makes its own calendar."""
    tmp: Path = tmp_path_factory.mktemp(request.param)
    server = start_radicale(tmp) if request.param == "radicale" else start_xandikos(tmp)
    yield server
    server.stop()
