"""Start-up imports only what the command needs (issue 11, goal 5).

Which modules a fresh ``syncd`` process loads, not how long it takes (timing lives in
bench/startup.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY_FOR_HELP = (
    "sqlalchemy",
    "pydantic",
    "syncd.config",
    "syncd.store.db",
    "syncd.services.booking",
)
NEVER_FOR_LISTING = (
    "jinja2",
    "httpx",
    "caldav",
    "starlette",
    "uvicorn",
    "msal",
    "googleapiclient",
    "google.auth",
    "adapters",
    "syncd.web",
    "syncd.engine",
)
#: What a read-only listing on a SQLite file never needs: the ORM, Core and the services
#: (``import sqlalchemy`` alone costs more CPU than the 0.3 s goal leaves; issue 11).
NEVER_FOR_SQLITE_LISTING = (
    "sqlalchemy",
    "alembic",
    "syncd.store.db",
    "syncd.store.models",
    "syncd.store.repo",
    "syncd.services.booking",
    "syncd.notify",
)

PROBE = """
import json, sys
from syncd.app import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _loaded(*argv: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def _hits(loaded: set[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in loaded if any(m == n or m.startswith(n + ".") for n in names)]


def test_help_loads_neither_config_nor_database() -> None:
    assert _hits(_loaded("--help"), HEAVY_FOR_HELP) == []


def _database(tmp_path: Path) -> Path:
    db = tmp_path / "s.db"
    config = tmp_path / "syncd.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{db}"\n')
    subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(config), "db", "upgrade"],
        check=True,
        capture_output=True,
    )
    return config


def test_session_list_loads_no_web_stack_and_no_backend(tmp_path: Path) -> None:
    loaded = _loaded("--config", str(_database(tmp_path)), "session", "list")
    assert "sqlite3" in loaded  # it did reach the database
    assert _hits(loaded, NEVER_FOR_LISTING) == []


def test_listings_on_sqlite_load_neither_sqlalchemy_nor_the_services(tmp_path: Path) -> None:
    config = _database(tmp_path)
    for command in (["session", "list"], ["calendar", "list"], ["status"]):
        loaded = _loaded("--config", str(config), "--json", *command)
        assert "sqlite3" in loaded, command
        assert _hits(loaded, NEVER_FOR_SQLITE_LISTING) == [], command
