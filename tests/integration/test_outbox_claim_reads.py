"""A claim reads the row it takes, not every candidate's payload (issue 11)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event

from syncd.notify import sender
from syncd.store.context import Context
from syncd.store.models import OutboxRow


def test_a_claim_loads_only_the_row_it_takes(ctx: Context) -> None:
    now = ctx.clock()
    with ctx.db.write() as orm:
        for i in range(8):
            orm.add(
                OutboxRow(
                    dedupe_key=f"k{i}",
                    session_id=None,
                    kind="breaker_tripped",
                    recipient=f"r{i}@example.org",
                    payload={"big": "x" * 1000},
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    message_id=f"<m{i}@example.org>",
                    created_at=now,
                )
            )
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
