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


# --- issue 12: slots on instants, labels, values at the door, config ------------------------


def _night_admin(tz: str, spec: str, slot: timedelta = timedelta(hours=1)) -> Admin:
    return Admin(
        "c@x.example",
        "C",
        tz,
        Policy(min_notice=timedelta(0)),
        tuple(parse_weekly(spec)),
        slot,
    )


def test_slots_across_the_spring_change_are_never_zero_length() -> None:
    # Europe/Berlin springs forward on Sun 28 Mar 2027 at 02:00 (to 03:00).
    admin = _night_admin("Europe/Berlin", "sun 00:00-05:00")
    now = datetime(2027, 3, 27, 12, tzinfo=UTC)
    slots = free_slots(admin, now, now + timedelta(days=2), [])
    assert slots, "no slots at all"
    assert all(end - start == timedelta(hours=1) for start, end in slots)
    # 00:00-05:00 local is four real hours that night: four one-hour slots.
    assert len(slots) == 4


def test_slots_across_the_autumn_change_are_never_two_hours() -> None:
    # Europe/Berlin falls back on Sun 31 Oct 2027 at 03:00 (to 02:00).
    admin = _night_admin("Europe/Berlin", "sun 00:00-05:00")
    now = datetime(2027, 10, 30, 12, tzinfo=UTC)
    slots = free_slots(admin, now, now + timedelta(days=2), [])
    assert all(end - start == timedelta(hours=1) for start, end in slots)
    assert len(slots) == 6  # six real hours that night


def test_a_slot_keeps_the_sessions_length_and_an_empty_slot_never_loops() -> None:
    admin = _night_admin("UTC", "mon 09:00-12:00")
    now = datetime(2026, 11, 29, tzinfo=UTC)
    slots = free_slots(admin, now, now + timedelta(days=2), [], length=timedelta(minutes=90))
    assert [(s.hour, s.minute, (e - s).seconds // 60) for s, e in slots] == [
        (9, 0, 90),
        (10, 0, 90),
    ]
    stuck = _night_admin("UTC", "mon 09:00-12:00", slot=timedelta(0))
    assert free_slots(stuck, now, now + timedelta(days=2), []) == []


def test_slot_labels_say_when_a_slot_ends_the_next_day() -> None:
    from syncd.web.choose import slot_label

    start = datetime(2026, 12, 1, 22, 30, tzinfo=UTC)
    assert slot_label(start, start + timedelta(hours=1), "UTC") == "22:30 – 23:30"
    assert slot_label(start, start + timedelta(hours=2), "UTC") == "22:30 – 00:30 next day"


def test_history_actions_read_as_words() -> None:
    from syncd.domain.timefmt import action_words

    assert action_words("let_customer_choose") == "let the customer choose"
    assert action_words("chose_new_time") == "customer chose a new time"
    assert action_words("some_new_thing") == "some new thing"


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("Ann\r\nBcc: x@evil.example", "a line break"),
        ("Ann\nWeber", "a line break"),
        ("Ann\u2028Weber", "a line break"),
        ("A\x00nn", "a control character"),
        ("A\tnn", "a control character"),
        ("   ", "must not be empty"),
        ("x" * 201, "too long"),
    ],
)
def test_names_are_one_line_of_text(text: str, sentence: str) -> None:
    from syncd.domain.validate import InvalidValue, name

    with pytest.raises(InvalidValue, match=sentence):
        name(text)


def test_values_at_the_door() -> None:
    from syncd.domain import validate

    assert validate.email(" Ann@Example.ORG ") == "ann@example.org"
    assert validate.name("  Zoë O'Brien ") == "Zoë O'Brien"
    for bad in (
        "notanemail",
        "a b@c.example",
        "a@b",
        "a@@b.example",
        "a@b.example\nBcc: x@y.example",
    ):
        with pytest.raises(validate.InvalidValue, match="is not an email address"):
            validate.email(bad)
    with pytest.raises(validate.InvalidValue, match="at most 24 hours"):
        validate.session_length(timedelta(days=19 * 365))
    for slot in (timedelta(seconds=1), timedelta(seconds=90), timedelta(days=2)):
        with pytest.raises(validate.InvalidValue, match="slot length"):
            validate.slot_length(slot)


def test_html_from_googles_editor_becomes_one_line_of_plain_text() -> None:
    from syncd.domain.validate import plain_text

    html = "Sorry &amp; thanks<br>can we do <b>Thursday</b>?<div>&nbsp;Kim</div>"
    assert plain_text(html) == "Sorry & thanks can we do Thursday? Kim"
    assert plain_text("a\r\nb\tc") == "a b c"
    assert plain_text("3 < 4 & 5") == "3 < 4 & 5"


def test_times_beyond_the_year_9000_are_refused() -> None:
    from syncd.domain.timefmt import parse_time

    with pytest.raises(UsageError, match="out of range"):
        parse_time("9999-12-31T23:00:00Z")
    assert parse_time("2026-12-01T15:00:00.250Z").microsecond == 0


def test_the_default_database_url_is_absolute() -> None:
    example = config.parse((ROOT / "config" / "syncd.example.toml").read_text(), "example")
    for url in (config.Config().database.url, example.database.url):
        assert url == "sqlite:////var/lib/syncd/syncd.db"


def test_a_config_file_that_is_not_utf8_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[web]\npublic_url = "https://b\xfccher.example"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        config.load(str(path))


def test_the_link_secret_is_made_once_mode_0600(tmp_path: Path) -> None:
    web = config.WebConfig()
    first = web.link_secret(str(tmp_path))
    assert (tmp_path / "link-secret").stat().st_mode & 0o777 == 0o600
    assert web.link_secret(str(tmp_path)) == first and len(first) >= 32
    with pytest.raises(ConfigError, match="does not exist"):
        web.link_secret(str(tmp_path / "missing"))
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ConfigError, match="too short"):
        config.WebConfig(link_secret_file=str(short)).link_secret(str(tmp_path))
