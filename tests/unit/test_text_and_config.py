"""Durations, availability, the event text conventions and the configuration file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd import config
from syncd.domain.availability import free_slots, parse_weekly
from syncd.domain.durations import format_duration, parse_duration
from syncd.domain.eventtext import find_command, merge_notes, notes_block, strip_command
from syncd.domain.model import Admin, Customer, Policy, Session, Status
from syncd.errors import ConfigError, UsageError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("2m", 120), ("24h", 86400), ("7d", 604800), ("1h30m", 5400), ("0s", 0)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert parse_duration(format_duration(timedelta(seconds=seconds))).total_seconds() == seconds


@pytest.mark.parametrize("bad", ["2 minutes", "", "h", "5", "-3m", "1.5h"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError, match="use 90s, 2m, 24h, 7d"):
        parse_duration(bad)


def test_weekly_windows_and_free_slots_across_dst() -> None:
    windows = parse_weekly("mon-fri 09:00-11:00")
    assert [w.weekday for w in windows] == [0, 1, 2, 3, 4]
    admin = Admin(
        "c@x",
        "C",
        "Europe/Berlin",
        Policy(min_notice=timedelta(hours=2)),
        tuple(windows),
        timedelta(hours=1),
    )
    # Fri 23 Oct (CEST, UTC+2) and Mon 26 Oct (CET, UTC+1): 09:00 local both days.
    now = datetime(2026, 10, 23, 5, 0, tzinfo=UTC)
    slots = free_slots(admin, now, now + timedelta(days=4), [])
    starts = [s for s, _ in slots]
    assert datetime(2026, 10, 23, 7, 0, tzinfo=UTC) in starts  # 09:00 CEST
    assert datetime(2026, 10, 26, 8, 0, tzinfo=UTC) in starts  # 09:00 CET
    busy = Session(
        "s",
        "c@x",
        Customer("a@x", "A", "UTC"),
        datetime(2026, 10, 26, 8, 0, tzinfo=UTC),
        datetime(2026, 10, 26, 9, 0, tzinfo=UTC),
        Status.BOOKED,
    )
    starts2 = [s for s, _ in free_slots(admin, now, now + timedelta(days=4), [busy])]
    assert datetime(2026, 10, 26, 8, 0, tzinfo=UTC) not in starts2
    with pytest.raises(UsageError):
        parse_weekly("weekdays 9-5")


def test_commands_and_notes() -> None:
    block = notes_block(["Customer: Ann"])
    notes = merge_notes("my own note", block)
    assert notes.startswith("my own note") and notes.endswith(block)
    assert merge_notes(notes, notes_block(["new"])).count("-- syncd --") == 1
    assert find_command("Cancel: sick", "", ["cancel:"], ["reschedule:"]).text == "sick"  # type: ignore[union-attr]
    cmd = find_command("Ann", "\nreschedule: next week\n" + block, ["cancel:"], ["reschedule:"])
    assert cmd is not None and cmd.kind == "reschedule" and cmd.text == "next week"
    assert find_command("Ann", "please cancel: no", ["cancel:"], ["reschedule:"]) is None
    summary, desc = strip_command(
        "reschedule: x", "reschedule: x\nkeep\n\n" + block, ["reschedule:"], "Ann — 1:1 session"
    )
    assert summary == "Ann — 1:1 session" and desc.startswith("keep") and block in desc


def test_example_config_loads_and_init_writes_it(tmp_path: Path) -> None:
    cfg = config.parse((ROOT / "config" / "syncd.example.toml").read_text(), "example")
    assert cfg.sync.settle == timedelta(minutes=2) and cfg.breaker.fraction == 0.3
    written = config.write_example(tmp_path / "syncd.toml")
    assert config.load(str(written)).smtp.from_ == "Bookings <bookings@example.com>"
    with pytest.raises(ConfigError, match="already exists"):
        config.write_example(written)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[sync]\nsettle = "2 minutes"',
            'syncd.toml: [sync] settle = "2 minutes" is not a duration (use 90s, 2m, 24h, 7d)',
        ),
        ('[sync]\nsetle = "2m"', "syncd.toml: [sync] setle is not a known key"),
        ('[smtp]\nsecurity = "ssl"', 'syncd.toml: [smtp] security = "ssl" is not accepted'),
        ("[smtp\nhost=1", "syncd.toml: not valid TOML"),
        ("[nope]\nx = 1", "syncd.toml: [nope] is not a known section"),
    ],
)
def test_config_errors_name_file_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse(text, "syncd.toml")
    assert str(err.value).startswith(message)
    assert err.value.exit_code == 78


def test_secrets_come_from_files_or_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    cfg = config.parse(f'[smtp]\npassword_file = "{tmp_path / "pw"}"', "x")
    assert cfg.smtp.password() == "s3cret"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cfg2 = config.parse('[smtp]\npassword_credential = "pw"', "x")
    assert cfg2.smtp.password() == "s3cret"
    with pytest.raises(ConfigError, match="password"):
        config.parse('[smtp]\npassword_file = "/nonexistent/pw"', "x").smtp.password()
    with pytest.raises(ConfigError, match="not a known key"):
        config.parse('[smtp]\npassword = "inline"', "x")
