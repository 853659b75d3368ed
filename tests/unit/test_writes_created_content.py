"""Issue 11: a CalDAV create serializes its event once and parses nothing back.

``built_content`` must say exactly what ``parse_event`` reads from ``build_event``'s object
(property-based); ``create`` must answer it without parsing or scanning its own body.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from adapters.caldav import backend as caldav_backend
from adapters.caldav.backend import CalDAVBackend
from adapters.caldav.ics import build_event, built_content, parse_event
from adapters.caldav.transport import Reply
from syncd.ports import DesiredEvent

NOW = datetime(2026, 12, 1, 12, 30, 15, tzinfo=UTC)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@st.composite
def desired_events(draw: st.DrawFn) -> DesiredEvent:
    start = draw(instants)
    sid = draw(st.from_regex(r"s_[0-9a-f]{4,16}", fullmatch=True))
    uid = draw(st.sampled_from([f"syncd-{sid}@book.example.com", f"{sid}@elsewhere"]))
    return DesiredEvent(
        session_id=sid,
        uid=uid,
        start=start,
        end=start + draw(st.timedeltas(timedelta(minutes=1), timedelta(days=2))),
        summary=draw(text),
        notes_block=draw(text),
        status=draw(st.sampled_from(["confirmed", "tentative", "cancelled"])),
        transparent=draw(st.booleans()),
        sequence=draw(st.integers(0, 10_000)),
    )


CR = DesiredEvent(
    "s_1", "syncd-s_1@h", NOW, NOW + timedelta(hours=1), "A\r\nB\rC", "x\r", "tentative"
)


@settings(max_examples=300, deadline=None)
@given(desired_events())
@example(CR)
def test_built_content_is_what_the_built_object_parses_to(d: DesiredEvent) -> None:
    parsed = parse_event(build_event(d, NOW))
    made = built_content(d)
    assert parsed == made
    assert parsed is not None and parsed.sequence == made.sequence


def test_create_parses_and_scans_nothing_it_built(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = CalDAVBackend("http://127.0.0.1:9/user/cal/", "user", "secret")
    sent: list[bytes] = []

    def send(method, url, body=b"", headers=None, redirects=True):  # type: ignore[no-untyped-def]
        sent.append(body)
        return Reply(201, {"etag": '"e1"'}, b"")

    def forbidden(*args: object) -> None:
        raise AssertionError("the created object was parsed again")

    monkeypatch.setattr(backend._t, "send", send)
    monkeypatch.setattr(caldav_backend, "parse_event", forbidden)
    monkeypatch.setattr(caldav_backend, "has_people", forbidden)
    start = datetime(2027, 1, 4, 9, tzinfo=UTC)
    d = DesiredEvent("s_1", "syncd-s_1@h", start, start + timedelta(hours=1), "Ann", "notes")
    ev = backend.create(d)
    assert len(sent) == 1 and ev.etag == '"e1"'
    assert ev.remote_id == "/user/cal/syncd-s_1@h.ics"
    assert ev.content == parse_event(sent[0])
    backend.close()
