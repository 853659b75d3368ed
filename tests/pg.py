"""A fresh PostgreSQL database per test, on the server named by SYNCD_TEST_POSTGRES_URL."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

ENV = "SYNCD_TEST_POSTGRES_URL"


def postgres_base_url() -> str | None:
    """The server URL tests may use, or None (then PostgreSQL tests are skipped locally)."""
    return os.environ.get(ENV) or None


@contextmanager
def fresh_postgres_url() -> Iterator[str]:
    """Create ``syncd_t_<random>`` on the server, yield its SQLAlchemy URL, drop it after."""
    base = postgres_base_url()
    assert base, f"{ENV} is not set"
    name = f"syncd_t_{secrets.token_hex(4)}"
    admin_dsn = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
