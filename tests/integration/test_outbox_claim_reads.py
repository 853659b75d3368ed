"""The sender's transactions (issue 11): a claim reads the rows it takes, not every
candidate's payload; a batch of claims costs one transaction, each email one more; a notice
overtaken after the claim is not sent; rows leased and not attempted are given back."""

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
    """One write transaction an email (started, with the one before it recorded sent) and
    one a batch (the claim); every row ends sent."""
    from syncd.config import SmtpConfig
    from syncd.notify.emaildocs import EXAMPLES

    now = ctx.clock()
    _queue(ctx, 5, dict(EXAMPLES["breaker_tripped"]))
    writes: list[str] = []
    real, real_statements = ctx.db.write, ctx.db.write_statements

    def counting():  # type: ignore[no-untyped-def]
        writes.append("orm")
        return real()

    def counting_statements():  # type: ignore[no-untyped-def]
        writes.append("core")
        return real_statements()

    ctx.db.write = counting  # type: ignore[method-assign]
    ctx.db.write_statements = counting_statements  # type: ignore[method-assign]
    sink = _Sink()
    result = sender.drain(ctx, sink, SmtpConfig(), "w1", now=now)  # type: ignore[arg-type]
    ctx.db.write, ctx.db.write_statements = real, real_statements  # type: ignore[method-assign]
    assert result.sent == 5 and len(sink.sent) == 5
    # 1 batch claim, 5 started (each without an ORM session), the claim that finds none
    assert writes == ["orm"] + ["core"] * 5 + ["orm"]
    with ctx.db.read() as orm:
        assert {r.status for r in orm.query(OutboxRow)} == {"sent"}


ADMIN = "kim@example.com"


def _book(ctx: Context, n: int) -> list[str]:
    from datetime import UTC, datetime

    from syncd.domain.model import Customer
    from syncd.services import booking as services

    services.add_admin(ctx, ADMIN, "Kim Lee", "Europe/Berlin")
    start = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    return [
        services.book(
            ctx,
            ADMIN,
            Customer(f"c{i}@example.org", f"C{i}", "UTC"),
            start + timedelta(hours=2 * i),
            start + timedelta(hours=2 * i + 1),
        ).id
        for i in range(n)
    ]


def test_a_notice_overtaken_after_the_claim_is_not_sent(ctx: Context) -> None:
    """The second booking's email is claimed in the first one's batch; the admin cancels
    that session while the first email is being sent: the customer gets only the cancel."""
    from syncd.config import SmtpConfig
    from syncd.domain.model import Actor
    from syncd.services import booking as services

    first, second = _book(ctx, 2)

    class CancelsDuringTheFirst(_Sink):
        def send(self, message: object, recipients: list[str]) -> None:
            super().send(message, recipients)
            if len(self.sent) == 1:
                services.cancel(ctx, second, "Sorry, I must cancel.", actor=Actor.ADMIN)

    sink = CancelsDuringTheFirst()
    result = sender.drain(ctx, sink, SmtpConfig(), "w1")  # type: ignore[arg-type]
    assert sink.sent == ["c0@example.org", "c1@example.org"]  # booked (c0), canceled (c1)
    assert (result.sent, result.superseded) == (2, 1)
    with ctx.db.read() as orm:
        kinds = {
            (r.session_id, r.kind): r.status
            for r in orm.query(OutboxRow).filter(OutboxRow.session_id == second)
        }
    assert kinds == {(second, "booked"): "superseded", (second, "canceled"): "sent"}
    assert first


def test_rows_leased_and_not_attempted_are_given_back(ctx: Context) -> None:
    """The server is down: the drain stops after three failures, and the rest of its batch
    is as it was (pending, no attempt spent, no lease) for the next drain."""
    from syncd.config import SmtpConfig
    from syncd.ports import MailTransient

    now = ctx.clock()
    _queue(ctx, 6, {})

    class Down(_Sink):
        def send(self, message: object, recipients: list[str]) -> None:
            raise MailTransient("connection refused")

    result = sender.drain(ctx, Down(), SmtpConfig(), "w1", now=now)  # type: ignore[arg-type]
    assert result.retried == sender.STOP_AFTER_TRANSIENT == 3
    with ctx.db.read() as orm:
        rest = orm.query(OutboxRow).filter(OutboxRow.attempts == 0).all()
        assert len(rest) == 3
        assert {(r.status, r.lease_owner, r.lease_until) for r in rest} == {("pending", None, None)}


def test_a_notice_written_again_for_the_same_revision_is_the_same_row(ctx: Context) -> None:
    """A replayed write of a customer notice (same session, same revision) adds no row."""
    from syncd.domain.model import Notice, NoticeKind
    from syncd.notify.outbox import enqueue
    from syncd.services import booking as services
    from syncd.store.repo import admin_from_row, load_session

    (sid,) = _book(ctx, 1)
    with ctx.db.write() as orm:
        session, admin_row = load_session(orm, sid)
        notice = Notice(NoticeKind.BOOKED, sid, {})
        again = enqueue(orm, [notice], session, admin_from_row(admin_row), "uid", ctx.clock(), "h")
    with ctx.db.read() as orm:
        booked = orm.query(OutboxRow).filter(OutboxRow.session_id == sid).all()
    assert len(booked) == 1 and [r.id for r in again] == [booked[0].id]
    assert services.show(ctx, sid).id == sid


def test_a_second_notice_in_one_transaction_sees_the_first_unwritten_one(ctx: Context) -> None:
    """Rows are added without a flush (one write for a commit's many); a later notice of
    the same session in the same transaction still coalesces with the earlier one."""
    from dataclasses import replace

    from syncd.domain.model import Notice, NoticeKind, Status
    from syncd.notify.outbox import enqueue
    from syncd.store.repo import admin_from_row, load_session

    (sid,) = _book(ctx, 1)
    with ctx.db.write() as orm:
        session, admin_row = load_session(orm, sid)
        admin = admin_from_row(admin_row)
        moved = replace(
            session,
            start=session.start + timedelta(hours=1),
            end=session.end + timedelta(hours=1),
            sequence=session.sequence + 1,
        )
        data = {"old_start": session.start.isoformat(), "old_end": session.end.isoformat()}
        first = Notice(NoticeKind.RESCHEDULED, sid, data)
        enqueue(orm, [first], moved, admin, "uid", ctx.clock(), "h")
        canceled = replace(moved, status=Status.CANCELED, sequence=moved.sequence + 1)
        enqueue(
            orm, [Notice(NoticeKind.CANCELED, sid, {})], canceled, admin, "uid", ctx.clock(), "h"
        )
    with ctx.db.read() as orm:
        rows = orm.query(OutboxRow).filter(OutboxRow.session_id == sid).order_by(OutboxRow.id)
        got = [(r.kind, r.status) for r in rows]
    # The booking's email and the move are superseded by the cancel: one email goes out.
    assert [s for _k, s in got].count("pending") == 1
    assert got[-1] == ("canceled", "pending")
