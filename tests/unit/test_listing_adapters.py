"""Each adapter hands a full listing over page by page (issue 11, goal 3): a page is
requested only when the one before has been read, and a connection that breaks mid-way
raises from the iterator (the engine then judges nothing: tests/unit/test_listing_pages.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from syncd.ports import ChangeSet, ListingPage, PagedListing, Transient
from tests.contract.google_human import make_backend
from tests.contract.samples import END, START, desired
from tests.fakes.google_calendar import FakeGoogleCalendar


def _pages(cs: ChangeSet) -> Iterator[ListingPage]:
    assert cs.full and cs.changed == () and cs.pages is not None
    return cs.pages


@pytest.fixture
def google() -> Iterator[FakeGoogleCalendar]:
    with FakeGoogleCalendar(owner="admin@example.com") as f:
        f.latency = 0.0
        yield f


def test_google_lists_a_page_at_a_time(google: FakeGoogleCalendar) -> None:
    backend = make_backend(google, page_size=2, max_attempts=2)
    assert isinstance(backend, PagedListing)
    made = [
        backend.create(desired(f"s_p{i}", START + timedelta(days=i), END + timedelta(days=i)))
        for i in range(5)
    ]
    google.reset_log()
    pages = _pages(backend.full_listing({}))
    assert google.count("events.list") == 0  # nothing asked before the first page
    got: list[ListingPage] = []
    for n, page in enumerate(pages, 1):
        assert google.count("events.list") == n  # one request a page, as they are read
        got.append(page)
    assert [len(p.events) for p in got] == [2, 2, 1]
    assert [p.last for p in got] == [False, False, True]
    assert got[-1].cursor and got[-1].cursor.startswith("v1:") and got[0].cursor is None
    listed = {e.remote_id: e.etag for p in got for e in p.events}
    assert listed == {m.remote_id: m.etag for m in made}
    whole = backend.changes(None, {})  # the same listing, gathered
    assert {e.remote_id for e in whole.changed} == set(listed) and whole.full
    backend.close()


def test_google_listing_broken_mid_way_raises(google: FakeGoogleCalendar) -> None:
    backend = make_backend(google, page_size=2, max_attempts=2)
    for i in range(5):
        backend.create(desired(f"s_b{i}", START + timedelta(days=i), END + timedelta(days=i)))
    pages = _pages(backend.full_listing({}))
    first = next(pages)
    assert len(first.events) == 2 and not first.last
    google.fail_next(5, status=503)  # every retry of the second page
    with pytest.raises(Transient):
        next(pages)
    backend.close()
