"""``syncd auth microsoft`` and ``syncd calendar add … microsoft`` end to end: the real CLI in a
subprocess, the real msal and httpx, the Graph fake over HTTPS with a test CA (trusted through
``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE``, as an operator would).

The device-code test plays the person: it reads the code the command prints on stderr while
the command waits, and approves it at the fake. The browser test's "browser" is a small
script named by ``$BROWSER`` that opens the sign-in page (the fake signs in the person the
browser is logged in as) and follows the redirect to syncd's loopback address.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from sqlalchemy import select

from syncd.store.db import Database
from syncd.store.models import CalendarRow
from tests.cli_helpers import Result, syncd
from tests.fakes.graph_extras import FakeGraphPlus

ADMIN = "coach@example.com"
UPN = "coach@contoso.onmicrosoft.com"

BROWSER_SCRIPT = """\
import os, ssl, sys
import httpx
ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
with httpx.Client(verify=ctx, trust_env=False, follow_redirects=True, timeout=10) as c:
    sys.exit(0 if c.get(sys.argv[1]).status_code == 200 else 1)
"""


@dataclass
class Setup:
    """A fake with a public client app and the admin's mailbox, a config, a database."""

    fake: FakeGraphPlus
    tmp: Path
    client_id: str
    secret: str
    env: dict[str, str]

    def config(self, microsoft: str | None = None) -> Path:
        """The config file; ``microsoft`` replaces the ``[microsoft]`` body."""
        secret_file = self.tmp / "graph-secret"
        secret_file.write_text(self.secret)
        secret_file.chmod(0o600)
        body = (
            microsoft
            if microsoft is not None
            else f'client_id = "{self.client_id}"\ntenant = "{self.fake.tenant.id}"\n'
            f'client_secret_file = "{secret_file}"\n'
        )
        path = self.tmp / "syncd.toml"
        path.write_text(
            f'[database]\nurl = "sqlite:///{self.tmp}/syncd.db"\n'
            '[web]\npublic_url = "https://book.example.com"\n'
            f'[sync]\nstate_dir = "{self.tmp}/state"\ntimeout = "10s"\n'
            '[smtp]\nhost = "127.0.0.1"\nport = 9\n'
            f"[microsoft]\n{body}"
            f'authority_endpoint = "{self.fake.authority_endpoint}"\n'
            f'graph_endpoint = "{self.fake.graph_url}"\n'
        )
        return path

    def run(self, *args: str, config: Path | None = None) -> Result:
        """``syncd --config … ARGS`` with the fake's CA trusted."""
        return syncd(config or self.config(), *args, env=self.env, timeout=60)

    def rows(self) -> list[CalendarRow]:
        """The calendar rows."""
        db = Database(f"sqlite:///{self.tmp}/syncd.db")
        try:
            with db.read() as orm:
                rows = list(orm.scalars(select(CalendarRow).order_by(CalendarRow.id)))
                orm.expunge_all()
            return rows
        finally:
            db.dispose()

    def calendars(self) -> dict[str, str]:
        """The mailbox's calendars, {name: id}."""
        with self.fake.lock:
            return {c.name: c.id for c in self.fake.mailbox(UPN).calendars.values()}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    fake = FakeGraphPlus(trustme.CA()).start()
    fake.add_mailbox(UPN, "Coach")
    app = fake.add_app("syncd", public_client=True, redirect_uris=["http://localhost"])
    s = Setup(fake, tmp_path, app.client_id, fake.add_secret(app.client_id), fake.client_env())
    assert s.run("db", "upgrade").code == 0
    r = s.run("admin", "add", ADMIN, "--name", "Coach", "--tz", "Europe/Berlin")
    assert r.code == 0, r.err
    yield s
    fake.stop()
    assert fake.internal_errors == [], fake.internal_errors[0]


def device_code_auth(s: Setup, *extra: str, approve: bool = True) -> Result:
    """Run ``auth microsoft --device-code``; approve (or deny) the code it prints."""
    cmd = [sys.executable, "-m", "syncd", "--config", str(s.config()), "--json"]
    proc = subprocess.Popen(
        [*cmd, "auth", "microsoft", ADMIN, "--device-code", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **s.env},
    )
    assert proc.stderr is not None and proc.stdout is not None
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stderr, selectors.EVENT_READ)
        printed = ""
        while not re.search(r"enter the code (\w+)", printed):
            assert sel.select(timeout=30), f"no device code printed: {printed!r}"
            line = proc.stderr.readline()
            assert line, f"syncd ended before printing a code: {printed!r}"
            printed += line
        code = re.search(r"enter the code (\w+)", printed)
        assert code is not None and code.group(1) in s.fake.pending_user_codes()
        assert s.fake.base_url + "/devicelogin" in printed  # the URL to open
        if approve:
            s.fake.approve_device_code(code.group(1), UPN)
        else:
            s.fake.deny_device_code(code.group(1))
        out, err = proc.communicate(timeout=60)
    finally:  # a failed check never leaves syncd waiting for a code nobody enters
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return Result(proc.returncode, out, printed + err)


def assert_private(path: Path) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, oct(path.stat().st_mode)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_auth_microsoft_device_code_stores_the_cache_0600_and_registers_bookings(
    setup: Setup,
) -> None:
    r = device_code_auth(setup)
    assert r.code == 0, r.err
    data = json.loads(r.out)  # stdout holds only the result; the code went to stderr
    cache = Path(data["token_cache_file"])
    assert cache == setup.tmp / "state" / "microsoft" / f"{ADMIN}.json"
    assert_private(cache)
    tokens = json.loads(cache.read_text())
    assert tokens["RefreshToken"], "msal's cache holds the refresh token"
    assert data["created"] is True and data["mailbox"] == UPN
    assert setup.calendars()["Bookings"] == data["calendar_id"]
    [row] = setup.rows()
    assert row.id == data["calendar"] and row.backend == "microsoft"
    assert row.settings == {
        "mailbox": UPN,
        "admin_email": ADMIN,
        "auth": "delegated",
        "token_cache_file": str(cache),
        "calendar_id": data["calendar_id"],
    }

    # Signing in again reuses the calendar and the row.
    again = device_code_auth(setup)
    assert again.code == 0, again.err
    assert json.loads(again.out)["created"] is False
    assert json.loads(again.out)["calendar"] == row.id and len(setup.rows()) == 1

    # doctor: the token works, the calendar is there (smtp on port 9 fails: exit 4).
    doc = setup.run("--json", "doctor")
    checks = {c["check"]: c for c in json.loads(doc.out)}
    assert checks[f"calendar {row.id} token"]["ok"], checks
    assert checks[f"calendar {row.id}"] == {
        "check": f"calendar {row.id}",
        "ok": True,
        "detail": f"Bookings in {UPN}",
    }

    # Consent revoked: doctor says so in one sentence and what to do.
    setup.fake.revoke_refresh_tokens(UPN)
    setup.fake.expire_access_tokens()
    doc = setup.run("doctor")
    assert doc.code == 4 and "Traceback" not in doc.err
    line = next(x for x in doc.out.splitlines() if f"calendar {row.id} token" in x)
    assert line.startswith("FAIL") and "syncd auth microsoft" in line, line


def test_auth_microsoft_in_the_browser_through_the_loopback_redirect(setup: Setup) -> None:
    browser = setup.tmp / "browser.py"
    browser.write_text(BROWSER_SCRIPT)
    setup.fake.identity.browser_user = UPN  # the person signed in to that browser
    setup.env["BROWSER"] = f"{sys.executable} {browser} %s"
    r = setup.run("--json", "auth", "microsoft", ADMIN)
    assert r.code == 0, r.err
    assert "Sign in to Microsoft in the browser" in r.err
    data = json.loads(r.out)
    assert data["mailbox"] == UPN and data["created"] is True
    assert_private(Path(data["token_cache_file"]))
    [row] = setup.rows()
    assert row.settings["auth"] == "delegated" and row.settings["mailbox"] == UPN


def test_device_code_declined_or_flows_not_allowed(setup: Setup) -> None:
    r = device_code_auth(setup, approve=False)
    assert r.code == 1 and "declined" in r.out, (r.out, r.err)  # --json: the error on stdout
    assert setup.rows() == [] and not (setup.tmp / "state" / "microsoft" / f"{ADMIN}.json").exists()

    private = setup.fake.add_app("confidential only")  # "Allow public client flows" is off
    cfg = setup.config(f'client_id = "{private.client_id}"\ntenant = "{setup.fake.tenant.id}"\n')
    r = setup.run("auth", "microsoft", ADMIN, "--device-code", config=cfg)
    assert r.code == 78, r.err
    assert "allow public client flows" in r.err and "Traceback" not in r.err


def test_calendar_add_microsoft_app_only(setup: Setup) -> None:
    r = setup.run("--json", "calendar", "add", ADMIN, "microsoft", "--mailbox", UPN)
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["created"] is True and setup.calendars()["Bookings"] == data["calendar_id"]
    [row] = setup.rows()
    assert row.settings == {
        "mailbox": UPN,
        "admin_email": ADMIN,
        "auth": "app",
        "calendar_id": data["calendar_id"],
    }
    again = setup.run("--json", "calendar", "add", ADMIN, "microsoft", "--mailbox", UPN)
    assert again.code == 0 and json.loads(again.out) == {**data, "created": False}

    default = setup.calendars()["Calendar"]
    r = setup.run("calendar", "add", ADMIN, "microsoft", "--mailbox", UPN, "--calendar-id", default)
    assert r.code == 0, r.err
    assert [x.settings["calendar_id"] for x in setup.rows()] == [data["calendar_id"], default]
    doc = setup.run("doctor")
    assert "ok    calendar 1 token: Microsoft app-only token for " + UPN in doc.out, doc.out
    assert f"ok    calendar 2: Calendar in {UPN}" in doc.out, doc.out


def test_bad_input_gets_one_sentence_and_its_exit_code(setup: Setup) -> None:
    add = ["calendar", "add", ADMIN, "microsoft", "--mailbox", UPN]
    secret = (
        f'client_id = "{setup.client_id}"\nclient_secret_file = "{setup.tmp / "graph-secret"}"\n'
    )
    cases: list[tuple[list[str], str | None, int, str]] = [
        (add, "", 78, "[microsoft] client_id is not set"),
        (["auth", "microsoft", ADMIN, "--device-code"], "", 78, "[microsoft] client_id"),
        (add, f'{secret}tenant = "common"\n', 78, "not 'common'"),
        (add[:-2], None, 2, "needs --mailbox UPN"),
        (["calendar", "add", "nobody@example.com", "microsoft", "--mailbox", UPN], None, 3, ""),
        ([*add, "--calendar-id", "AAMkNoSuchCalendar"], None, 3, "is not in mailbox"),
        (add, f'{secret}tenant = "nosuchtenant.example"\n', 78, "set [microsoft] tenant"),
    ]
    for args, microsoft, code, words in cases:
        cfg = setup.config(microsoft)
        r = setup.run(*args, config=cfg)
        assert r.code == code, (args, r.code, r.err)
        assert words in r.err and "Traceback" not in r.err, (args, r.err)
        assert len(r.err.strip().splitlines()) == 1, r.err
    setup.fake.revoke_secret(setup.client_id)
    r = setup.run(*add)
    assert r.code == 4 and "client secret" in r.err and "Traceback" not in r.err, r.err
    assert setup.rows() == []
