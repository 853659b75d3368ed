"""The command line end to end through its entry point, bad input included."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.cli_helpers import book, syncd, syncd_each, write_config

SOON = (datetime.now(UTC) + timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
LATER = SOON + timedelta(days=5)


def _setup(tmp_path: Path, db_url: str, weekly: str | None = None) -> Path:
    """A migrated database with coach@example.com; availability only when ``weekly``
    (an admin without any is not restricted, so SOON and LATER may fall anywhere)."""
    (tmp_path / "state").mkdir(exist_ok=True)
    cfg = write_config(tmp_path / "syncd.toml", db_url, f'[sync]\nstate_dir = "{tmp_path}/state"\n')
    assert syncd(cfg, "db", "upgrade").code == 0
    assert syncd(cfg, "db", "upgrade").code == 0  # idempotent
    r = syncd(cfg, "admin", "add", "coach@example.com", "--name", "Coach", "--tz", "Europe/Berlin")
    assert r.code == 0, r.err
    if weekly:
        r = syncd(cfg, "admin", "availability", "coach@example.com", "--weekly", weekly)
        assert r.code == 0, r.err
    return cfg


def _next(weekday: int, hour: int) -> datetime:
    """The next ``weekday`` (0 = Monday) at least two days away, at ``hour``:00 in Berlin."""
    berlin = ZoneInfo("Europe/Berlin")
    day = datetime.now(berlin).date() + timedelta(days=2)
    day += timedelta(days=(weekday - day.weekday()) % 7)
    return datetime(day.year, day.month, day.day, hour, tzinfo=berlin)


BOOK = ["session", "book", "--admin", "coach@example.com"]


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
    assert not (tmp_path / "state" / "link-secret").exists()
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
    # The link secret was made on first use, readable by syncd's user only.
    secret = tmp_path / "state" / "link-secret"
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_text().strip()) >= 32


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
    results = syncd_each([(cfg, args) for args, _, _ in cases])
    for (args, code, text), r in zip(cases, results, strict=True):
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
    assert r.code == 78
    assert r.err.strip().endswith(f"has no schema yet: run 'syncd --config {nodb} db upgrade'.")


def test_expected_failures_get_one_sentence_never_a_traceback(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('[web]\npublic_url = "https://b\xfccher.example"\n'.encode("latin-1"))
    not_sqlite = tmp_path / "notes.db"
    not_sqlite.write_text("these are my notes, not a database\n" * 100)
    cases = [
        (latin1, "not UTF-8 text"),
        (write_config(tmp_path / "my.toml", "mysql://u@h/db"), "only SQLite and PostgreSQL"),
        (write_config(tmp_path / "nourl.toml", "syncd.db"), "is not a database URL"),
        (write_config(tmp_path / "file.toml", f"sqlite:///{not_sqlite}"), "not a SQLite database"),
    ]
    calls = [(cfg, args) for cfg, _ in cases for args in (["session", "list"], ["db", "upgrade"])]
    results = iter(syncd_each(calls))
    for cfg, sentence in cases:
        for args in (["session", "list"], ["db", "upgrade"]):
            r = next(results)
            assert r.code == 78, (cfg, args, r.err)
            assert sentence in r.err and "Traceback" not in r.err, r.err
            assert len(r.err.strip().splitlines()) == 1, r.err


def test_bad_values_are_refused_at_the_door(tmp_path: Path) -> None:
    cfg = _setup(tmp_path, f"sqlite:///{tmp_path}/s.db")
    start = LATER.isoformat()
    ok = ["--customer", "a@b.example", "--customer-name", "A", "--start", start]
    cases = [
        ([*BOOK, *ok, "--duration", str(19 * 365 * 24 * 60)], "--duration must be from 1"),
        ([*BOOK, *ok, "--duration", "0"], "--duration must be from 1"),
        (
            [*BOOK, "--customer", "notanemail", "--customer-name", "A", "--start", start,
             "--duration", "60"],
            "is not an email address",
        ),
        (
            [*BOOK, "--customer", "a@b.example", "--customer-name", " ", "--start", start,
             "--duration", "60"],
            "must not be empty",
        ),
        (
            [*BOOK, "--customer", "a@b.example", "--customer-name", "Ann\r\nBcc: x@evil.example",
             "--start", start, "--duration", "60"],
            "must be one line",
        ),
        (
            [*BOOK, "--customer", "a@b.example", "--customer-name", "A", "--start",
             "9999-12-31T23:00:00Z", "--duration", "90"],
            "out of range",
        ),
        (
            ["admin", "availability", "coach@example.com", "--weekly", "mon 09:00-17:00",
             "--slot", "1s"],
            "slot length",
        ),
        (["admin", "add", "notanemail", "--name", "X", "--tz", "UTC"], "not an email address"),
        (
            ["calendar", "add", "coach@example.com", "caldav", "--url", "ftp://dav.example.com/"],
            "is not an http(s) URL",
        ),
        (
            ["calendar", "add", "coach@example.com", "caldav", "--url", "dav.example.com"],
            "is not an http(s) URL",
        ),
    ]  # fmt: skip
    results = syncd_each([(cfg, args) for args, _ in cases])
    for (args, sentence), r in zip(cases, results, strict=True):
        assert r.code == 2, (args, r.err)
        assert sentence in r.err and "Traceback" not in r.err, (args, r.err)
    assert syncd(cfg, "--json", "session", "list").json() == []
    sid = book(cfg, LATER)
    for args in (
        ["session", "cancel", sid, "--reason", "ill\nBcc: x", "--as", "admin"],
        ["session", "reschedule", sid, "--let-customer-choose", "--message", "a\rb"],
    ):
        r = syncd(cfg, *args)
        assert r.code == 2 and "must be one line" in r.err, r.err
    assert syncd(cfg, "--json", "session", "show", sid).json()["status"] == "booked"


def test_customer_bookings_respect_availability_the_admin_books_anywhere(
    tmp_path: Path,
) -> None:
    cfg = _setup(tmp_path, f"sqlite:///{tmp_path}/s.db", weekly="mon-fri 09:00-17:00")
    args = ["--customer", "a@b.example", "--customer-name", "A", "--duration", "90"]
    saturday = _next(5, 10)
    r = syncd(cfg, *BOOK, *args, "--start", saturday.isoformat())
    assert r.code == 1 and "Traceback" not in r.err
    assert "is outside Coach's availability; please pick another time." in r.err
    assert "(UTC)" in r.err  # told in the customer's zone
    late = _next(1, 16)  # Tuesday 16:00-17:30 runs past 17:00
    assert syncd(cfg, *BOOK, *args, "--start", late.isoformat()).code == 1
    inside = _next(1, 10)
    assert syncd(cfg, *BOOK, *args, "--start", inside.isoformat()).code == 0
    r = syncd(cfg, "--json", *BOOK, *args, "--start", saturday.isoformat(), "--as", "admin")
    assert r.code == 0, r.err
    assert r.json()["end"] == (saturday + timedelta(minutes=90)).astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def test_list_show_and_overlaps_speak_the_admins_zone(tmp_path: Path) -> None:
    cfg = _setup(tmp_path, f"sqlite:///{tmp_path}/s.db")
    start = _next(2, 10)  # a Wednesday, 10:00 in Berlin
    sid = book(cfg, start)
    listed = syncd(cfg, "session", "list").out
    assert f"{start:%a} {start.day} {start:%b %Y}, 10:00 CE" in listed
    assert "(Europe/Berlin)" in listed and "UTC" not in listed
    r = syncd(
        cfg, "session", "reschedule", sid, "--let-customer-choose", "--message", "Sorry",
        "--as", "admin",
    )  # fmt: skip
    assert r.code == 0, r.err
    shown = syncd(cfg, "session", "show", sid).out
    assert "let the customer choose by admin: Sorry" in shown
    assert "let_customer_choose" not in shown and "Z " not in shown
    r = syncd(
        cfg, *BOOK, "--customer", "b@b.example", "--customer-name", "B", "--start",
        (start + timedelta(minutes=30)).isoformat(), "--duration", "60", "--as", "admin",
    )  # fmt: skip
    assert r.code == 1
    assert f"That time overlaps session {sid} ({start:%a} {start.day}" in r.err
    assert "10:00 CE" in r.err and "(Europe/Berlin) to 11:00)" in r.err


def test_let_customer_choose_needs_a_link_secret(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "nostate.toml", f"sqlite:///{tmp_path}/n.db")
    assert syncd(cfg, "db", "upgrade").code == 0
    assert syncd(cfg, "admin", "add", "coach@example.com", "--name", "C", "--tz", "UTC").code == 0
    sid = book(cfg, LATER)
    r = syncd(cfg, "session", "reschedule", sid, "--let-customer-choose", "--message", "m")
    assert r.code == 78 and "Traceback" not in r.err
    assert "link_secret" in r.err and "state_dir" in r.err
    assert syncd(cfg, "--json", "session", "show", sid).json()["status"] == "booked"
    secret = tmp_path / "link-secret"
    secret.write_text("s" * 40 + "\n")
    with cfg.open("a") as out:
        out.write(f'link_secret_file = "{secret}"\n')  # [web] is the last table
    r = syncd(cfg, "session", "reschedule", sid, "--let-customer-choose", "--message", "m")
    assert r.code == 0, r.err


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
    try:
        results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
    finally:  # none left running when one hangs
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    assert any("overlaps" in err for _, err in results)
    listed = syncd(cfg, "--json", "session", "list").json()
    assert len(listed) == 1
