"""The outbox sender end to end: services -> outbox -> drain -> a real aiosmtpd server.

Runs on SQLite, and on PostgreSQL when SYNCD_TEST_POSTGRES_URL is set (tests/conftest.py).
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from icalendar import Calendar
from sqlalchemy import select

from adapters.smtp import SmtpMailer
from syncd.config import SmtpConfig
from syncd.domain.model import Actor, Customer
from syncd.errors import NotFoundError, Refused, UsageError
from syncd.notify import outbox, sender
from syncd.notify.compose import compose
from syncd.notify.links import derive_token
from syncd.services import booking as services
from syncd.services.choice import lookup_choice
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import ChoiceTokenRow, OutboxRow
from tests.conftest import Clock
from tests.smtp_server import SmtpServer, free_port, start_smtp, tls_client_context

START = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # Tue 1 Dec 2026, 16:00 CET in Berlin
END = START + timedelta(hours=1)
FROM = "Bookings <bookings@book.example.com>"
ADMIN = "kim@example.com"
ANN = Customer("ann@example.org", "Ann Weiß", "Europe/Berlin")  # non-ASCII on purpose


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_smtp()
    yield server
    server.stop()


def smtp_cfg(port: int, **overrides: Any) -> SmtpConfig:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "from": FROM,
        "timeout": "5s",
        "backoff": "30s",
        "max_attempts": 3,
        **overrides,
    }
    return SmtpConfig.model_validate(values)


@pytest.fixture
def mailer(smtp: SmtpServer) -> Iterator[SmtpMailer]:
    m = SmtpMailer("127.0.0.1", smtp.port, "none", timeout=5)
    yield m
    m.close()


def drain(
    ctx: Context, m: SmtpMailer, port: int, at: datetime | None = None, **cfg: Any
) -> sender.DrainResult:
    return sender.drain(ctx, m, smtp_cfg(port, **cfg), "worker-1", now=at or ctx.clock())


def booked(ctx: Context, start: datetime = START, customer: Customer = ANN) -> str:
    if not any(a.email == ADMIN for a in services.list_admins(ctx)):
        services.add_admin(ctx, ADMIN, "Kim Lee", "America/New_York")
    return services.book(ctx, ADMIN, customer, start, start + timedelta(hours=1)).id


def rows(ctx: Context, status: str | None = None) -> list[OutboxRow]:
    return outbox.list_rows(ctx, status)


def only(messages: Sequence[EmailMessage]) -> EmailMessage:
    assert len(messages) == 1, [m["Subject"] for m in messages]
    return messages[0]


def text_of(msg: EmailMessage) -> str:
    body = msg.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def html_of(msg: EmailMessage) -> str:
    body = msg.get_body(("html",))
    assert body is not None
    return str(body.get_content())


def itip_of(msg: EmailMessage) -> tuple[str, Any, Any]:
    """(the method parameter of the text/calendar part, its VCALENDAR, its VEVENT)."""
    assert msg.get_content_type() == "multipart/mixed"
    alternative, attachment = list(msg.iter_parts())
    assert alternative.get_content_type() == "multipart/alternative"
    types = [p.get_content_type() for p in alternative.iter_parts()]
    assert types == ["text/plain", "text/html", "text/calendar"]
    cal_part = list(alternative.iter_parts())[2]
    assert cal_part.get_content_charset() == "utf-8"
    assert attachment.get_content_type() == "application/ics"
    assert attachment.get_filename() == "invite.ics"
    cal = Calendar.from_ical(cal_part.get_content())
    assert Calendar.from_ical(attachment.get_content()).to_ical() == cal.to_ical()
    events = list(cal.walk("VEVENT"))
    assert len(events) == 1
    return str(cal_part.get_param("method")), cal, events[0]


# --- every kind of customer email -------------------------------------------------------------


def test_booked_email_carries_itip_request(
    ctx: Context, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    sid = booked(ctx)
    result = drain(ctx, mailer, smtp.port)
    assert (result.sent, result.retried, result.dead) == (1, 0, 0)
    msg = only(smtp.messages)
    row = only_row = rows(ctx)[0]
    assert only_row.status == "sent" and only_row.sent_at == ctx.clock()
    assert msg["Message-ID"] == row.message_id
    assert re.fullmatch(r"<outbox-[0-9a-f]{20}@book\.example\.com>", row.message_id)
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["To"].addresses[0].addr_spec == "ann@example.org"
    assert msg["From"].addresses[0].addr_spec == "bookings@book.example.com"
    assert msg["Reply-To"].addresses[0].addr_spec == ADMIN
    assert msg["Date"] is not None
    assert "Kim Lee" in msg["Subject"] and "Tue 1 Dec, 16:00" in msg["Subject"]
    assert smtp.envelopes == [("bookings@book.example.com", ["ann@example.org"])]

    method, cal, event = itip_of(msg)
    assert method == "REQUEST" and str(cal["METHOD"]) == "REQUEST"
    assert "syncd" in str(cal["PRODID"])
    assert str(event["UID"]) == ctx.uid(sid)
    assert int(event["SEQUENCE"]) == 0
    assert event.decoded("DTSTART") == START and event.decoded("DTEND") == END
    assert event["DTSTART"].to_ical() == b"20261201T150000Z"
    assert event.get("DTSTAMP") is not None
    assert str(event["STATUS"]) == "CONFIRMED"
    assert str(event["ORGANIZER"]) == "mailto:bookings@book.example.com"
    attendee = event["ATTENDEE"]
    assert str(attendee) == "mailto:ann@example.org"
    assert attendee.params["RSVP"] == "FALSE"
    assert attendee.params["PARTSTAT"] == "ACCEPTED"
    assert attendee.params["CN"] == "Ann Weiß"

    text = text_of(msg)
    assert "Tue 1 Dec 2026, 16:00 CET (Europe/Berlin)" in text
    assert "Hello Ann Weiß" in text
    assert msg["To"].addresses[0].display_name == "Ann Weiß"
    assert "Tue 1 Dec 2026, 16:00 CET (Europe/Berlin)" in html_of(msg)


def test_rescheduled_email_has_old_and_new_time(
    ctx: Context, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    sid = booked(ctx)
    drain(ctx, mailer, smtp.port)
    services.reschedule(ctx, sid, datetime(2026, 12, 2, 9, 0, tzinfo=UTC), actor=Actor.ADMIN)
    result = drain(ctx, mailer, smtp.port)
    assert result.sent == 1
    msg = smtp.messages[-1]
    assert msg["Subject"] == "Your session with Kim Lee moved to Wed 2 Dec, 10:00 CET"
    text = text_of(msg)
    assert "New time:  Wed 2 Dec 2026, 10:00 CET (Europe/Berlin)" in text
    assert "Was:       Tue 1 Dec 2026, 16:00 CET (Europe/Berlin)" in text
    method, _cal, event = itip_of(msg)
    assert method == "REQUEST"
    assert str(event["UID"]) == ctx.uid(sid)
    assert int(event["SEQUENCE"]) == 1
    assert event.decoded("DTSTART") == datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def test_canceled_email_has_reason_and_itip_cancel(
    ctx: Context, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    sid = booked(ctx)
    drain(ctx, mailer, smtp.port)
    services.cancel(ctx, sid, "I am ill, sorry <3", actor=Actor.ADMIN)
    assert drain(ctx, mailer, smtp.port).sent == 1
    msg = smtp.messages[-1]
    assert msg["Subject"].startswith("Canceled: your session with Kim Lee")
    assert "Reason:    I am ill, sorry <3" in text_of(msg)
    assert "I am ill, sorry &lt;3" in html_of(msg)
    method, cal, event = itip_of(msg)
    assert method == "CANCEL" and str(cal["METHOD"]) == "CANCEL"
    assert str(event["STATUS"]) == "CANCELLED"
    assert str(event["UID"]) == ctx.uid(sid)
    assert int(event["SEQUENCE"]) == 1


def test_choose_email_has_link_and_token_is_scrubbed_after_sending(
    ctx: Context, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    sid = booked(ctx)
    drain(ctx, mailer, smtp.port)
    services.let_customer_choose(ctx, sid, "Something came up. Another day?")
    pending = rows(ctx, "pending")
    ref = pending[0].payload["link_ref"]  # only a reference rests; the token is derived
    raw = derive_token(ctx.link_key(), ref["id"], ref["session"])
    assert drain(ctx, mailer, smtp.port).sent == 1
    msg = smtp.messages[-1]
    link = ctx.choose_link(raw)
    text = text_of(msg)
    assert link in text and link in html_of(msg)
    assert "Something came up." in text
    # The link expires 7 days from now (Mon 30 Nov 12:00 UTC), told in the customer's zone.
    assert "expires on Mon 7 Dec 2026, 13:00 CET (Europe/Berlin)" in text
    method, _cal, event = itip_of(msg)
    assert method == "REQUEST" and str(event["STATUS"]) == "TENTATIVE"
    assert raw not in event.to_ical().decode()
    with ctx.db.read() as orm:
        stored = json.dumps([r.payload for r in orm.scalars(select(OutboxRow))])
        hashes = [t.token_hash for t in orm.scalars(select(ChoiceTokenRow))]
    assert raw not in stored
    assert services.token_hash(raw) in hashes
    # The link still works: only its hash is needed.
    assert lookup_choice(ctx, raw).session.id == sid


def test_admin_email_gesture_undone_in_admin_zone(
    ctx: Context, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    booked(ctx)
    payload = dict(rows(ctx)[0].payload)
    payload["data"] = {"what": "moved the event into the past", "reason": "it is in the past"}
    msg = compose(payload, "gesture_undone", ADMIN, "<m-1@x>", FROM, None)
    mailer.send(msg, [ADMIN])
    got = only(smtp.messages)
    assert got.get_content_type() == "multipart/alternative"
    text = text_of(got)
    assert "Tue 1 Dec 2026, 10:00 EST (America/New_York)" in text
    assert "moved the event into the past" in text and "it is in the past" in text


# --- failures: nothing is lost ------------------------------------------------------------


def test_server_down_keeps_row_pending_with_backoff_then_sends(ctx: Context, clock: Clock) -> None:
    booked(ctx)
    port = free_port()
    m = SmtpMailer("127.0.0.1", port, "none", timeout=5)
    result = drain(ctx, m, port)
    assert (result.sent, result.retried) == (0, 1)
    (row,) = rows(ctx)
    assert row.status == "pending" and row.attempts == 1
    assert row.last_error and "Cannot reach the SMTP server" in row.last_error
    delay = row.next_attempt_at - clock()
    assert timedelta(seconds=24) <= delay <= timedelta(seconds=36)  # 30 s ± 20 %
    server = start_smtp(port)
    try:
        assert drain(ctx, m, port).sent == 0  # not due yet
        assert drain(ctx, m, port, at=clock() + timedelta(seconds=37)).sent == 1
        assert len(server.messages) == 1
        assert rows(ctx)[0].status == "sent"
    finally:
        m.close()
        server.stop()


def test_421_is_retried_with_growing_backoff(
    ctx: Context, clock: Clock, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    booked(ctx)
    smtp.fail_next("421", times=2)
    assert drain(ctx, mailer, smtp.port).retried == 1
    (row,) = rows(ctx)
    assert row.status == "pending" and "421" in (row.last_error or "")
    at = clock() + timedelta(seconds=40)
    assert drain(ctx, mailer, smtp.port, at=at).retried == 1
    (row,) = rows(ctx)
    assert row.attempts == 2
    assert timedelta(seconds=48) <= row.next_attempt_at - at <= timedelta(seconds=72)
    assert drain(ctx, mailer, smtp.port, at=at + timedelta(seconds=73)).sent == 1
    assert len(smtp.messages) == 1 and rows(ctx)[0].attempts == 3


def test_550_is_dead_at_once_and_retry_brings_it_back(
    ctx: Context, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    booked(ctx)
    smtp.fail_next("550")
    result = drain(ctx, mailer, smtp.port)
    assert (result.dead, result.retried, result.sent) == (1, 0, 0)
    (row,) = rows(ctx, "dead")
    assert row.attempts == 1 and "550" in (row.last_error or "")
    again = sender.retry(ctx, row.id)
    assert again.status == "pending" and again.attempts == 0
    assert drain(ctx, mailer, smtp.port).sent == 1
    assert len(smtp.messages) == 1
    with pytest.raises(Refused):
        sender.retry(ctx, row.id)  # sent rows are not re-sent
    with pytest.raises(NotFoundError):
        sender.retry(ctx, 999_999)


def test_max_attempts_then_dead(
    ctx: Context, clock: Clock, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    booked(ctx)
    smtp.mode = "421"
    at = clock()
    outcomes = []
    for _ in range(3):
        r = drain(ctx, mailer, smtp.port, at=at)
        outcomes.append((r.retried, r.dead))
        at += timedelta(hours=1)
    assert outcomes == [(1, 0), (1, 0), (0, 1)]
    (row,) = rows(ctx)
    assert row.status == "dead" and row.attempts == 3
    assert drain(ctx, mailer, smtp.port, at=at).retried == 0  # dead rows stay parked
    assert smtp.messages == []


def test_drop_after_data_is_resent_once_with_same_message_id(
    ctx: Context, clock: Clock, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    booked(ctx)
    smtp.fail_next("drop")
    first = drain(ctx, mailer, smtp.port)
    assert (first.sent, first.retried) == (0, 1)
    assert len(smtp.messages) == 1  # the server did get it
    (row,) = rows(ctx)
    assert row.status == "pending" and "may have been delivered" in (row.last_error or "")
    second = drain(ctx, mailer, smtp.port, at=clock() + timedelta(minutes=5))
    assert second.sent == 1 and second.resent_after_drop == 1
    assert second.possible_duplicates == 1
    ids = smtp.message_ids()
    assert len(ids) == 2 and ids[0] == ids[1] == row.message_id
    assert "maybe_delivered" not in rows(ctx)[0].payload
    assert drain(ctx, mailer, smtp.port, at=clock() + timedelta(hours=1)).sent == 0


class Crash(BaseException):
    """The process dies (SIGKILL, power loss) right after the server took the message."""


class CrashAfterData:
    def __init__(self, inner: SmtpMailer) -> None:
        self.inner = inner

    def send(self, message: EmailMessage, recipients: Sequence[str]) -> None:
        self.inner.send(message, recipients)
        raise Crash()

    def close(self) -> None:
        self.inner.close()


def test_crash_after_data_resends_after_lease_with_same_message_id(
    ctx: Context, clock: Clock, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    booked(ctx)
    with pytest.raises(Crash):
        drain(ctx, CrashAfterData(mailer), smtp.port)  # type: ignore[arg-type]
    (row,) = rows(ctx)
    assert row.status == "sending" and row.attempts == 1 and row.lease_owner == "worker-1"
    assert drain(ctx, mailer, smtp.port).sent == 0  # the lease still holds
    lease = sender.lease_for(smtp_cfg(smtp.port))
    later = drain(ctx, mailer, smtp.port, at=clock() + lease + timedelta(seconds=1))
    assert later.sent == 1 and later.resent_after_lease == 1
    ids = smtp.message_ids()
    assert len(ids) == 2 and ids[0] == ids[1] == row.message_id
    (row,) = rows(ctx)
    assert row.status == "sent" and row.attempts == 2


# --- coalescing: admin wins, the customer hears the final state once ------------------------


def test_reschedule_then_cancel_before_drain_sends_only_the_cancel(
    ctx: Context, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    sid = booked(ctx)
    drain(ctx, mailer, smtp.port)
    services.reschedule(ctx, sid, datetime(2026, 12, 2, 9, 0, tzinfo=UTC), actor=Actor.ADMIN)
    services.cancel(ctx, sid, "Sorry, I must cancel.", actor=Actor.ADMIN)
    result = drain(ctx, mailer, smtp.port)
    assert result.sent == 1
    assert [m["Subject"].split(":")[0] for m in smtp.messages] == ["Booked", "Canceled"]
    assert [r.status for r in rows(ctx)] == ["sent", "superseded", "sent"]


def test_sender_supersedes_a_row_overtaken_while_it_was_in_flight(
    ctx: Context, clock: Clock, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    sid = booked(ctx)
    drain(ctx, mailer, smtp.port)
    cfg = smtp_cfg(smtp.port)
    services.reschedule(ctx, sid, datetime(2026, 12, 2, 9, 0, tzinfo=UTC), actor=Actor.ADMIN)
    # Worker 2 leases the "moved" row and dies before sending it.
    leased, _ = sender.claim(ctx, "worker-2", clock(), sender.lease_for(cfg), 3)
    assert leased is not None and leased.kind == "rescheduled"
    services.cancel(ctx, sid, "Sorry.", actor=Actor.ADMIN)  # the outbox writer skips a leased row
    assert drain(ctx, mailer, smtp.port).sent == 0  # the cancel waits for the row in flight
    result = drain(ctx, mailer, smtp.port, at=clock() + sender.lease_for(cfg) * 2)
    assert (result.sent, result.superseded) == (1, 1)
    assert [m["Subject"].split(":")[0] for m in smtp.messages] == ["Booked", "Canceled"]


# --- parallel workers -----------------------------------------------------------------------


def test_parallel_drains_never_send_one_row_twice(ctx: Context, smtp: SmtpServer) -> None:
    for i in range(12):
        booked(ctx, START + timedelta(hours=2 * i), Customer(f"c{i}@example.org", f"C{i}", "UTC"))
    results: list[sender.DrainResult] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def worker(n: int) -> None:
        db = Database(ctx.db.url)
        wctx = Context(db=db, public_url=ctx.public_url, clock=ctx.clock)
        m = SmtpMailer("127.0.0.1", smtp.port, "none", timeout=5)
        try:
            barrier.wait()
            results.append(sender.drain(wctx, m, smtp_cfg(smtp.port), f"worker-{n}"))
        except BaseException as err:
            errors.append(err)
        finally:
            m.close()
            db.dispose()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sum(r.sent for r in results) == 12
    ids = smtp.message_ids()
    assert len(ids) == 12 and len(set(ids)) == 12
    assert {r.status for r in rows(ctx)} == {"sent"}


# --- the operator's view --------------------------------------------------------------------


def test_list_rows_and_json(ctx: Context, smtp: SmtpServer, mailer: SmtpMailer) -> None:
    sid = booked(ctx)
    (row,) = rows(ctx, "pending")
    assert rows(ctx, "sent") == []
    with pytest.raises(UsageError):
        rows(ctx, "bogus")
    drain(ctx, mailer, smtp.port)
    data = outbox.outbox_json(rows(ctx)[0])
    assert set(data) == {
        "id",
        "session",
        "kind",
        "recipient",
        "status",
        "attempts",
        "next_attempt_at",
        "message_id",
        "last_error",
        "created_at",
        "sent_at",
    }
    assert data["session"] == sid and data["kind"] == "booked" and data["status"] == "sent"
    assert data["sent_at"] == "2026-11-30T12:00:00Z"
    json.dumps(data)


def test_templates_folder_overrides_and_html_is_escaped(ctx: Context, tmp_path: Path) -> None:
    booked(ctx, customer=Customer("eve@example.org", "<b>Eve</b> & Co", "Asia/Tokyo"))
    payload = rows(ctx)[0].payload
    (tmp_path / "booked.subject").write_text("Custom: {{ customer_name }}\n")
    msg = compose(payload, "booked", "eve@example.org", "<m@x>", FROM, str(tmp_path))
    assert msg["Subject"] == "Custom: <b>Eve</b> & Co"
    assert "&lt;b&gt;Eve&lt;/b&gt; &amp; Co" in html_of(msg)
    assert "<b>Eve</b> & Co" in text_of(msg)
    assert "Wed 2 Dec 2026, 00:00 JST (Asia/Tokyo)" in text_of(msg)
    default = compose(payload, "booked", "eve@example.org", "<m@x>", FROM, None)
    assert default["Subject"].startswith("Booked:")


# --- transport security and login ------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_and_login(ctx: Context, security: str) -> None:
    booked(ctx)
    server = start_smtp(security=security, login=("kim", "s3cret"))
    good = SmtpMailer(
        "127.0.0.1", server.port, security, "kim", "s3cret", 5, ssl_context=tls_client_context()
    )
    bad = SmtpMailer(
        "127.0.0.1", server.port, security, "kim", "wrong", 5, ssl_context=tls_client_context()
    )
    try:
        result = drain(ctx, bad, server.port)
        assert result.retried == 1 and server.messages == []
        assert "refused the login" in (rows(ctx)[0].last_error or "")
        result = drain(ctx, good, server.port, at=ctx.clock() + timedelta(minutes=1))
        assert result.sent == 1 and len(server.messages) == 1
    finally:
        good.close()
        bad.close()
        server.stop()


def test_connection_is_reused_and_reopened_after_a_drop(ctx: Context, smtp: SmtpServer) -> None:
    booked(ctx)
    booked(ctx, START + timedelta(hours=3), Customer("bo@example.org", "Bo", "UTC"))
    m = SmtpMailer("127.0.0.1", smtp.port, "none", timeout=5)
    try:
        assert drain(ctx, m, smtp.port).sent == 2
        first = m._conn
        assert first is not None
        first.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]  # e.g. a NAT timeout
        booked(ctx, START + timedelta(hours=6), Customer("cy@example.org", "Cy", "UTC"))
        assert drain(ctx, m, smtp.port).sent == 1
        assert m._conn is not None and m._conn is not first
        assert len(smtp.messages) == 3
    finally:
        m.close()


def test_a_connection_in_use_is_not_checked_before_each_message(
    ctx: Context, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No NOOP round trip between the messages of a drain; one after the connection idled."""
    import smtplib

    import adapters.smtp

    noops: list[int] = []
    real_noop = smtplib.SMTP.noop

    def counted(self: smtplib.SMTP) -> tuple[int, bytes]:
        noops.append(1)
        return real_noop(self)

    monkeypatch.setattr(smtplib.SMTP, "noop", counted)
    for i in range(3):
        booked(ctx, START + timedelta(hours=3 * i), Customer(f"n{i}@example.org", f"N{i}", "UTC"))
    m = SmtpMailer("127.0.0.1", smtp.port, "none", timeout=5)
    try:
        assert drain(ctx, m, smtp.port).sent == 3
        assert noops == []
        monkeypatch.setattr(adapters.smtp, "CHECK_AFTER_IDLE", 0.0)  # it has idled since
        booked(ctx, START + timedelta(hours=12), Customer("n9@example.org", "N9", "UTC"))
        assert drain(ctx, m, smtp.port).sent == 1
        assert noops == [1] and len(smtp.messages) == 4
    finally:
        m.close()


def test_a_down_server_does_not_burn_every_rows_attempts(ctx: Context) -> None:
    for i in range(5):
        booked(ctx, START + timedelta(hours=2 * i), Customer(f"d{i}@example.org", f"D{i}", "UTC"))
    port = free_port()
    m = SmtpMailer("127.0.0.1", port, "none", timeout=5)
    result = drain(ctx, m, port)
    assert result.retried == sender.STOP_AFTER_TRANSIENT == 3
    assert [r.attempts for r in rows(ctx)] == [1, 1, 1, 0, 0]
    assert {r.status for r in rows(ctx)} == {"pending"}


def test_expired_unused_link_tells_the_admin_once(ctx: Context, clock: Clock) -> None:
    """A link that expires while the session still waits → one email to the admin."""
    from syncd.notify.expiry import notify_expired_links

    services.add_admin(ctx, "coach@example.com", "Coach", "Europe/Berlin")
    start = clock.now + timedelta(days=3)
    s = services.book(
        ctx,
        "coach@example.com",
        Customer("ann@example.org", "Ann", "UTC"),
        start,
        start + timedelta(hours=1),
    )
    services.let_customer_choose(ctx, s.id, "please pick", Actor.ADMIN)
    assert notify_expired_links(ctx) == 0
    clock.advance(days=8)
    assert notify_expired_links(ctx) == 1
    assert notify_expired_links(ctx) == 0
    with ctx.db.read() as orm:
        kinds = [(r.kind, r.recipient) for r in orm.scalars(select(OutboxRow))]
    assert ("link_expired", "coach@example.com") in kinds


def test_a_row_delivered_in_the_data_gap_then_overtaken_is_recorded_as_sent(
    ctx: Context, clock: Clock, smtp: SmtpServer, mailer: SmtpMailer
) -> None:
    """Issue 10, item 12: DATA accepted, the worker killed before recording it, then a
    newer notice of the session: the first row says ``sent`` (the customer has it), and
    it is not sent again."""
    sid = booked(ctx)
    drain(ctx, mailer, smtp.port)
    cfg = smtp_cfg(smtp.port)
    services.reschedule(ctx, sid, datetime(2026, 12, 2, 9, 0, tzinfo=UTC), actor=Actor.ADMIN)
    with pytest.raises(Crash):
        drain(ctx, CrashAfterData(mailer), smtp.port)  # type: ignore[arg-type]
    services.cancel(ctx, sid, "Sorry.", actor=Actor.ADMIN)
    result = drain(ctx, mailer, smtp.port, at=clock() + sender.lease_for(cfg) * 2)
    assert (result.sent, result.superseded, result.taken_as_sent) == (1, 0, 1)
    kinds = [m["Subject"].split(":")[0].split()[-1] for m in smtp.messages]
    assert len(kinds) == 3 and kinds[-1] == "Canceled", kinds  # the "moved" one went once
    assert [r.status for r in rows(ctx)] == ["sent", "sent", "sent"]
    moved = rows(ctx)[1]
    assert "taken as delivered" in (moved.last_error or "")
    assert "send_started" not in moved.payload
