"""A full listing read page by page through the port (issue 11, goal 3).

The real runner on the in-memory calendar with a backend that hands its listing over as
:class:`syncd.ports.ListingPage` s, each event a fresh object (as a parser makes them): the
engine reads the pages once, keeps only what differs from the mirror, and judges nothing —
no removal, no cursor — unless the last page arrived.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from syncd.engine import state
from syncd.ports import ChangeSet, EventContent, ListingPage, RemoteEvent, Transient
from syncd.store.models import CalendarRow, IntentRow
from tests.unit.harness import Harness, LossyBackend

NAMES = [f"Customer {i}" for i in range(12)]
PAGE = 2


class Paged(LossyBackend):
    """Lists page by page (PAGE events each); may break after ``break_after`` pages, end
    without its last page, or add pages at its end (``at_end``)."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.break_after: int | None = None
        self.no_last = False
        self.at_end: Callable[[], list[ListingPage]] = list
        self.pages_read = 0
        self.listings = 0
        #: At each page asked for: how many events of the earlier pages are still alive.
        self.alive: list[int] = []
        self._made: list[weakref.ref[RemoteEvent]] = []

    def full_listing(self, known: Mapping[str, str]) -> ChangeSet:
        self.listings += 1
        return ChangeSet((), (), None, full=True, pages=self._pages())

    def changes(self, cursor: str | None, known: Mapping[str, str]) -> ChangeSet:
        if cursor is None:
            return self.full_listing(known).gathered()
        return super().changes(cursor, known)

    def _pages(self) -> Iterator[ListingPage]:
        cursor = str(self.cal.version)
        events = sorted(self.cal.events.items())
        for n, i in enumerate(range(0, len(events), PAGE)):
            self._count_alive()
            if self.break_after is not None and n >= self.break_after:
                raise Transient("the server dropped the connection mid-listing")
            page = tuple(
                RemoteEvent(rid, e.etag, replace(e.content)) for rid, e in events[i : i + PAGE]
            )
            self._made.extend(weakref.ref(e) for e in page)
            self.pages_read += 1
            yield ListingPage(page)
            del page
        yield from self.at_end()
        if not self.no_last:
            self._count_alive()
            yield ListingPage((), last=True, cursor=cursor)

    def _count_alive(self) -> None:
        gc.collect()
        self.alive.append(sum(r() is not None for r in self._made))


@pytest.fixture
def h(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    world = Harness(NAMES)
    world.settings = replace(world.settings, settle=timedelta(0))
    world.backend = Paged(world.cal)
    world.cycle()  # the cursor past syncd's own writes, every mirror settled
    monkeypatch.setattr(state, "MAX_PARTIAL", 3)
    yield world
    world.close()


def _paged(h: Harness) -> Paged:
    assert isinstance(h.backend, Paged)
    return h.backend


def _expire_cursor(h: Harness) -> None:
    with h.db.write() as orm:
        orm.execute(update(CalendarRow).values(cursor="-1"))


def _cursor(h: Harness) -> str | None:
    with h.db.read() as orm:
        return orm.get_one(CalendarRow, h.cal_id).cursor


def _move(h: Harness, i: int, hours: int) -> None:
    s = h.session(i)
    h.cal.human_set(
        h.rid(i), start=s.start + timedelta(hours=hours), end=s.end + timedelta(hours=hours)
    )


def test_the_engine_keeps_only_what_differs_while_the_pages_arrive(h: Harness) -> None:
    _move(h, 1, 2)  # on the first page
    h.cal.human_delete(h.rid(4))
    _expire_cursor(h)
    b = _paged(h)
    b.alive.clear()
    report = h.cycle()
    assert report.error is None and report.resynced and b.listings == 1
    assert b.pages_read == 6  # 11 events, 2 a page
    # When a page is asked for, what is alive of the earlier ones is the page just read
    # (still the reader's loop variable) and the one event that differs (the admin's
    # move): never the listing (12 events).
    assert len(b.alive) == 7 and max(b.alive) <= PAGE + 1
    assert set(h.admin_actions()) == {(h.sids[1], "rescheduled"), (h.sids[4], "canceled")}
    assert _cursor(h) not in ("-1", None)


def test_a_listing_that_breaks_mid_way_judges_nothing(h: Harness) -> None:
    _move(h, 0, 2)  # on the first page, read before the break
    for i in (3, 10, 11):  # on pages read before the break, and on pages never read
        h.cal.human_delete(h.rid(i))
    _expire_cursor(h)
    b = _paged(h)
    b.break_after = 2
    report = h.cycle()
    assert report.error is not None and "dropped the connection mid-listing" in report.error
    assert h.admin_actions() == []  # not even the move seen before the break
    assert h.customer_emails() == []
    assert _cursor(h) == "-1"
    with h.db.read() as orm:
        assert list(orm.scalars(select(IntentRow))) == []
    b.break_after = None  # the next cycle lists again, whole this time
    report = h.cycle()
    assert report.error is None
    canceled = {sid for sid, a in h.admin_actions() if a == "canceled"}
    assert canceled == {h.sids[3], h.sids[10], h.sids[11]}
    assert (h.sids[0], "rescheduled") in h.admin_actions()
    assert _cursor(h) not in ("-1", None)


def test_a_listing_without_its_last_page_judges_nothing(h: Harness) -> None:
    h.cal.human_delete(h.rid(11))
    _expire_cursor(h)
    b = _paged(h)
    b.no_last = True
    report = h.cycle()
    assert report.error is not None and "ended before its last page" in report.error
    assert h.admin_actions() == [] and _cursor(h) == "-1"


def test_a_later_page_names_an_event_again_or_gone(h: Harness) -> None:
    b = _paged(h)

    def end() -> list[ListingPage]:
        # While the listing was read: event 2 moved (named again, the later one counts)
        # and event 5, listed on an earlier page, deleted.
        _move(h, 2, 4)
        h.cal.human_delete(h.rid(5))
        moved = h.event(2)
        assert moved is not None
        return [ListingPage((moved,)), ListingPage((), removed=(h.rid(5),))]

    b.at_end = end
    _expire_cursor(h)
    report = h.cycle()
    assert report.error is None
    assert set(h.admin_actions()) == {(h.sids[2], "rescheduled"), (h.sids[5], "canceled")}
    assert h.session(2).start == h.event(2).content.start  # type: ignore[union-attr]


def test_gathered_is_the_listing_whole() -> None:
    e = [RemoteEvent(f"/{i}", f'"{i}"', _content()) for i in range(4)]
    pages = iter(
        [
            ListingPage((e[0], e[1])),
            ListingPage((e[2], replace(e[0], etag='"new"')), removed=(e[1].remote_id,)),
            ListingPage((), last=True, cursor="c1"),
            ListingPage((e[3],)),  # after the last: not read
        ]
    )
    cs = ChangeSet((), (), None, full=True, pages=pages).gathered()
    assert [(x.remote_id, x.etag) for x in cs.changed] == [("/0", '"new"'), ("/2", '"2"')]
    assert cs.removed == () and cs.cursor == "c1" and cs.full and cs.pages is None
    recon = ChangeSet((), (), None, reconciled=True, pages=iter([ListingPage((), ("/9",), True)]))
    assert recon.gathered().removed == ("/9",)
    with pytest.raises(Transient, match="before its last page"):
        ChangeSet((), (), None, full=True, pages=iter([ListingPage((e[0],))])).gathered()


def _content() -> EventContent:
    from datetime import UTC, datetime

    t = datetime(2026, 12, 1, 15, tzinfo=UTC)
    return EventContent(t, t + timedelta(hours=1))
