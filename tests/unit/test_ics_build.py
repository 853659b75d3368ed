"""The CalDAV adapter writes a created event directly (issue 11: a first mirror builds
hundreds), and what it writes is byte for byte what ``icalendar`` writes for it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.caldav.ics import build_event, build_event_with_library, parse_event
from tests.contract.samples import desired

# Text with what escaping and folding must get right: separators, backslashes, "\N",
# line breaks of every kind, and characters of 2 to 4 octets at the fold.
TEXT = st.text(
    st.sampled_from(list("ab ,;:\\N^\r\n\t\"'é€😀ÿ—")) | st.characters(codec="utf-8"),
    max_size=300,
)
NOW = datetime(2026, 11, 30, 12, 0, 7, 123456, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(
    summary=TEXT,
    notes=TEXT,
    sid=st.text(st.sampled_from(list("s_abc9,;\\é")), min_size=1, max_size=90),
    status=st.sampled_from(["confirmed", "tentative", "cancelled"]),
    transparent=st.booleans(),
    sequence=st.integers(-1, 1000),
    minutes=st.integers(-10_000, 10_000),
)
def test_the_direct_writer_equals_the_library(
    summary: str,
    notes: str,
    sid: str,
    status: str,
    transparent: bool,
    sequence: int,
    minutes: int,
) -> None:
    start = datetime(2027, 3, 28, 1, 30, 59, 999, tzinfo=ZoneInfo("Europe/Berlin"))
    start += timedelta(minutes=minutes)
    d = desired(
        sid,
        start=start,
        end=start + timedelta(hours=1),
        summary=summary,
        notes_block=notes,
        status=status,
        transparent=transparent,
        sequence=sequence,
    )
    assert build_event(d, NOW) == build_event_with_library(d, NOW)


def test_what_it_writes_reads_back() -> None:
    d = desired("s_1", summary="Ann, Bob; \\ 😀" * 9, notes_block="a\nb;c," * 40)
    content = parse_event(build_event(d, NOW))
    assert content is not None
    assert (content.summary, content.description) == (d.summary, d.notes_block)
    assert (content.start, content.uid, content.session_id) == (d.start, d.uid, "s_1")
