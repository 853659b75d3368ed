"""The outbox mailer is made when a message is claimed, not on every tick (issue 11, goal 5)."""

from __future__ import annotations

from pathlib import Path

from syncd import config as config_mod
from syncd.app.mailing import drain_outbox
from syncd.store.context import Context
from syncd.store.db import Database
from tests.smtp_server import start_smtp


def _cfg(password_file: str) -> config_mod.Config:
    return config_mod.parse(
        '[smtp]\nhost = "127.0.0.1"\nport = 9\nusername = "u"\n'
        f'password_file = "{password_file}"\n[web]\npublic_url = "https://book.example.com"\n',
        "test",
    )


def test_an_empty_outbox_builds_no_mailer(tmp_path: Path) -> None:
    """With nothing due, the drain never reads the SMTP secret nor opens a client: a
    password file that is gone does not break an idle tick."""
    db = Database(f"sqlite:///{tmp_path}/s.db")
    db.upgrade()
    ctx = Context(db, "https://book.example.com")
    result = drain_outbox(ctx, _cfg(str(tmp_path / "missing")), "w")
    assert (result.sent, result.retried, result.dead) == (0, 0, 0)


def test_a_drain_still_sends_every_due_message(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from syncd.domain.model import Customer
    from syncd.services import booking as services

    smtp = start_smtp()
    try:
        db = Database(f"sqlite:///{tmp_path}/s.db")
        db.upgrade()
        ctx = Context(db, "https://book.example.com")
        services.add_admin(ctx, "coach@example.com", "Coach", "UTC")
        start = (datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
        for i in range(3):
            at = start + timedelta(hours=2 * i)
            customer = Customer(f"c{i}@example.org", f"C{i}", "UTC")
            services.book(ctx, "coach@example.com", customer, at, at + timedelta(hours=1))
        cfg = config_mod.parse(
            f'[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\n'
            '[web]\npublic_url = "https://book.example.com"\n',
            "test",
        )
        result = drain_outbox(ctx, cfg, "w")
        assert result.sent == len(smtp.messages) >= 3
    finally:
        smtp.stop()
