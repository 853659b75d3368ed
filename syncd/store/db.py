"""The database handle: engine setup, write transactions, migrations.

SQLite runs in WAL mode with a busy timeout, and every write transaction starts with
``BEGIN IMMEDIATE`` so that two writers serialize instead of failing half-way. PostgreSQL
goes through psycopg 3; row locks (``FOR UPDATE``) serialize what must be serialized.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from syncd.errors import ConfigError, PeerUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
    # Let SQLAlchemy, not the sqlite3 module, emit BEGIN (so we can make it IMMEDIATE).
    dbapi_conn.isolation_level = None


class Database:
    """One database: ``db.read()`` for queries, ``db.write()`` for one atomic transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                parent = Path(path).parent
                if not parent.exists():
                    raise ConfigError(
                        f"[database] url: the folder {parent} does not exist "
                        "(create it or point url elsewhere)"
                    )
            self.engine: Engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(self.engine, "connect", _sqlite_pragmas)

            @event.listens_for(self.engine, "begin")
            def _begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any error."""
        try:
            with self._factory() as session, session.begin():
                yield session
        except OperationalError as err:
            raise PeerUnavailable(f"The database did not answer: {err.orig}") from err

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only unit of work (it still runs in a transaction)."""
        try:
            with self._factory() as session, session.begin():
                yield session
        except OperationalError as err:
            raise PeerUnavailable(f"The database did not answer: {err.orig}") from err

    def lock_clause(self) -> bool:
        """True when ``SELECT ... FOR UPDATE SKIP LOCKED`` is meaningful (PostgreSQL)."""
        return not self.is_sqlite

    def upgrade(self) -> str:
        """Apply every Alembic migration; idempotent. Returns the revision now in place."""
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.connect() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
                rev = MigrationContext.configure(conn).get_current_revision()
        except OperationalError as err:
            raise PeerUnavailable(f"The database did not answer: {err.orig}") from err
        return rev or "base"

    def is_current(self) -> bool:
        """True when the schema exists (``syncd db upgrade`` has run)."""
        try:
            with self.engine.connect() as conn:
                return bool(inspect(conn).has_table("sessions"))
        except OperationalError as err:
            raise PeerUnavailable(f"The database did not answer: {err.orig}") from err

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
