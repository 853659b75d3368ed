"""Shared fixtures: a fresh database on SQLite, and on PostgreSQL when CI provides one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from syncd.store.context import Context
from syncd.store.db import Database
from tests.pg import ENV, fresh_postgres_url, postgres_base_url
from tests.servers import Server, start_radicale, start_xandikos

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class Clock:
    """A settable clock for deterministic cut-offs and settle windows."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        from datetime import timedelta

        self.now += timedelta(**kwargs)
        return self.now


def _backends() -> list[str]:
    return ["sqlite", "postgres"]


@pytest.fixture(params=_backends())
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database URL: SQLite always, PostgreSQL when configured."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/syncd.db"
        Database(url).upgrade()
        yield url
        return
    if not postgres_base_url():
        if os.environ.get("CI"):
            pytest.fail(f"{ENV} is not set in CI: the PostgreSQL tests must run there")
        pytest.skip(f"PostgreSQL tests skipped: {ENV} is not set")
    with fresh_postgres_url() as url:
        Database(url).upgrade()
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database URL only."""
    url = f"sqlite:///{tmp_path}/syncd.db"
    Database(url).upgrade()
    return url


@pytest.fixture
def clock() -> Clock:
    """A clock fixed at Mon 30 Nov 2026 12:00 UTC."""
    return Clock()


@pytest.fixture
def ctx(db_url: str, clock: Clock) -> Iterator[Context]:
    """A service context on a fresh database with a fixed clock."""
    db = Database(db_url)
    yield Context(db=db, public_url="https://book.example.com", clock=clock)
    db.dispose()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say loudly when the PostgreSQL half of the suite did not run."""
    if not postgres_base_url():
        terminalreporter.write_sep(
            "!", f"PostgreSQL tests were SKIPPED: set {ENV} (CI does)", red=True, bold=True
        )


@pytest.fixture(scope="session")
def radicale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One Radicale 3 for the whole run (each test makes its own calendar)."""
    server = start_radicale(tmp_path_factory.mktemp("radicale"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def xandikos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One Xandikos for the whole run (each test makes its own calendar)."""
    server = start_xandikos(tmp_path_factory.mktemp("xandikos"))
    yield server
    server.stop()


def _debian_server(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Debian server (Cyrus, DAViCal, SOGo) for the whole run, stopped by PID after."""
    from tests.debian_servers import cyrus, davical, sogo

    start, installed = {
        "cyrus": (cyrus.start_cyrus, cyrus.cyrus_installed),
        "davical": (davical.start_davical, davical.davical_installed),
        "sogo": (sogo.start_sogo, sogo.sogo_installed),
    }[kind]
    if not installed():
        message = f"{kind} is not installed (make caldav-servers)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = start(tmp_path_factory.mktemp(kind))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cyrus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Cyrus IMAP/CalDAV (Debian) for the whole run; its mail goes to ``.mail``."""
    yield from _debian_server("cyrus", tmp_path_factory)


@pytest.fixture(scope="session")
def davical_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One DAViCal (Debian, iMIP mail on) for the whole run; its mail goes to ``.mail``."""
    yield from _debian_server("davical", tmp_path_factory)


@pytest.fixture(scope="session")
def sogo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One SOGo (Debian, notifications on) for the whole run; its mail goes to ``.mail``."""
    yield from _debian_server("sogo", tmp_path_factory)
