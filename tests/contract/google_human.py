"""The admin in the Google Calendar UI, for the contract suite (:class:`HumanEditor`).

Edits go straight into the fake's state the way Google's own UI would make them (through
the fake's ``human_*`` helpers): new etags, sequence bumps, a ``timeZone`` on dragged
times, no ``sendUpdates`` recorded. :class:`GoogleKit` is the contract suite's kit for the
Google backend on the fake (a :class:`tests.contract.kit.BackendKit`); add ``"google"``
to ``conftest.BACKENDS`` with a branch that builds ``GoogleKit.start()``.
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from adapters.google.auth import UserCredentials
from adapters.google.backend import GoogleBackend
from tests.contract.kit import Stopped
from tests.contract.samples import desired
from tests.fakes.google_calendar import FakeGoogleCalendar

HOME_ZONE = "Europe/Berlin"
Json = dict[str, Any]


class GoogleHuman:
    """:class:`tests.contract.human.HumanEditor` on a :class:`FakeGoogleCalendar`.

    ``calendars`` are searched newest first for the event id (each contract backend gets
    its own calendar in the same fake); :meth:`watch` adds one.
    """

    def __init__(
        self,
        fake: FakeGoogleCalendar,
        calendars: list[str] | None = None,
        home_zone: str = HOME_ZONE,
    ) -> None:
        self.fake = fake
        self.calendars = list(calendars or ["primary"])
        self.home_zone = home_zone

    def watch(self, calendar_id: str) -> None:
        """Also edit events of ``calendar_id`` (searched first)."""
        self.calendars.append(calendar_id)

    def _cal(self, remote_id: str) -> str:
        with self.fake.lock:
            for cal in reversed(self.calendars):
                if remote_id in self.fake.state.calendar(cal).events:
                    return cal
        raise KeyError(f"no calendar holds event {remote_id}")

    def _raw(self, remote_id: str) -> Json:
        return self.fake.get_event_raw(self._cal(remote_id), remote_id)

    def _write(self, remote_id: str, change: Any) -> None:
        # The fake's UI-write primitive: replace the body, new etag, push notification.
        self.fake._human_write(self._cal(remote_id), remote_id, change)

    # -- HumanEditor ---------------------------------------------------------------------

    def move(self, remote_id: str, start: datetime, end: datetime, tz: str) -> None:
        """Drag to [start, end) in the UI of a user in zone ``tz``."""
        self.fake.human_move(
            self._cal(remote_id), remote_id, start.isoformat(), end.isoformat(), tz=tz
        )

    def delete(self, remote_id: str) -> None:
        """Delete in the UI (the event becomes a tombstone)."""
        self.fake.human_delete(self._cal(remote_id), remote_id)

    def edit_title(self, remote_id: str, title: str) -> None:
        """Replace the title."""
        self.fake.human_edit(self._cal(remote_id), remote_id, summary=title)

    def add_note_line(self, remote_id: str, line: str) -> None:
        """Put ``line`` above the current notes."""
        old = str(self._raw(remote_id).get("description") or "")
        self.fake.human_edit(
            self._cal(remote_id), remote_id, description=f"{line}\n{old}" if old else line
        )

    def make_all_day(self, remote_id: str) -> None:
        """All-day on the (UTC) start date."""
        start = datetime.fromisoformat(self._raw(remote_id)["start"]["dateTime"])
        self.fake.human_make_all_day(self._cal(remote_id), remote_id, start.astimezone(UTC).date())

    def make_recurring(self, remote_id: str) -> None:
        """Weekly, four times."""
        self.fake.human_make_recurring(self._cal(remote_id), remote_id, "FREQ=WEEKLY;COUNT=4")

    def add_alarm(self, remote_id: str, minutes_before: int = 15) -> None:
        """A popup reminder, a color, a location, an attendee and a private property."""

        def change(body: Json) -> None:
            body["reminders"] = {
                "useDefault": False,
                "overrides": [{"method": "popup", "minutes": minutes_before}],
            }
            body["colorId"] = "11"
            body["location"] = "Room 2"
            body["attendees"] = [{"email": "assistant@example.org"}]
            private = body.setdefault("extendedProperties", {}).setdefault("private", {})
            private["human_flag"] = "kept"

        self._write(remote_id, change)

    def has_alarm(self, remote_id: str) -> bool:
        """Whether the event still has a reminder override."""
        reminders = self._raw(remote_id).get("reminders") or {}
        return bool(reminders.get("overrides"))

    def reserialize(self, remote_id: str) -> None:
        """Save unchanged, with the times rewritten in the user's home zone."""
        zone = self.home_zone

        def change(body: Json) -> None:
            for key in ("start", "end"):
                part = body.get(key) or {}
                if "dateTime" in part:
                    when = datetime.fromisoformat(part["dateTime"])
                    body[key] = {
                        "dateTime": when.astimezone(ZoneInfo(zone)).isoformat(),
                        "timeZone": zone,
                    }

        self._write(remote_id, change)

    def snapshot(self, remote_id: str) -> str:
        """The stored resource as JSON."""
        return json.dumps(self._raw(remote_id))

    def restore(self, remote_id: str, raw: str) -> None:
        """Write a snapshot back (undoes a deletion too: the status comes back)."""
        saved: Json = json.loads(raw)

        def change(body: Json) -> None:
            body.clear()
            body.update(copy.deepcopy(saved))

        self._write(remote_id, change)


def bogus_cursor() -> str:
    """A well-formed v1 cursor whose sync token names another calendar (410 from the fake)."""
    return "v1:" + base64.urlsafe_b64encode(b"nobody@example.com|0|0").decode()


def make_backend(fake: FakeGoogleCalendar, calendar_id: str = "primary", **options: Any) -> Any:
    """A GoogleBackend on the fake with fast retries (tests)."""
    creds = UserCredentials(None, token_uri=fake.token_uri, **fake.credentials_kwargs())
    options.setdefault("retry_wait", (0.001, 0.01))
    options.setdefault("timeout", 5.0)
    return GoogleBackend(calendar_id, creds, fake.base_url, **options)


@dataclass
class GoogleKit:
    """The contract suite's kit for Google: one fake, a fresh calendar per backend."""

    fake: FakeGoogleCalendar
    human: GoogleHuman
    name: str = "google"
    features: frozenset[str] = frozenset()
    bogus_cursor: str = field(default_factory=bogus_cursor)
    _made: list[Any] = field(default_factory=list)

    @classmethod
    def start(cls) -> GoogleKit:
        """A kit on a newly started fake."""
        fake = FakeGoogleCalendar().start()
        return cls(fake, GoogleHuman(fake))

    def __call__(self, **options: Any) -> Any:
        """A GoogleBackend on a new, empty calendar of the fake."""
        cal = self.fake.add_calendar("Contract")
        self.human.watch(cal)
        backend = make_backend(self.fake, cal, **options)
        self._made.append(backend)
        return backend

    def stopped(self) -> Stopped:
        """A backend on a private fake that was used, then stopped."""
        fake = FakeGoogleCalendar().start()
        backend = make_backend(fake, max_attempts=2)
        try:
            event = backend.create(desired("stopped"))
            cursor = backend.changes(None, {}).cursor
            assert cursor is not None
        finally:
            fake.stop()
            # The fake's handler threads keep serving open keep-alive connections; drop
            # them, as a real server going down would (the backend reconnects next call).
            backend.close()
        self._made.append(backend)
        return Stopped(backend, event.remote_id, cursor)

    def close(self) -> None:
        """Close every backend and stop the fake."""
        for backend in self._made:
            backend.close()
        self.fake.stop()
