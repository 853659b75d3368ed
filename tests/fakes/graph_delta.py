"""Calendar views and ``calendarView/delta`` state tokens for the Microsoft Graph fake.

A calendar view holds single instances and the occurrences of series (never the series
master itself). A delta round snapshots the view as ``{id: changeKey}``; following its
deltaLink reports what differs, plus, as Graph documents, ``@removed`` for events outside
the window that changed since the previous call. The caller holds the fake's lock.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from dateutil.rrule import DAILY, FR, MO, MONTHLY, SA, SU, TH, TU, WE, WEEKLY, YEARLY, rrule

from .graph_model import Mailbox, Occurrence, StoredCalendar, StoredEvent
from .graph_values import GraphError, Json, derived_id, item_not_found

DAYS = {"sunday": SU, "monday": MO, "tuesday": TU, "wednesday": WE, "thursday": TH}
DAYS.update({"friday": FR, "saturday": SA})
INDEX = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
MAX_EXPANSION = 5000
DEFAULT_PAGE_SIZE = 10  # Graph's own default is undocumented; small enough to force paging

ViewItem = StoredEvent | Occurrence


def overlaps(start: datetime, end: datetime, w_start: datetime, w_end: datetime) -> bool:
    """Whether an event lies in a window; a zero-length event counts at its start."""
    if start == end:
        return w_start <= start < w_end
    return start < w_end and end > w_start


def _rule(ev: StoredEvent) -> rrule:
    rec = ev.recurrence or {}
    pat, rng = rec["pattern"], rec["range"]
    first = date.fromisoformat(str(rng["startDate"]))
    kw: dict[str, Any] = {
        "dtstart": datetime.combine(first, ev.start_local.time()),
        "interval": max(1, int(pat.get("interval") or 1)),
    }
    days = [DAYS[str(d).lower()] for d in pat.get("daysOfWeek") or []]
    kind = pat["type"]
    if kind == "daily":
        freq = DAILY
    elif kind == "weekly":
        freq, kw["byweekday"] = WEEKLY, days
        kw["wkst"] = DAYS.get(str(pat.get("firstDayOfWeek", "sunday")).lower(), SU)
    elif kind in ("absoluteMonthly", "absoluteYearly"):
        freq = MONTHLY if kind == "absoluteMonthly" else YEARLY
        kw["bymonthday"] = int(pat.get("dayOfMonth") or first.day)
        if freq == YEARLY:
            kw["bymonth"] = int(pat.get("month") or first.month)
    else:  # relativeMonthly / relativeYearly
        freq = MONTHLY if kind == "relativeMonthly" else YEARLY
        kw["byweekday"] = [d(INDEX.get(str(pat.get("index", "first")), 1)) for d in days]
        if freq == YEARLY:
            kw["bymonth"] = int(pat.get("month") or first.month)
    if rng["type"] == "endDate":
        kw["until"] = datetime.combine(date.fromisoformat(str(rng["endDate"])), time.max)
    elif rng["type"] == "numbered":
        kw["count"] = max(1, int(rng.get("numberOfOccurrences") or 1))
    return rrule(freq, **kw)


def occurrences(
    owner: Mailbox, ev: StoredEvent, w_start: datetime, w_end: datetime
) -> list[Occurrence]:
    """The instances of a series master that fall in a window (ids are stable per date)."""
    out: list[Occurrence] = []
    duration = ev.end_local - ev.start_local
    for n, local in enumerate(_rule(ev)):
        if n >= MAX_EXPANSION:
            break
        day = local.date().isoformat()
        occ = Occurrence(derived_id(ev.id, day), ev, day, local, local + duration)
        if occ.start >= w_end:
            break
        if day in ev.deleted_occurrences or not overlaps(occ.start, occ.end, w_start, w_end):
            continue
        owner.occurrences[occ.id] = (ev.id, day)
        out.append(occ)
    return out


def view(
    owner: Mailbox, cal: StoredCalendar, w_start: datetime, w_end: datetime
) -> dict[str, ViewItem]:
    """The calendar view: single instances and occurrences in the window, by start."""
    items: list[ViewItem] = []
    for ev in cal.events.values():
        if ev.recurrence:
            items.extend(occurrences(owner, ev, w_start, w_end))
        elif overlaps(ev.start, ev.end, w_start, w_end):
            items.append(ev)
    items.sort(key=lambda it: (it.start, it.id))
    return {it.id: it for it in items}


def find_occurrence(owner: Mailbox, occ_id: str) -> Occurrence:
    """An occurrence id previously shown in a view; 404 once its series or date is gone."""
    if occ_id not in owner.occurrences:
        raise item_not_found()
    master_id, day = owner.occurrences[occ_id]
    master = owner.find(master_id)
    if not master.recurrence or day in master.deleted_occurrences:
        raise item_not_found()
    local = datetime.combine(date.fromisoformat(day), master.start_local.time())
    if not _rule(master).between(local, local, inc=True):
        raise item_not_found()
    return Occurrence(occ_id, master, day, local, local + (master.end_local - master.start_local))


def change_key(item: ViewItem) -> str:
    """Occurrences share their master's changeKey."""
    return item.master.change_key if isinstance(item, Occurrence) else item.change_key


@dataclass
class DeltaState:
    """What a deltaLink remembers: the view as last reported, and the mailbox sequence."""

    upn: str
    cal_id: str
    start: datetime
    end: datetime
    seen: dict[str, str]
    seq: int
    path: str  # the initial delta URL, for a 410 Location header


@dataclass
class DeltaRound:
    """Rows of one round, paged out, and the state its deltaLink will carry."""

    rows: list[Json]
    state: DeltaState
    page_size: int
    delta_token: str = ""


@dataclass
class DeltaTokens:
    """Server-side state tokens: $skiptoken → (round, offset), $deltatoken → snapshot.

    Both stay valid until expired, so a client may retry a nextLink or replay a deltaLink.
    """

    states: dict[str, DeltaState] = field(default_factory=dict)
    pages: dict[str, tuple[DeltaRound, int]] = field(default_factory=dict)
    reset_pending: bool = False

    def changes(
        self,
        owner: Mailbox,
        cal: StoredCalendar,
        start: datetime,
        end: datetime,
        prior: DeltaState | None,
        path: str,
    ) -> tuple[list[ViewItem], list[str], DeltaState]:
        """(upserts, removed ids, next state) since ``prior`` (None: a full round)."""
        items = view(owner, cal, start, end)
        seen = {k: change_key(v) for k, v in items.items()}
        state = DeltaState(owner.upn, cal.id, start, end, seen, owner.seq, path)
        if prior is None:
            return list(items.values()), [], state
        upserts = [it for k, it in items.items() if prior.seen.get(k) != change_key(it)]
        removed = [k for k in prior.seen if k not in items]
        for ev in cal.events.values():  # changed outside the window (series masters too)
            if ev.seq > prior.seq and ev.id not in items and ev.id not in prior.seen:
                removed.append(ev.id)
        for eid, seq in cal.tombstones.items():
            if seq > prior.seq and eid not in items and eid not in prior.seen:
                removed.append(eid)
        return upserts, list(dict.fromkeys(removed)), state

    def open_round(self, rows: list[Json], state: DeltaState, page_size: int) -> str:
        """Register a round; returns the skip token of its first page."""
        token = secrets.token_urlsafe(24)
        self.pages[token] = (DeltaRound(rows, state, max(1, page_size)), 0)
        return token

    def page(
        self, skip_token: str, page_size: int | None
    ) -> tuple[list[Json], str | None, str | None]:
        """(rows, next skip token or None, delta token or None) for one page of a round."""
        found = self.pages.get(skip_token)
        if found is None:
            raise sync_state_not_found()
        rnd, offset = found
        size = max(1, page_size or rnd.page_size)
        rows = rnd.rows[offset : offset + size]
        if offset + size < len(rnd.rows):
            nxt = secrets.token_urlsafe(24)
            self.pages[nxt] = (rnd, offset + size)
            return rows, nxt, None
        if not rnd.delta_token:
            rnd.delta_token = secrets.token_urlsafe(24)
            self.states[rnd.delta_token] = rnd.state
        return rows, None, rnd.delta_token

    def state(self, delta_token: str) -> DeltaState:
        """The snapshot behind a deltaLink; 410 SyncStateNotFound once expired."""
        found = self.states.get(delta_token)
        if found is None:
            raise sync_state_not_found()
        return found

    def expire_all(self) -> None:
        """Forget every token: the next nextLink/deltaLink answers 410 SyncStateNotFound."""
        self.states.clear()
        self.pages.clear()


def sync_state_not_found() -> GraphError:
    """The answer to an expired or unknown delta state token."""
    return GraphError(
        410,
        "SyncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be "
        "synchronized again.",
    )
