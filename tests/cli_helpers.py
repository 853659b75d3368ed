"""Running the real ``syncd`` entry point in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def write_config(path: Path, db_url: str, extra: str = "") -> Path:
    """A minimal config file pointing at ``db_url``."""
    path.write_text(
        f'[database]\nurl = "{db_url}"\n[web]\npublic_url = "https://book.example.com"\n' + extra
    )
    return path


def syncd(
    config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> Result:
    """``syncd --config CONFIG ARGS...`` through ``python -m syncd.app.cli``."""
    proc = subprocess.run(
        [sys.executable, "-m", "syncd.app.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def syncd_each(
    calls: Sequence[tuple[Path, Sequence[str]]], env: dict[str, str] | None = None
) -> list[Result]:
    """``syncd(config, *args)`` for each independent call, two at a time; results in order.

    For calls that do not depend on each other (refusals, reads of different files): a CLI
    run is ~0.5-1 s of CPU, mostly start-up, and this leaves the box's second core idle.
    """
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda call: syncd(call[0], *call[1], env=env), calls))


def book(config: Path, start: datetime, tz: str = "America/New_York") -> str:
    """``syncd session book`` of Ann with coach@example.com for an hour; the session id."""
    r = syncd(
        config, "--json", "session", "book", "--admin", "coach@example.com",
        "--customer", "ann@example.org", "--customer-name", "Ann", "--customer-tz", tz,
        "--start", start.isoformat(), "--duration", "60",
    )  # fmt: skip
    assert r.code == 0, r.err
    sid: str = r.json()["id"]
    return sid
