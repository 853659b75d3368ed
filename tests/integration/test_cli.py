"""The command line end to end through its entry point, bad input included."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.cli_helpers import book, syncd, write_config

SOON = (datetime.now(UTC) + timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
LATER = SOON + timedelta(days=5)


def _setup(tmp_path: Path, db_url: str) -> Path:
    cfg = write_config(tmp_path / "syncd.toml", db_url)
    assert syncd(cfg, "db", "upgrade").code == 0
    assert syncd(cfg, "db", "upgrade").code == 0  # idempotent
    r = syncd(cfg, "admin", "add", "coach@example.com", "--name", "Coach", "--tz", "Europe/Berlin")
    assert r.code == 0, r.err
    r = syncd(
        cfg,
        "admin",
        "availability",
        "coach@example.com",
        "--weekly",
        "mon-fri 09:00-17:00",
        "--slot",
        "60m",
    )
    assert r.code == 0, r.err
    return cfg


def test_cancel_inside_the_cutoff_is_refused_and_admin_succeeds(
    tmp_path: Path, db_url: str
) -> None:
    cfg = _setup(tmp_path, db_url)
    sid = book(cfg, SOON)
    r = syncd(cfg, "session", "cancel", sid, "--reason", "x")
    assert r.code == 1
    assert "can no longer be canceled by the customer" in r.err
    assert "America/New_York" in r.err and "Traceback" not in r.err
    r = syncd(cfg, "--json", "session", "cancel", sid, "--reason", "I am ill", "--as", "admin")
    assert r.code == 0, r.err
    assert r.json()["status"] == "canceled" and r.json()["cancel_reason"] == "I am ill"


def test_session_show_json_has_every_field(tmp_path: Path, db_url: str) -> None:
    cfg = _setup(tmp_path, db_url)
    sid = book(cfg, LATER)
    r = syncd(cfg, "session", "reschedule", sid, "--to", (LATER + timedelta(days=1)).isoformat())
    assert r.code == 0, r.err
    data = syncd(cfg, "--json", "session", "show", sid).json()
    assert set(data) >= {
        "id",
        "admin",
        "customer",
        "start",
        "end",
        "status",
        "sequence",
        "cancel_reason",
        "history",
    }
    assert data["customer"] == {"email": "ann@example.org", "name": "Ann", "tz": "America/New_York"}
    assert data["start"].endswith("Z") and data["sequence"] == 1
    assert [h["action"] for h in data["history"]] == ["booked", "rescheduled"]
    assert data["history"][1]["actor"] == "customer"
    assert data["history"][1]["from"] and data["history"][1]["to"]
    listed = syncd(cfg, "--json", "session", "list", "--status", "booked").json()
    assert [s["id"] for s in listed] == [sid]
    outbox = syncd(cfg, "--json", "outbox", "list").json()
    # Not sent yet: the customer hears one "booked" at the new time, not booked + moved.
    assert sorted((o["kind"], o["status"]) for o in outbox) == [
        ("booked", "pending"),
        ("booked", "superseded"),
    ]


def test_let_customer_choose_from_the_cli(tmp_path: Path, db_url: str) -> None:
    cfg = _setup(tmp_path, db_url)
    sid = book(cfg, LATER)
    r = syncd(cfg, "session", "reschedule", sid, "--let-customer-choose")
    assert r.code == 2 and "--message" in r.err
    r = syncd(
        cfg,
        "--json",
        "session",
        "reschedule",
        sid,
        "--let-customer-choose",
        "--message",
        "Sorry, something came up",
        "--as",
        "admin",
    )
    assert r.code == 0, r.err
    assert r.json()["status"] == "awaiting_customer"


def test_bad_input_gets_one_sentence_and_its_exit_code(tmp_path: Path) -> None:
    cfg = _setup(tmp_path, f"sqlite:///{tmp_path}/s.db")
    cases = [
        (
            [
                "session",
                "book",
                "--admin",
                "coach@example.com",
                "--customer",
                "a@b.c",
                "--customer-name",
                "A",
                "--start",
                "2026-12-01T15:00",
                "--duration",
                "60",
            ],
            2,
            "has no offset",
        ),
        (
            [
                "session",
                "book",
                "--admin",
                "coach@example.com",
                "--customer",
                "a@b.c",
                "--customer-name",
                "A",
                "--customer-tz",
                "Mars/Base",
                "--start",
                LATER.isoformat(),
                "--duration",
                "60",
            ],
            2,
            "is not a time zone",
        ),
        (
            ["admin", "add", "x@example.com", "--name", "X", "--tz", "Nowhere/Land"],
            2,
            "is not a time zone",
        ),
        (["session", "show", "s_nope"], 3, "There is no session s_nope"),
        (["session", "cancel", "s_nope", "--reason", "x"], 3, "There is no session"),
        (["admin", "add", "--name"], 2, ""),
    ]
    for args, code, text in cases:
        r = syncd(cfg, *args)
        assert r.code == code, (args, r.err)
        assert text in r.err and "Traceback" not in r.err, r.err
    r = syncd(cfg, "--json", "session", "show", "s_nope")
    assert r.code == 3 and json.loads(r.out) == {
        "error": "There is no session s_nope (see 'syncd session list')."
    }


def test_configuration_errors_exit_78(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[sync]\nsettle = "2 minutes"\n')
    r = syncd(bad, "session", "list")
    assert r.code == 78
    assert r.err.strip() == (
        f'syncd: {bad}: [sync] settle = "2 minutes" is not a duration (use 90s, 2m, 24h, 7d)'
    )
    broken = tmp_path / "broken.toml"
    broken.write_text("[database\n")
    assert syncd(broken, "session", "list").code == 78
    assert syncd(tmp_path / "missing.toml", "session", "list").code == 78
    nodb = write_config(tmp_path / "nodb.toml", f"sqlite:///{tmp_path}/fresh.db")
    r = syncd(nodb, "session", "list")
    assert r.code == 1 and "syncd db upgrade" in r.err


def test_init_writes_a_config_that_loads(tmp_path: Path) -> None:
    target = tmp_path / "new.toml"
    r = subprocess.run(
        [sys.executable, "-m", "syncd.app.cli", "init", str(target)], capture_output=True, text=True
    )
    assert r.returncode == 0 and target.exists()
    again = subprocess.run(
        [sys.executable, "-m", "syncd.app.cli", "init", str(target)], capture_output=True, text=True
    )
    assert again.returncode == 78 and "already exists" in again.stderr


def test_two_processes_booking_one_slot_exactly_one_wins(tmp_path: Path, db_url: str) -> None:
    cfg = _setup(tmp_path, db_url)
    args = [
        "session",
        "book",
        "--admin",
        "coach@example.com",
        "--customer-name",
        "X",
        "--start",
        LATER.isoformat(),
        "--duration",
        "60",
    ]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "syncd.app.cli",
                "--config",
                str(cfg),
                *args,
                "--customer",
                f"c{i}@example.org",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    assert any("overlaps" in err for _, err in results)
    listed = syncd(cfg, "--json", "session", "list").json()
    assert len(listed) == 1
