"""A claim reads the row it takes, not every candidate's payload (issue 11)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event

from syncd.notify import sender
from syncd.store.context import Context
from syncd.store.models import OutboxRow


def _queue(ctx: Context, n: int, payload: dict[str, object]) -> None:
    """``n`` due emails to the admin (no session: nothing coalesces them)."""
    now = ctx.clock()
    with ctx.db.write() as orm:
        for i in range(n):
            orm.add(
                OutboxRow(
                    dedupe_key=f"k{i}",
                    session_id=None,
                    kind="breaker_tripped",
                    recipient=f"r{i}@example.org",
                    payload=dict(payload),
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    message_id=f"<m{i}@example.org>",
                    created_at=now,
                )
            )


def test_a_claim_loads_only_the_row_it_takes(ctx: Context) -> None:
    now = ctx.clock()
    _queue(ctx, 8, {"big": "x" * 1000})
    loaded: list[int] = []

    def on_load(row: OutboxRow, _context: object) -> None:
        loaded.append(row.id)

    event.listen(OutboxRow, "load", on_load)
    try:
        claimed, _ = sender.claim(ctx, "w1", now, timedelta(minutes=5), 5)
    finally:
        event.remove(OutboxRow, "load", on_load)
    assert claimed is not None and claimed.recipient == "r0@example.org"
    assert len(loaded) == 1


class _Sink:
    """A mailer that keeps what it is handed."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, message: object, recipients: list[str]) -> None:
        self.sent.extend(recipients)

    def close(self) -> None:
        pass


def test_a_drain_records_each_sent_row_with_the_next_claim(ctx: Context) -> None:
    """Two write transactions an email (claim, started), not three; every row ends sent."""
    from syncd.config import SmtpConfig
    from syncd.notify.emaildocs import EXAMPLES

    now = ctx.clock()
    _queue(ctx, 5, dict(EXAMPLES["breaker_tripped"]))
    writes = 0
    real = ctx.db.write

    def counting():  # type: ignore[no-untyped-def]
        nonlocal writes
        writes += 1
        return real()

    ctx.db.write = counting  # type: ignore[method-assign]
    sink = _Sink()
    result = sender.drain(ctx, sink, SmtpConfig(), "w1", now=now)  # type: ignore[arg-type]
    ctx.db.write = real  # type: ignore[method-assign]
    assert result.sent == 5 and len(sink.sent) == 5
    assert writes == 2 * 5 + 1  # 5 claims + 5 started + the claim that finds none
    with ctx.db.read() as orm:
        assert {r.status for r in orm.query(OutboxRow)} == {"sent"}
