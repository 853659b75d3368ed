"""The iTIP part of a customer email is written directly (issue 11: it was a quarter of an
email's cost), and what it writes is byte for byte what ``icalendar`` writes for it."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar import Calendar

from syncd.notify.compose import ITIP, itip, itip_with_library
from syncd.notify.emaildocs import EXAMPLES

# Names with what quoting, escaping and folding must get right.
TEXT = st.text(
    st.sampled_from(list("ab ,;:\\N^\r\n\t\"'é€😀ÿ—’<>@")) | st.characters(codec="utf-8"),
    max_size=120,
)
ADDR = st.from_regex(r"[a-z0-9._%+'^-]{1,40}@[a-z0-9-]{1,30}\.[a-z]{2,6}", fullmatch=True)
NOW = datetime(2026, 11, 30, 12, 0, 7, 123456, tzinfo=UTC)


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(sorted(ITIP)),
    customer=TEXT,
    email=ADDR,
    admin=TEXT,
    # ``[smtp] from`` is one line of config: a display name without quotes or brackets.
    sender_name=st.text(st.sampled_from(list("ab ,;:^'é€😀ÿ—’@.")), max_size=60),
    sender_addr=ADDR,
    uid=TEXT.filter(bool),
    sequence=st.integers(0, 10_000),
    minutes=st.integers(-100_000, 100_000),
)
def test_the_direct_writer_equals_the_library(
    kind: str,
    customer: str,
    email: str,
    admin: str,
    sender_name: str,
    sender_addr: str,
    uid: str,
    sequence: int,
    minutes: int,
) -> None:
    payload = copy.deepcopy(EXAMPLES["rescheduled"])
    s = payload["session"]
    start = datetime(2027, 3, 28, 1, 30, tzinfo=UTC) + timedelta(minutes=minutes)
    s.update(uid=uid, sequence=sequence, start=start.isoformat())
    s["end"] = (start + timedelta(minutes=45)).isoformat()
    s["customer"].update(name=customer, email=email)
    s["admin"]["name"] = admin
    sender = f'"{sender_name}" <{sender_addr}>' if sender_name.strip() else sender_addr
    got = itip(payload, kind, sender, NOW)
    assert got is not None
    assert got == (ITIP[kind][0], itip_with_library(payload, kind, sender, NOW))


def test_the_common_email_is_written_directly_and_reads_back() -> None:
    payload = EXAMPLES["choose"]
    got = itip(payload, "choose", "Kim's bookings <noreply@book.example.com>", NOW)
    assert got is not None
    method, ics = got
    event = Calendar.from_ical(ics).walk("VEVENT")[0]
    assert method == "REQUEST"
    assert str(event["STATUS"]) == "TENTATIVE"
    assert str(event["ATTENDEE"].params["CN"]) == "Ann Weber"
    assert str(event["ORGANIZER"].params["CN"]) == "Kim's bookings"
    assert event.decoded("DTSTART") == datetime(2026, 12, 1, 15, tzinfo=UTC)
    assert itip(EXAMPLES["gesture_undone"], "gesture_undone", "a@b.example", NOW) is None
