"""`syncd calendar add` and `syncd sync --once` through the entry point, on real Radicale."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.cli_helpers import book, syncd, write_config
from tests.contract.human import CalDAVHuman
from tests.servers import start_radicale
from tests.smtp_server import start_smtp


def test_sync_once_mirrors_acts_and_exits_4_when_the_server_is_down(tmp_path: Path) -> None:
    server = start_radicale(tmp_path / "srv")
    smtp = start_smtp()
    try:
        url = server.make_calendar()
        (tmp_path / "pw").write_text(server.password)
        cfg = write_config(
            tmp_path / "syncd.toml",
            f"sqlite:///{tmp_path}/s.db",
            f'[sync]\nsettle = "0s"\n[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\n',
        )
        assert syncd(cfg, "db", "upgrade").code == 0
        assert (
            syncd(
                cfg, "admin", "add", "coach@example.com", "--name", "Coach", "--tz", "Europe/Berlin"
            ).code
            == 0
        )
        r = syncd(
            cfg,
            "calendar",
            "add",
            "coach@example.com",
            "caldav",
            "--url",
            url,
            "--username",
            server.username,
            "--password-file",
            str(tmp_path / "pw"),
        )
        assert r.code == 0, r.err
        r = syncd(cfg, "calendar", "add", "coach@example.com", "caldav")
        assert r.code == 2 and "--url" in r.err
        start = (datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
        sid = book(cfg, start, tz="UTC")
        r = syncd(cfg, "--json", "sync", "--once")
        assert r.code == 0, r.err
        assert r.json()["calendars"][0]["writes"] == 1
        assert [m["Subject"] for m in smtp.messages][0].startswith("Booked")
        # The admin drags the event one day later.
        human = CalDAVHuman(server)
        href = f"{url.split(str(server.port), 1)[1]}syncd-{sid}@book.example.com.ics"
        human.move(
            href, start + timedelta(days=1), start + timedelta(days=1, hours=1), "America/New_York"
        )
        r = syncd(cfg, "--json", "sync", "--once")
        assert r.code == 0, r.err
        assert r.json()["calendars"][0]["actions"] == [f"{sid}: rescheduled"]
        shown = syncd(cfg, "--json", "session", "show", sid).json()
        assert shown["start"] == (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert shown["history"][-1]["actor"] == "admin-calendar"
        assert len(smtp.messages) == 2
        again = syncd(cfg, "--json", "sync", "--once")
        assert again.code == 0 and again.json()["calendars"][0]["actions"] == []
        assert len(smtp.messages) == 2
        doctor = syncd(cfg, "doctor")
        assert doctor.code == 0, doctor.out
        assert "ok    smtp" in doctor.out and "ok    calendar 1" in doctor.out
        server.stop()
        doctor = syncd(cfg, "doctor")
        assert doctor.code == 4 and "FAIL  calendar 1" in doctor.out
        down = syncd(cfg, "sync", "--once")
        assert down.code == 4, down.out + down.err
        assert "error" in down.out
        status = syncd(cfg, "status")
        assert "last error" in status.out
        assert syncd(cfg, "session", "show", sid).code == 0
        assert syncd(cfg, "--json", "session", "show", sid).json()["status"] == "booked"
    finally:
        server.stop()
        smtp.stop()


def test_caldav_password_as_a_systemd_credential(tmp_path: Path) -> None:
    server = start_radicale(tmp_path / "srv")
    try:
        url = server.make_calendar()
        creds = tmp_path / "credentials"
        creds.mkdir()
        (creds / "kim-caldav").write_text(server.password + "\n")
        cfg = write_config(tmp_path / "syncd.toml", f"sqlite:///{tmp_path}/s.db")
        assert syncd(cfg, "db", "upgrade").code == 0
        assert (
            syncd(cfg, "admin", "add", "kim@example.com", "--name", "Kim", "--tz", "UTC").code == 0
        )
        r = syncd(
            cfg,
            "calendar",
            "add",
            "kim@example.com",
            "caldav",
            "--url",
            url,
            "--username",
            server.username,
            "--password-credential",
            "kim-caldav",
        )
        assert r.code == 0, r.err
        listed = syncd(cfg, "--json", "calendar", "list").json()
        assert server.password not in json.dumps(listed)
        outside = syncd(cfg, "sync", "--once")  # no $CREDENTIALS_DIRECTORY: one sentence
        assert outside.code == 4 and "CREDENTIALS_DIRECTORY" in outside.out
        inside = syncd(cfg, "sync", "--once", env={"CREDENTIALS_DIRECTORY": str(creds)})
        assert inside.code == 0, inside.out + inside.err
    finally:
        server.stop()
