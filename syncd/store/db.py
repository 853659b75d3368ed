"""The database handle: engine setup, write transactions, migrations.

SQLite runs in WAL mode with a busy timeout, and every write transaction starts with
``BEGIN IMMEDIATE`` so that two writers serialize instead of failing half-way; a read
transaction starts with a plain ``BEGIN`` and never waits for the write lock (WAL readers
see the last committed state while a writer works). Within one process, writers to one
SQLite file also queue on a lock before ``BEGIN IMMEDIATE``: SQLite's busy handler waits by
sleeping (up to 100 ms a try), which with a pool of sync threads left the write lock idle
most of the time (issue 11). The connection pool covers the sync threads
(:data:`POOL_SIZE`). PostgreSQL goes through psycopg 3; row
locks (``FOR UPDATE``) serialize what must be serialized. Every PostgreSQL statement is a
round trip, and a sync thread waits for the GIL after each one, so none is spent on
nothing (issue 11, goal 8): a read runs in autocommit (no ``BEGIN``/``COMMIT``; under READ
COMMITTED each statement had its own snapshot anyway), and a pooled connection is pinged
only when it comes back into use after :data:`PING_IDLE_S` idle, not at every checkout. A
write that is one statement (a claim, a release, an idle cycle's commit) goes through
:meth:`Database.write_one`: on PostgreSQL in autocommit, one round trip instead of three.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, create_engine, event, inspect, text, true
from sqlalchemy.engine import Connection, Engine, Row, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    InvalidatePoolError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import Executable

from syncd.errors import ConfigError, PeerUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"
#: The execution option that marks a read-only transaction (plain BEGIN on SQLite).
READ_ONLY = "syncd_read_only"
#: Pooled connections kept (and as many more opened at peak): above ``[sync] workers``
#: (16 by default) plus the lease heartbeat, the loop and the web server's threads.
POOL_SIZE = 24
#: A pooled PostgreSQL connection idle this long is pinged before it is handed out (one
#: that failed the ping is replaced, with every other pooled one: the server restarted).
PING_IDLE_S = 10.0
_IDLE_SINCE = "syncd_idle_since"
#: On PostgreSQL, a condition (always true) that lets the transaction of the statement it is
#: in commit without waiting for its WAL to reach the disk: ``synchronous_commit`` off for
#: that transaction only (set_config local), so nothing leaks into the pooled connection.
_NO_FLUSH_WAIT = text("(SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL")
_file_locks: dict[str, threading.RLock] = {}
_file_locks_guard = threading.Lock()


def _writer_lock(path: str) -> threading.RLock:
    """The process-wide lock of one SQLite file's writers."""
    key = str(Path(path).resolve()) if path and path != ":memory:" else path
    with _file_locks_guard:
        return _file_locks.setdefault(key, threading.RLock())


def _unavailable(err: OperationalError | DatabaseError, url: str) -> Exception:
    """A database error as one sentence: a file that is not SQLite is a config error."""
    text = str(err.orig)
    if "file is not a database" in text:
        return ConfigError(f"[database] url: {url} is not a SQLite database file ({text})")
    return PeerUnavailable(f"The database did not answer: {text}")


def check_url(url: str) -> str:
    """``url`` if it is a SQLite or PostgreSQL URL, else ConfigError with an example."""
    example = "use sqlite:////var/lib/syncd/syncd.db or postgresql+psycopg://user@host/db"
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise ConfigError(f'[database] url = "{url}" is not a database URL ({example})') from err
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f'[database] url = "{url}": only SQLite and PostgreSQL are supported ({example})'
        )
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
    # Let SQLAlchemy, not the sqlite3 module, emit BEGIN (so we can make it IMMEDIATE).
    dbapi_conn.isolation_level = None


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a pooled connection at checkout only if it sat idle :data:`PING_IDLE_S`."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None or time.monotonic() - since < PING_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as err:  # the pool reconnects (and drops the other stale ones)
            raise InvalidatePoolError(f"a pooled connection is gone: {err}") from err

    @event.listens_for(engine, "before_cursor_execute")
    def _stream_in_transaction(
        _conn: Any, cursor: Any, _stmt: Any, _params: Any, _ctx: Any, _many: bool
    ) -> None:
        # A read streaming rows (``yield_per``) uses a server-side cursor, which lives only
        # inside a transaction: psycopg opens one, and the read's end commits it.
        raw = cursor.connection
        if getattr(cursor, "name", None) and raw.autocommit:
            raw.autocommit = False


class Database:
    """One database: ``db.read()`` for queries, ``db.write()`` for one atomic transaction."""

    def __init__(self, url: str) -> None:
        self.url = check_url(url)
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
            self._writers: threading.RLock | None = _writer_lock(path)
            in_memory = "///" not in url or path in ("", ":memory:")  # one connection, shared
            pool = {} if in_memory else {"pool_size": POOL_SIZE, "max_overflow": POOL_SIZE}
            self.engine: Engine = create_engine(url, connect_args={"timeout": 30}, **pool)
            event.listen(self.engine, "connect", _sqlite_pragmas)

            @event.listens_for(self.engine, "begin")
            def _begin(conn: Any) -> None:
                read_only = conn.get_execution_options().get(READ_ONLY)
                conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        else:
            self._writers = None  # row locks serialize what must be
            try:
                self.engine = create_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_SIZE)
            except (ArgumentError, NoSuchModuleError, ImportError) as err:
                raise ConfigError(f'[database] url = "{url}" cannot be used: {err}') from err
            _ping_idle_connections(self.engine)
        read_options: dict[str, Any] = {READ_ONLY: True}
        if not self.is_sqlite:
            read_options["isolation_level"] = "AUTOCOMMIT"
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine = self.engine.execution_options(**read_options)
        self._read_factory = sessionmaker(self._read_engine, expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any error."""
        try:
            with (
                self._writers if self._writers is not None else nullcontext(),
                self._factory() as session,
                session.begin(),
            ):
                yield session
        except (OperationalError, DatabaseError) as err:
            raise _unavailable(err, self.url) from err

    @contextmanager
    def write_statements(self) -> Iterator[Connection]:
        """One write transaction of Core statements, without an ORM session: for a hot
        path of a few prebuilt statements (an email's send), where the session's own
        bookkeeping would cost more than the statements. Committed on success, rolled
        back on any error, like :meth:`write`."""
        try:
            with (
                self._writers if self._writers is not None else nullcontext(),
                self.engine.begin() as conn,
            ):
                yield conn
        except (OperationalError, DatabaseError) as err:
            raise _unavailable(err, self.url) from err

    def write_one(
        self,
        stmt: Executable,
        params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> tuple[Sequence[Row[Any]], int]:
        """One write statement, atomic on its own: (the rows it returns, its row count).

        On PostgreSQL it runs in autocommit: the statement is its own transaction, without
        the ``BEGIN`` and ``COMMIT`` round trips. A list of ``params`` (an executemany)
        commits each set on its own there, so it is for rows that do not depend on each
        other. On SQLite it is one write transaction, like :meth:`write`.
        """
        try:
            if self._writers is not None:
                with self._writers, self.engine.begin() as conn:
                    result = conn.execute(stmt, params)
                    return (result.all() if result.returns_rows else []), result.rowcount
            with self._autocommit.connect() as conn:
                result = conn.execute(stmt, params)
                return (result.all() if result.returns_rows else []), result.rowcount
        except (OperationalError, DatabaseError) as err:
            raise _unavailable(err, self.url) from err

    def read_one(
        self, stmt: Executable, params: Mapping[str, Any] | None = None
    ) -> Row[Any] | None:
        """The first row of one read statement, without an ORM session (what :meth:`read`
        would see: on PostgreSQL in autocommit, on SQLite a plain read transaction)."""
        try:
            with self._read_engine.connect() as conn:
                return conn.execute(stmt, params).first()
        except (OperationalError, DatabaseError) as err:
            raise _unavailable(err, self.url) from err

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only unit of work, without the write lock: on SQLite one consistent
        snapshot; on PostgreSQL autocommit, each statement seeing what is committed when it
        runs (as each statement of a READ COMMITTED transaction does)."""
        try:
            with self._read_factory() as session, session.begin():
                yield session
        except (OperationalError, DatabaseError) as err:
            raise _unavailable(err, self.url) from err

    def no_flush_wait(self) -> ColumnElement[bool]:
        """A ``WHERE`` term (always true) for a write whose loss in a crash of the server
        costs nothing but doing it again (an idle cycle's record, a release's next poll):
        on PostgreSQL its commit does not wait for the disk (0.4 ms of the server's CPU
        and about 3 ms here, each). Other sessions see it at once all the same; a later
        durable commit makes it durable too. One of two constant objects, so statements
        built with it may be cached by it."""
        return true() if self.is_sqlite else _NO_FLUSH_WAIT  # type: ignore[return-value]

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
                raw = conn.connection.driver_connection if self.is_sqlite else None
                if raw is not None:
                    # SQLite rebuilds tables to change constraints; it asks for foreign
                    # keys off meanwhile (set outside any transaction) and a check after.
                    raw.execute("PRAGMA foreign_keys=OFF")
                try:
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                    if raw is not None:
                        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                        if broken is not None:
                            raise ConfigError(f"the migration left a broken reference: {broken}")
                    conn.commit()
                    rev = MigrationContext.configure(conn).get_current_revision()
                    conn.commit()
                finally:
                    if raw is not None:
                        conn.rollback()
                        raw.execute("PRAGMA foreign_keys=ON")
        except (OperationalError, DatabaseError) as err:
            raise _unavailable(err, self.url) from err
        return rev or "base"

    def is_current(self) -> bool:
        """True when the schema exists (``syncd db upgrade`` has run)."""
        try:
            with self.engine.connect() as conn:
                return bool(inspect(conn).has_table("sessions"))
        except (OperationalError, DatabaseError) as err:
            raise _unavailable(err, self.url) from err

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
