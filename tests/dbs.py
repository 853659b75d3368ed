"""Migrated, empty databases for tests: copies of one template migrated once per process.

Running every Alembic migration costs 0.1-0.2 s on SQLite and 0.2-0.5 s on PostgreSQL
(imports, DDL, a commit each), and the suite makes several hundred such databases. Here each
process migrates one template per backend, then copies it: a file copy on SQLite (the
SQLite backup API, so the copy is a consistent database), ``CREATE DATABASE ... TEMPLATE``
on PostgreSQL. A copy is the migrated schema as ``Database.upgrade()`` leaves it; the
migrations themselves still run where a test is about them (``test_store_and_links``, the
CLI's ``db upgrade``, the worlds that start from the CLI).

The PostgreSQL template (``syncd_tmpl_<random>``) is dropped by :func:`drop_templates`,
which the root ``conftest.py`` calls when the session ends (and ``atexit`` otherwise).
"""

from __future__ import annotations

import atexit
import contextlib
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from syncd.store.db import Database
from tests.pg import ENV, postgres_base_url

_sqlite_template: Path | None = None
_postgres_template: str | None = None


def _admin_dsn() -> str:
    base = postgres_base_url()
    assert base, f"{ENV} is not set"
    return base.replace("postgresql+psycopg://", "postgresql://")


def _url_of(name: str) -> str:
    base = postgres_base_url()
    assert base, f"{ENV} is not set"
    return base.rsplit("/", 1)[0] + "/" + name


def migrated_sqlite(path: Path) -> str:
    """Write a migrated, empty SQLite database at ``path``; return its SQLAlchemy URL."""
    global _sqlite_template
    if _sqlite_template is None:
        folder = Path(tempfile.mkdtemp(prefix="syncd-tmpl-"))
        atexit.register(shutil.rmtree, folder, True)
        template = folder / "template.db"
        db = Database(f"sqlite:///{template}")
        try:
            db.upgrade()
        finally:
            db.dispose()
        _sqlite_template = template
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        contextlib.closing(sqlite3.connect(_sqlite_template)) as source,
        contextlib.closing(sqlite3.connect(path)) as target,
    ):
        source.backup(target)
    return f"sqlite:///{path}"


def _postgres_template_name() -> str:
    global _postgres_template
    if _postgres_template is None:
        name = f"syncd_tmpl_{secrets.token_hex(4)}"
        with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        _postgres_template = name  # dropped at the end even if the migration fails
        db = Database(_url_of(name))
        try:
            db.upgrade()
        finally:
            db.dispose()  # CREATE DATABASE ... TEMPLATE needs it unused
    return _postgres_template


@contextlib.contextmanager
def migrated_postgres() -> Iterator[str]:
    """Create ``syncd_t_<random>`` as a copy of the migrated template, yield its URL, drop it."""
    template = _postgres_template_name()
    name = f"syncd_t_{secrets.token_hex(4)}"
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield _url_of(name)
    finally:
        with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def drop_templates() -> None:
    """Drop this process's PostgreSQL template (idempotent)."""
    global _postgres_template
    name, _postgres_template = _postgres_template, None
    if name is not None:
        with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


atexit.register(drop_templates)
