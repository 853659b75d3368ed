"""``syncd status`` as an admin reads it, and mail trouble made visible (issue 12, 14 and 16)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.smtp import SmtpMailer
from syncd.config import SmtpConfig
from syncd.domain.model import Customer
from syncd.notify import outbox, sender
from syncd.notify.health import MailHealth
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import CalendarRow, IntentRow
from tests.cli_helpers import syncd, write_config
from tests.smtp_server import free_port, start_smtp

ADMIN = "coach@example.com"


def _smtp_cfg(port: int) -> SmtpConfig:
    return SmtpConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": port,
            "from": "Bookings <b@book.example.com>",
            "timeout": "5s",
            "backoff": "1s",
            "max_attempts": 50,
        }
    )


def _book(ctx: Context, n: int) -> list[str]:
    base = (ctx.clock() + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    out = []
    for i in range(n):
        start = base + timedelta(hours=2 * i)
        customer = Customer(f"c{i}@example.org", f"C{i}", "UTC")
        out.append(services.book(ctx, ADMIN, customer, start, start + timedelta(hours=1)).id)
    return out


def test_status_shows_local_times_breakers_gestures_and_mail_trouble(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    db = Database(url)
    db.upgrade()
    ctx = Context(db, "https://book.example.com")
    services.add_admin(ctx, ADMIN, "Coach", "America/New_York")
    sids = _book(ctx, 2)
    synced = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # 10:00 EST
    now = datetime.now(UTC)
    with db.write() as orm:
        ok = CalendarRow(admin_id=1, backend="caldav", settings={"url": "u1"}, busy_only=False)
        ok.last_sync_at = synced
        tripped = CalendarRow(admin_id=1, backend="google", settings={}, busy_only=False)
        tripped.breaker_tripped_at = synced
        orm.add_all([ok, tripped])
        orm.flush()
        orm.add(
            IntentRow(
                calendar_id=ok.id,
                session_id=sids[0],
                kind="reschedule",
                payload={},
                observed_hash="h",
                first_seen=now - timedelta(minutes=7),
                held=False,
            )
        )
        orm.add(
            IntentRow(
                calendar_id=tripped.id,
                session_id=sids[1],
                kind="removed",
                payload={},
                observed_hash="h",
                first_seen=now - timedelta(hours=2, minutes=5),
                held=True,
            )
        )
    port = free_port()  # nothing listens: the SMTP server is down
    mailer = SmtpMailer("127.0.0.1", port, "none", timeout=5)
    sender.drain(ctx, mailer, _smtp_cfg(port), "w", health=MailHealth())
    mailer.close()
    db.dispose()
    cfg = write_config(tmp_path / "c.toml", url)

    r = syncd(cfg, "status")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    first = next(line for line in lines if line.startswith("calendar 1 "))
    assert "last sync Tue 1 Dec 2026, 10:00 EST (America/New_York)" in first, first
    assert "breaker ok" in first and "1 pending gesture;" in first
    second = next(line for line in lines if line.startswith("calendar 2 "))
    assert "BREAKER TRIPPED at Tue 1 Dec 2026, 10:00 EST (America/New_York), holding 1" in second
    assert any(f"gesture on {sids[0]}: moved (reschedule), waiting 7 min" in x for x in lines)
    held = next(x for x in lines if f"gesture on {sids[1]}" in x)
    assert "deleted" in held and "waiting 2 h 5 min" in held and "held by the breaker" in held
    outbox = next(x for x in lines if x.startswith("outbox: "))
    assert "oldest unsent email waiting" in outbox
    assert "last SMTP error: Cannot reach the SMTP server" in outbox
    assert "+00:00" not in r.out and "Z," not in r.out  # no bare UTC instants

    j = syncd(cfg, "--json", "status").json()
    old_keys = {
        "id", "backend", "busy_only", "last_sync_at", "last_error", "breaker_tripped",
        "paused_reason", "pending_gestures", "mirrored_events", "lease_owner", "lease_until",
        "lease_dead",
    }  # fmt: skip
    assert all(old_keys <= c.keys() for c in j["calendars"])
    assert set(j) >= {"calendars", "outbox"}
    assert j["calendars"][0]["gestures"][0]["kind"] == "reschedule"
    assert j["calendars"][0]["gestures"][0]["age_seconds"] >= 7 * 60
    assert j["calendars"][1]["breaker_tripped"] is True
    assert "Cannot reach the SMTP server" in j["mail"]["last_error"]
    assert j["mail"]["oldest_pending_age_seconds"] >= 0


def test_smtp_down_is_logged_once_per_episode_and_sent_rows_drop_the_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="syncd")
    db = Database(f"sqlite:///{tmp_path}/s.db")
    db.upgrade()
    clock = [datetime.now(UTC)]
    ctx = Context(db, "https://book.example.com", clock=lambda: clock[0])
    services.add_admin(ctx, ADMIN, "Coach", "UTC")
    _book(ctx, 5)
    port = free_port()
    cfg = _smtp_cfg(port)
    health = MailHealth()
    mailer = SmtpMailer("127.0.0.1", port, "none", timeout=5)
    try:
        for _ in range(4):  # four drains while the server is down, several rows each
            assert sender.drain(ctx, mailer, cfg, "w", health=health).retried > 0
            clock[0] += timedelta(minutes=10)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "SMTP server is failing" in warnings[0].getMessage()
        assert any(r.last_error for r in outbox.list_rows(ctx))
        server = start_smtp(port)
        try:
            assert sender.drain(ctx, mailer, cfg, "w", health=health).sent == 5
        finally:
            server.stop()
        infos = [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()]
        assert len(infos) == 1 and caplog.records[-1].levelno == logging.INFO
        assert [(r.status, r.last_error) for r in outbox.list_rows(ctx)] == [("sent", None)] * 5
    finally:
        mailer.close()
        db.dispose()
