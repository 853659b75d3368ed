"""The suite's own machinery keeps its promises: what makes it fast never hides a leak or
changes what a test starts from (tests/conftest.py, tests/dbs.py, tests/servers.py)."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, inspect, text

from syncd.store.db import Database
from tests import conftest
from tests.conftest import collect_and_freeze
from tests.dbs import migrated_postgres, migrated_sqlite
from tests.gestures import worlds
from tests.integration.world import World
from tests.pg import fresh_postgres_url, postgres_base_url
from tests.servers import Server

REPO = Path(__file__).resolve().parents[1]


class Node:
    """An object that can sit in a reference cycle."""

    other: Any = None


def test_a_tests_garbage_is_collected_before_the_freeze() -> None:
    gc.disable()  # no automatic collection in between: only collect_and_freeze may reclaim
    try:
        garbage, kept = Node(), Node()
        garbage.other, kept.other = garbage, kept  # two cycles; only ``kept`` stays referenced
        ref = weakref.ref(garbage)
        del garbage
        frozen_before = gc.get_freeze_count()
        collect_and_freeze()
    finally:
        gc.enable()
    assert ref() is None, "garbage of a test was frozen instead of collected"
    assert gc.get_freeze_count() > frozen_before and kept.other is kept


def test_subprocesses_may_cache_their_bytecode() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys; print(sys.dont_write_bytecode)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"


def _sqlite_schema(url: str) -> list[tuple[Any, ...]]:
    """Every table, index and the Alembic version; a table's lines in sorted order (a
    migration that rebuilds a table writes its constraints in an order that varies from run
    to run: two fresh upgrades differ there too)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
            ).all()
            version = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        return [
            (
                kind,
                name,
                table,
                sorted(line.strip().rstrip(",") for line in (sql or "").split("\n")),
            )
            for kind, name, table, sql in rows
        ] + [tuple(v) for v in version]
    finally:
        engine.dispose()


def test_a_sqlite_copy_is_what_the_migrations_make(tmp_path: Path) -> None:
    fresh = Database(f"sqlite:///{tmp_path}/fresh.db")
    fresh.upgrade()
    fresh.dispose()
    copy = migrated_sqlite(tmp_path / "copy.db")
    assert _sqlite_schema(copy) == _sqlite_schema(f"sqlite:///{tmp_path}/fresh.db")
    assert Database(copy).is_current()


def _postgres_schema(url: str) -> dict[str, Any]:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        queries = {
            "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
            "indexes": "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = 'public' ORDER BY 1",
            "constraints": "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE connamespace = 'public'::regnamespace ORDER BY 1",
            "sequences": "SELECT sequencename, last_value FROM pg_sequences"
            " WHERE schemaname = 'public' ORDER BY 1",
            "version": "SELECT version_num FROM alembic_version",
        }
        return {name: conn.execute(query).fetchall() for name, query in queries.items()}


def test_a_postgres_copy_is_what_the_migrations_make() -> None:
    if not postgres_base_url():
        pytest.skip("PostgreSQL tests skipped: SYNCD_TEST_POSTGRES_URL is not set")
    with fresh_postgres_url() as fresh_url, migrated_postgres() as copy_url:
        fresh = Database(fresh_url)
        fresh.upgrade()
        fresh.dispose()
        copy = _postgres_schema(copy_url)
        assert copy == _postgres_schema(fresh_url)
        assert copy["columns"] and copy["version"]
        engine = create_engine(copy_url)
        try:
            assert "sessions" in inspect(engine).get_table_names()
        finally:
            engine.dispose()


def test_the_calendars_a_test_made_on_a_shared_server_are_deleted(radicale_server: Server) -> None:
    assert any(server is radicale_server for server in conftest._SHARED)
    urls = [radicale_server.make_calendar() for _ in range(2)]
    assert radicale_server.made[-2:] == urls
    radicale_server.drop_calendars()  # what the autouse fixture does after every test
    assert radicale_server.made == []
    for url in urls:
        status, _, _ = radicale_server.request("PROPFIND", url, headers={"Depth": "0"})
        assert status == 404, url


def test_the_calendar_davical_starts_with_is_kept(davical_server: Any) -> None:
    assert davical_server.calendar_url not in davical_server.made
    davical_server.drop_calendars()
    status, _, _ = davical_server.request(
        "PROPFIND", davical_server.calendar_url, headers={"Depth": "0"}
    )
    assert status == 207


def test_the_tls_certificate_folder_goes_with_the_process() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from tests.smtp_server import _certificate as c; print(c()[0])"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    cert = Path(done.stdout.strip())
    assert cert.name == "cert.pem" and cert.parent.name.startswith("syncd-smtp-tls-")
    assert not cert.parent.exists()


def test_a_world_that_cannot_be_made_stops_its_own_server(
    tmp_path: Path, radicale_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Server] = []
    real = worlds._starter

    def starter(kind: str) -> Any:
        def start(*args: Any, **kwargs: Any) -> Server:
            started.append(real(kind)(*args, **kwargs))
            return started[-1]

        return start

    def broken(self: World) -> None:
        raise RuntimeError("the world could not be made")

    monkeypatch.setattr(worlds, "_starter", starter)
    monkeypatch.setattr(World, "__post_init__", broken)
    try:
        with pytest.raises(RuntimeError, match="could not be made"):
            worlds.CalDAVGestureWorld(tmp_path, radicale_server, own_server=True)
        assert len(started) == 1 and not started[0].alive()
    finally:  # this test leaves nothing running when it fails either
        for server in started:
            server.stop()
