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


def test_session_list_loads_no_web_stack_and_no_backend(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    config = tmp_path / "syncd.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{db}"\n')
    subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(config), "db", "upgrade"],
        check=True,
        capture_output=True,
    )
    loaded = _loaded("--config", str(config), "session", "list")
    assert "sqlalchemy" in loaded  # it did reach the database
    assert _hits(loaded, NEVER_FOR_LISTING) == []
