"""A real client in CI (issue 13, item 6): vdirsyncer (+ khal) as the admin's calendar app.

The admin's events live as ``.ics`` files in a local vdir that ``vdirsyncer sync`` keeps in
step with a Radicale calendar; the admin edits the files (as khal and any vdir editor do) and
syncs. syncd's cycle runs on the server side in between. One run covers a move, a delete, a
``cancel:`` title, a move into the past (syncd's restore reaches the client's next sync) and
a location-only edit (nothing happens). ``khal list`` reads the same vdir at the end.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from icalendar import Calendar

from syncd.domain.model import Status
from tests.integration.world import World
from tests.servers import Server

VDIRSYNCER = Path(".venv/bin/vdirsyncer").resolve()
KHAL = Path(".venv/bin/khal").resolve()


class Client:
    """vdirsyncer between ``tmp/vdir`` and one CalDAV collection; files edited in place."""

    def __init__(self, tmp: Path, url: str, server: Server) -> None:
        self.tmp, self.vdir = tmp, tmp / "vdir"
        self.vdir.mkdir()
        (tmp / "pw").write_text(server.password)
        self.config = tmp / "vdirsyncer.conf"
        self.config.write_text(
            f'[general]\nstatus_path = "{tmp}/status/"\n\n'
            '[pair admin]\na = "local"\nb = "server"\ncollections = null\n\n'
            f'[storage local]\ntype = "filesystem"\npath = "{self.vdir}/"\nfileext = ".ics"\n\n'
            f'[storage server]\ntype = "caldav"\nurl = "{url}"\n'
            f'username = "{server.username}"\npassword.fetch = ["command", "cat", "{tmp}/pw"]\n'
        )
        (tmp / "khal.conf").write_text(
            f"[calendars]\n[[admin]]\npath = {self.vdir}/\n"
            "[locale]\ntimeformat = %H:%M\ndateformat = %Y-%m-%d\n"
            "longdateformat = %Y-%m-%d\ndatetimeformat = %Y-%m-%d %H:%M\n"
            "longdatetimeformat = %Y-%m-%d %H:%M\nlocal_timezone = UTC\ndefault_timezone = UTC\n"
        )

    def run(self, *args: str) -> None:
        """``vdirsyncer ARGS``; it must succeed."""
        env = {"VDIRSYNCER_CONFIG": str(self.config), "PATH": "/usr/bin:/bin"}
        r = subprocess.run(
            [str(VDIRSYNCER), *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stdout + r.stderr

    def sync(self) -> None:
        """``vdirsyncer sync`` (after a first ``discover``)."""
        if not (self.tmp / "status").exists():
            self.run("discover", "admin")
        self.run("sync")

    def khal_list(self, start: datetime) -> str:
        """``khal list`` of a week from ``start``: what the admin sees."""
        day = start.strftime("%Y-%m-%d")
        args = [str(KHAL), "-c", str(self.tmp / "khal.conf"), "list", day, "8d"]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    def file_of(self, sid: str) -> Path | None:
        """The local file holding the session's event (by its UID), if any."""
        for path in self.vdir.glob("*.ics"):
            if f"syncd-{sid}@" in path.read_text():
                return path
        return None

    def event(self, sid: str) -> Any:
        path = self.file_of(sid)
        assert path is not None, f"no local file for {sid}"
        return next(iter(Calendar.from_ical(path.read_bytes()).walk("VEVENT")))

    def edit(self, sid: str, change: Any) -> None:
        """Change the session's VEVENT in its file, as a vdir editor does."""
        path = self.file_of(sid)
        assert path is not None
        cal = Calendar.from_ical(path.read_bytes())
        change(next(iter(cal.walk("VEVENT"))))
        path.write_bytes(cal.to_ical())


def _retime(start: datetime) -> Any:
    def change(ev: Any) -> None:
        length = ev.decoded("DTEND") - ev.decoded("DTSTART")
        for name in ("DTSTART", "DTEND"):
            ev.pop(name)
        ev.add("DTSTART", start)
        ev.add("DTEND", start + length)
        ev["SEQUENCE"] = int(ev.get("SEQUENCE", 0)) + 1

    return change


def _set(name: str, value: str) -> Any:
    def change(ev: Any) -> None:
        ev.pop(name, None)
        ev.add(name, value)

    return change


def test_vdirsyncer_as_the_admins_client(tmp_path: Path, radicale_server: Server) -> None:
    (tmp_path / "world").mkdir()
    w = World(tmp_path / "world", radicale_server)
    client = Client(tmp_path, w.url, radicale_server)
    moved, deleted, canceled, past, located = (
        w.book(days=3 + i, name=n) for i, n in enumerate(["Ann", "Bo", "Cy", "Di", "Ed"])
    )
    assert w.sync().writes == 5
    client.sync()
    assert all(client.file_of(s) for s in (moved, deleted, canceled, past, located))

    new_start = w.session(moved).start + timedelta(days=1, hours=2)
    client.edit(moved, _retime(new_start))
    path = client.file_of(deleted)
    assert path is not None
    path.unlink()
    client.edit(canceled, _set("SUMMARY", "cancel: I am ill"))
    yesterday = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    client.edit(past, _retime(yesterday))
    client.edit(located, _set("LOCATION", "Room 4, upstairs"))
    client.sync()

    report = w.sync()
    assert report.error is None, report.error
    assert sorted(report.actions) == sorted(
        [
            f"{moved}: rescheduled",
            f"{deleted}: canceled",
            f"{canceled}: canceled",
            f"{past}: restored (it would start in the past)",
        ]
    ), report
    assert w.session(moved).start == new_start
    assert w.session(deleted).status is Status.CANCELED
    assert w.session(canceled).status is Status.CANCELED
    assert w.session(canceled).cancel_reason == "I am ill"
    assert w.session(past).status is Status.BOOKED and w.session(located).status is Status.BOOKED
    assert ("gesture_undone", "coach@example.com", "pending") in w.outbox(past)
    assert [o[0] for o in w.outbox(located)] == ["booked"]  # a location is not a gesture

    client.sync()  # syncd's restore and deletions reach the client
    assert client.event(past).decoded("DTSTART") == w.session(past).start
    assert client.event(moved).decoded("DTSTART") == new_start
    assert str(client.event(located)["LOCATION"]) == "Room 4, upstairs"  # the admin's field kept
    assert client.file_of(canceled) is None
    assert client.file_of(deleted) is None
    shown = client.khal_list(w.session(moved).start - timedelta(days=2))
    for sid, name in ((moved, "Ann"), (past, "Di")):  # khal shows the sessions' times
        start = w.session(sid).start
        end = start + timedelta(hours=1)
        until = "24:00" if (end.hour, end.minute) == (0, 0) else f"{end:%H:%M}"  # khal's midnight
        assert f"{start:%H:%M}-{until} {name} — 1:1 session" in shown
    assert shown.count("1:1 session") == 3, shown  # Ann (moved), Di (restored), Ed

    w.assert_quiet()
    client.sync()
    assert w.sync().actions == []
