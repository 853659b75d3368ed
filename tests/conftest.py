"""Shared fixtures: a fresh database on SQLite, and on PostgreSQL when CI provides one.

Also two things about the test process itself, both for speed, neither for what a test checks:

- After collection and after every test, the objects alive then are moved out of the
  garbage collector's sight (``gc.freeze``): a full collection otherwise walks every module,
  Hypothesis strategy and cached parse of the whole run, and took a growing share of the
  suite as it grew (the unit tests alone: 13 s of 48 s in the collector). Each test's own
  objects are collected as before, and once more when it ends, before the freeze, so what
  a test leaves behind as garbage is still reclaimed.
- The ``syncd`` subprocesses (the CLI, the demo, the benchmarks) may cache their bytecode
  (``__pycache__``, git-ignored): with ``PYTHONDONTWRITEBYTECODE`` set in the environment,
  every CLI run compiled syncd's modules again (``db upgrade``: 0.96 -> 0.84 s here).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from syncd.store.context import Context
from syncd.store.db import Database
from tests.dbs import drop_templates, migrated_postgres, migrated_sqlite
from tests.pg import ENV, postgres_base_url
from tests.servers import Server, start_radicale, start_xandikos

os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # for the subprocesses only (see above)

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
        yield migrated_sqlite(tmp_path / "syncd.db")
        return
    if not postgres_base_url():
        if os.environ.get("CI"):
            pytest.fail(f"{ENV} is not set in CI: the PostgreSQL tests must run there")
        pytest.skip(f"PostgreSQL tests skipped: {ENV} is not set")
    with migrated_postgres() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database URL only."""
    return migrated_sqlite(tmp_path / "syncd.db")


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


def collect_and_freeze() -> None:
    """Reclaim the garbage made since the last freeze, then freeze what is still alive."""
    gc.collect()  # only what is not frozen yet: the last test's objects
    gc.freeze()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what collection left alive (modules, test functions, strategies)."""
    collect_and_freeze()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """After each test (teardown included): collect its garbage, freeze what survives."""
    try:
        return (yield)
    finally:
        collect_and_freeze()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the PostgreSQL template database of tests/dbs.py."""
    drop_templates()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say loudly when the PostgreSQL half of the suite did not run."""
    if not postgres_base_url():
        terminalreporter.write_sep(
            "!", f"PostgreSQL tests were SKIPPED: set {ENV} (CI does)", red=True, bold=True
        )


#: The session-wide servers started so far; each test's calendars on them are deleted after it.
_SHARED: list[Any] = []


def _shared(server: Any) -> Iterator[Any]:
    """Yield a session-wide server, registered for the cleanup below; stop it after."""
    server.made.clear()  # what its start made (DAViCal's calendar/) stays
    _SHARED.append(server)
    try:
        yield server
    finally:
        _SHARED.remove(server)
        server.stop()


@pytest.fixture(autouse=True)
def _shared_servers_keep_no_calendars() -> Iterator[None]:
    """After each test, delete the calendars it made on the session-wide servers."""
    yield
    for server in _SHARED:
        server.drop_calendars()


@pytest.fixture(scope="session")
def radicale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One Radicale 3 for the whole run (each test makes its own calendar)."""
    yield from _shared(start_radicale(tmp_path_factory.mktemp("radicale")))


@pytest.fixture(scope="session")
def xandikos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One Xandikos for the whole run (each test makes its own calendar)."""
    yield from _shared(start_xandikos(tmp_path_factory.mktemp("xandikos")))


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
    yield from _shared(start(tmp_path_factory.mktemp(kind)))


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
