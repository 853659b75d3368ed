"""The admin in Outlook, and the contract suite's kit for the Graph backend on the fake.

:class:`GraphHuman` is a :class:`tests.contract.human.HumanEditor` over the fake's
:class:`tests.fakes.graph_human.OutlookUser`: drags keep a Windows zone name, notes are
typed into the HTML body, a delete goes to Deleted Items and an undo of it restores the
event from there under a **new** Graph id. syncd's remote id of a session's event is the
session id; the human finds the Graph id behind it by the extended property, as a person
simply finds the event on screen.

:class:`GraphKit` makes backends on fresh calendars of one mailbox, app-only (client
credentials through the real msal) over HTTPS with the test CA.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import trustme

from adapters.microsoft.auth import AppTokens
from adapters.microsoft.backend import GraphBackend, Window
from adapters.microsoft.zones import WINDOWS_TO_IANA
from tests.contract.kit import Stopped
from tests.contract.samples import desired
from tests.fakes.graph_human import OutlookUser
from tests.fakes.graph_model import Mailbox, StoredEvent
from tests.fakes.graph_server import FakeGraph
from tests.fakes.graph_values import SYNCD_PROPERTY_ID, format_local, to_local

UPN = "coach@contoso.onmicrosoft.com"
HOME_ZONE = "W. Europe Standard Time"
FAST_RETRIES = (0.001, 0.01)
# The contract's sample events are in 2031: a delta window that reaches them.
CONTRACT_WINDOW = Window(days=3660)
IANA_TO_WINDOWS = {iana: win for win, iana in sorted(WINDOWS_TO_IANA.items(), reverse=True)}
IANA_TO_WINDOWS.update({"Europe/Berlin": HOME_ZONE, "America/New_York": "Eastern Standard Time"})


def windows_zone(tz: str) -> str:
    """The Windows name Outlook would store for an IANA zone (the IANA name if none)."""
    return IANA_TO_WINDOWS.get(tz, tz)


class GraphHuman:
    """:class:`tests.contract.human.HumanEditor` on a mailbox of the Graph fake."""

    def __init__(self, fake: FakeGraph, upn: str = UPN, home_zone: str = HOME_ZONE) -> None:
        self.fake = fake
        self.upn = upn
        self.user = OutlookUser(fake, upn, zone=home_zone)

    def graph_id(self, remote_id: str) -> str:
        """The Graph id of syncd's remote id (a session id), or ``remote_id`` itself."""
        with self.fake.lock:
            mb = self.fake.mailbox(self.upn)
            for cal in mb.calendars.values():
                if remote_id in cal.events:
                    return remote_id
                hits = [e for e in cal.events.values() if e.ext.get(SYNCD_PROPERTY_ID) == remote_id]
                if hits:
                    return min(hits, key=lambda e: e.created).id
        raise KeyError(f"no live event for {remote_id}")

    def _change(self, remote_id: str, mutate: Any) -> StoredEvent:
        return self.fake.human_change(self.upn, self.graph_id(remote_id), mutate)

    # -- HumanEditor ---------------------------------------------------------------------

    def move(self, remote_id: str, start: datetime, end: datetime, tz: str) -> None:
        """Drag in Outlook running in zone ``tz`` (stored under its Windows name)."""
        self.user.drag_in_zone(self.graph_id(remote_id), start, end, zone=windows_zone(tz))

    def delete(self, remote_id: str) -> None:
        """Delete: the event moves to Deleted Items."""
        self.user.delete(self.graph_id(remote_id))

    def edit_title(self, remote_id: str, title: str) -> None:
        """Retype the subject."""
        self.user.edit_subject(self.graph_id(remote_id), title)

    def add_note_line(self, remote_id: str, line: str) -> None:
        """Type a first line above the notes (inside Outlook's HTML)."""
        self.user.type_first_line(self.graph_id(remote_id), line)

    def make_all_day(self, remote_id: str) -> None:
        """Tick "All day"."""
        self.user.make_all_day(self.graph_id(remote_id))

    def make_recurring(self, remote_id: str) -> None:
        """Repeat weekly, four times."""
        self.user.make_recurring(self.graph_id(remote_id), count=4)

    def add_alarm(self, remote_id: str, minutes_before: int = 15) -> None:
        """A reminder, a category, a location and a private property of the person's."""

        def mutate(_: Mailbox, ev: StoredEvent) -> None:
            ev.props["isReminderOn"] = True
            ev.props["reminderMinutesBeforeStart"] = minutes_before
            ev.props["categories"] = ["Coaching"]
            ev.props["location"] = {"displayName": "Room 2", "locationType": "default"}
            ev.ext["String {00020329-0000-0000-c000-000000000046} Name human_flag"] = "kept"

        self._change(remote_id, mutate)

    def has_alarm(self, remote_id: str) -> bool:
        """Whether the reminder and the category survived."""
        ev = self.fake.stored(self.upn, self.graph_id(remote_id))
        return bool(ev.props.get("isReminderOn")) and ev.props.get("categories") == ["Coaching"]

    def reserialize(self, remote_id: str) -> None:
        """Save unchanged from Outlook in the home zone (same instants, new changeKey)."""
        zone = self.user.zone

        def mutate(_: Mailbox, ev: StoredEvent) -> None:
            start, end = ev.start, ev.end
            ev.start_local, ev.start_zone = to_local(start, zone), zone
            ev.end_local, ev.end_zone = to_local(end, zone), zone

        self._change(remote_id, mutate)

    def snapshot(self, remote_id: str) -> str:
        """The Graph id and the stored times, subject and body."""
        ev = self.fake.stored(self.upn, self.graph_id(remote_id))
        return json.dumps(
            {
                "id": ev.id,
                "start": [format_local(ev.start_local), ev.start_zone],
                "end": [format_local(ev.end_local), ev.end_zone],
                "subject": ev.subject,
                "body": ev.body,
                "all_day": ev.is_all_day,
            }
        )

    def restore(self, remote_id: str, raw: str) -> None:
        """Undo: from Deleted Items when deleted (a new id), else put the saved state back."""
        saved: dict[str, Any] = json.loads(raw)
        with self.fake.lock:
            deleted = saved["id"] in self.fake.mailbox(self.upn).deleted_items
        if deleted:
            self.user.restore(saved["id"])
            return

        def mutate(_: Mailbox, ev: StoredEvent) -> None:
            ev.start_local = datetime.fromisoformat(saved["start"][0][:26])
            ev.start_zone = saved["start"][1]
            ev.end_local = datetime.fromisoformat(saved["end"][0][:26])
            ev.end_zone = saved["end"][1]
            ev.subject, ev.body, ev.is_all_day = saved["subject"], saved["body"], saved["all_day"]
            ev.props["recurrence"] = None

        self.fake.human_change(self.upn, saved["id"], mutate)


def app_tokens(fake: FakeGraph, client_id: str, secret: str) -> AppTokens:
    """Client-credentials tokens on the fake's tenant (by id)."""
    return AppTokens(client_id, fake.tenant.id, secret, fake.base_url, timeout=5.0)


def make_backend(
    fake: FakeGraph, client_id: str, secret: str, calendar_id: str, **options: Any
) -> GraphBackend:
    """A GraphBackend on the fake with fast retries."""
    options.setdefault("retry_wait", FAST_RETRIES)
    options.setdefault("window", CONTRACT_WINDOW)
    options.setdefault("timeout", 5.0)
    return GraphBackend(
        UPN, calendar_id, app_tokens(fake, client_id, secret), fake.graph_url, **options
    )


@dataclass
class GraphKit:
    """The contract suite's kit for Graph: one fake, a fresh calendar per backend."""

    fake: FakeGraph
    client_id: str
    secret: str
    human: GraphHuman
    name: str = "microsoft"
    features: frozenset[str] = frozenset()
    bogus_cursor: str = ""
    _made: list[GraphBackend] = field(default_factory=list)

    @classmethod
    def start(cls, ca: trustme.CA) -> GraphKit:
        """A kit on a newly started fake (the caller makes clients trust ``ca``)."""
        fake = FakeGraph(ca).start()
        fake.add_mailbox(UPN, "Coach")
        app = fake.add_app("syncd")
        secret = fake.add_secret(app.client_id)
        stamp = datetime.now(UTC).isoformat()
        bogus = f"g1:{stamp}|{fake.graph_url}users/{UPN}/calendar/calendarView/delta?$deltatoken=x"
        return cls(fake, app.client_id, secret, GraphHuman(fake), bogus_cursor=bogus)

    def __call__(self, **options: Any) -> GraphBackend:
        """A GraphBackend on a new, empty calendar of the mailbox."""
        with self.fake.lock:
            mb = self.fake.mailbox(UPN)
            cal = mb.create_calendar({"name": f"Contract {len(mb.calendars)}"})
        backend = make_backend(self.fake, self.client_id, self.secret, cal.id, **options)
        self._made.append(backend)
        return backend

    def stopped(self) -> Stopped:
        """A backend on a private fake that was used, then stopped."""
        fake = FakeGraph(self.fake.ca).start()
        fake.add_mailbox(UPN, "Coach")
        app = fake.add_app("syncd")
        backend = make_backend(
            fake, app.client_id, fake.add_secret(app.client_id), "", max_attempts=2
        )
        try:
            event = backend.create(desired("stopped"))
            cursor = backend.changes(None, {}).cursor
            assert cursor is not None
        finally:
            fake.stop()
            backend.close()
        self._made.append(backend)
        return Stopped(backend, event.remote_id, cursor)

    def close(self) -> None:
        """Close every backend and stop the fake."""
        for backend in self._made:
            backend.close()
        self.fake.stop()
        assert self.fake.internal_errors == [], self.fake.internal_errors[0]
