"""The demo's calendar side: free ports, Radicale as a subprocess, a tiny CalDAV client.

:func:`start_radicale` runs ``python -m radicale`` with a generated configuration
(htpasswd plain authentication, filesystem storage) and waits until it answers;
:func:`ensure_calendar` creates the calendar collection (MKCALENDAR) unless it exists.
:func:`dav` is one raw HTTP request with basic auth; :func:`list_events` reads every event
of a collection (one ``calendar-query`` REPORT); :class:`CalendarClient` edits events the
way a calendar app does: GET what it shows, change the ICS with icalendar, re-serialize it
its own way, PUT with ``If-Match`` (or DELETE).
"""

from __future__ import annotations

import base64
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from syncd.errors import PeerUnavailable

DAV_NS, CALDAV_NS = "DAV:", "urn:ietf:params:xml:ns:caldav"

MKCALENDAR = """<?xml version="1.0" encoding="utf-8"?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"
              xmlns:I="http://apple.com/ns/ical/">
  <D:set><D:prop>
    <D:displayname>{name}</D:displayname>
    <I:calendar-color>#2f7de1</I:calendar-color>
    <C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set>
  </D:prop></D:set>
</C:mkcalendar>
"""

CALENDAR_QUERY = """<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><D:getetag/><C:calendar-data/></D:prop>
  <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/></C:comp-filter>
  </C:filter>
</C:calendar-query>
"""

Auth = tuple[str, str]


def dav(
    method: str,
    url: str,
    auth: Auth,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request with basic auth; never raises on an HTTP status (OSError if down)."""
    req = urllib.request.Request(url, data=body or None, method=method)
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


# --- ports --------------------------------------------------------------------------------


def port_free(port: int) -> bool:
    """True when 127.0.0.1:``port`` can be listened on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def any_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortPicker:
    """The preferred port when it is free, else a free one; ``notes`` says which moved."""

    def __init__(self) -> None:
        self.taken: set[int] = set()
        self.notes: list[str] = []

    def pick(self, preferred: int, what: str) -> int:
        """A port for ``what`` (``preferred`` 0: any free port)."""
        if preferred and preferred not in self.taken and port_free(preferred):
            port = preferred
        else:
            port = any_port()
            while port in self.taken:
                port = any_port()
            if preferred:
                self.notes.append(f"port {preferred} is in use; {what} uses {port} instead")
        self.taken.add(port)
        return port


# --- Radicale -------------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: Radicale gets SIGTERM when the demo dies without stopping it (kill -9)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG
        except (OSError, AttributeError):
            pass


def radicale_config(root: Path, port: int) -> str:
    """Radicale's configuration: loopback, plain htpasswd in ``root/users``, files in ``root``."""
    return "\n".join(
        [
            "[server]",
            f"hosts = 127.0.0.1:{port}",
            "[auth]",
            "type = htpasswd",
            f"htpasswd_filename = {root / 'users'}",
            "htpasswd_encryption = plain",
            "delay = 0",
            "[rights]",
            "type = owner_only",
            "[storage]",
            f"filesystem_folder = {root / 'collections'}",
            "[web]",
            "type = none",
            "[logging]",
            "level = warning",
            "",
        ]
    )


def start_radicale(root: Path, port: int, user: str, password: str) -> subprocess.Popen[bytes]:
    """Radicale on 127.0.0.1:``port`` with its files under ``root``; returns once it answers.

    Call it before starting threads (it forks with a ``preexec_fn``).
    """
    root.mkdir(parents=True, exist_ok=True)
    users = root / "users"
    users.write_text(f"{user}:{password}\n")
    users.chmod(0o600)
    config = root / "config"
    config.write_text("# Written by `syncd demo` on every start.\n" + radicale_config(root, port))
    log_path = root / "server.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "radicale", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops Radicale in order
            preexec_fn=_die_with_parent,
        )
    home = f"http://127.0.0.1:{port}/{user}/"
    deadline, last = time.monotonic() + 30, "no answer"
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status, _, _ = dav("PROPFIND", home, (user, password), headers={"Depth": "0"})
            if status in (200, 207):
                return proc
            last = f"HTTP {status}"
        except OSError as err:
            last = str(err)
        time.sleep(0.1)
    stop_process(proc)
    tail = log_path.read_text(errors="replace")[-1500:]
    raise PeerUnavailable(f"Radicale did not come up on port {port} ({last}); its log:\n{tail}")


def ensure_calendar(url: str, auth: Auth, name: str) -> None:
    """Create the calendar collection at ``url`` unless it exists."""
    status, _, _ = dav("PROPFIND", url, auth, headers={"Depth": "0"})
    if status in (200, 207):
        return
    body = MKCALENDAR.format(name=name).encode()
    headers = {"Content-Type": "application/xml; charset=utf-8"}
    status, _, text = dav("MKCALENDAR", url, auth, body, headers)
    if status not in (200, 201):
        raise PeerUnavailable(f"MKCALENDAR {url} answered {status}: {text[:300]!r}")


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """Terminate, wait, kill if it must (idempotent)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# --- reading the calendar like a client -----------------------------------------------------


@dataclass(frozen=True)
class CalEvent:
    """One event as a calendar app sees it."""

    href: str
    url: str
    etag: str
    uid: str
    summary: str
    start: datetime | None
    end: datetime | None
    status: str
    notes: str
    raw: bytes


def _instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return None


def parse_event(href: str, url: str, etag: str, raw: bytes) -> CalEvent | None:
    """The master VEVENT of one calendar object, or None when it has none."""
    from icalendar import Calendar

    try:
        cal = Calendar.from_ical(raw)
    except ValueError:
        return None
    masters = [e for e in cal.walk("VEVENT") if "RECURRENCE-ID" not in e]
    if not masters:
        return None
    ev = masters[0]
    start = _instant(ev.decoded("DTSTART")) if "DTSTART" in ev else None
    end = _instant(ev.decoded("DTEND")) if "DTEND" in ev else None
    return CalEvent(
        href=href,
        url=url,
        etag=etag,
        uid=str(ev.get("UID", "")),
        summary=str(ev.get("SUMMARY", "")),
        start=start,
        end=end,
        status=str(ev.get("STATUS", "")),
        notes=str(ev.get("DESCRIPTION", "")),
        raw=raw,
    )


def list_events(calendar_url: str, auth: Auth) -> list[CalEvent]:
    """Every event of the collection (one REPORT), by start time."""
    headers = {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"}
    status, _, body = dav("REPORT", calendar_url, auth, CALENDAR_QUERY.encode(), headers)
    if status != 207:
        raise PeerUnavailable(f"REPORT {calendar_url} answered {status}")
    origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(calendar_url))
    events: list[CalEvent] = []
    for resp in ET.fromstring(body).iter(f"{{{DAV_NS}}}response"):
        href = resp.findtext(f"{{{DAV_NS}}}href") or ""
        etag = next((e.text or "" for e in resp.iter(f"{{{DAV_NS}}}getetag")), "")
        data = next((e.text or "" for e in resp.iter(f"{{{CALDAV_NS}}}calendar-data")), "")
        if not href or not data:
            continue
        event = parse_event(href, origin + href, etag, data.encode())
        if event is not None:
            events.append(event)
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(events, key=lambda e: e.start or far)


class CalendarClient:
    """What the admin's calendar app does to one collection (plain CalDAV requests)."""

    def __init__(self, url: str, auth: Auth) -> None:
        self.url, self.auth = url, auth

    def events(self) -> list[CalEvent]:
        """Every event, by start time."""
        return list_events(self.url, self.auth)

    def edit(self, ev: CalEvent, change: Any) -> None:
        """Change the master VEVENT, stamp it like a client, PUT with ``If-Match``.

        A 412 means the server copy changed meanwhile (syncd wrote it): read it again and
        redo the edit on the fresh copy, like a careful client.
        """
        from icalendar import Calendar

        for _attempt in range(3):
            cal = Calendar.from_ical(ev.raw)
            master = next(e for e in cal.walk("VEVENT") if "RECURRENCE-ID" not in e)
            change(master)
            now = datetime.now(UTC).replace(microsecond=0)
            sequence = int(master.get("SEQUENCE", 0)) + 1
            for name in ("DTSTAMP", "LAST-MODIFIED", "SEQUENCE"):
                master.pop(name, None)
            master.add("DTSTAMP", now)
            master.add("LAST-MODIFIED", now)
            master.add("SEQUENCE", sequence)
            cal.add_missing_timezones()
            headers = {"Content-Type": "text/calendar; charset=utf-8", "If-Match": ev.etag}
            status, _, body = dav("PUT", ev.url, self.auth, cal.to_ical(), headers)
            if status in (200, 201, 204):
                return
            if status != 412:
                raise PeerUnavailable(f"PUT {ev.href} answered {status}: {body[:200]!r}")
            fresh = next((e for e in self.events() if e.uid == ev.uid), None)
            if fresh is None:
                break
            ev = fresh
        raise PeerUnavailable(f"PUT {ev.href} kept failing its If-Match precondition")

    def drag(self, ev: CalEvent, start: datetime, end: datetime, tz: str) -> None:
        """Drag the event to [start, end), written as local times of ``tz`` (with TZID)."""
        zone = ZoneInfo(tz)

        def change(e: Any) -> None:
            for name in ("DTSTART", "DTEND", "DURATION"):
                e.pop(name, None)
            e.add("DTSTART", start.astimezone(zone))
            e.add("DTEND", end.astimezone(zone))

        self.edit(ev, change)

    def delete(self, ev: CalEvent) -> None:
        """Delete the event (with ``If-Match``, like a careful client)."""
        status, _, _ = dav("DELETE", ev.url, self.auth, headers={"If-Match": ev.etag})
        if status not in (200, 204, 404):
            raise PeerUnavailable(f"DELETE {ev.href} answered {status}")

    def add_note_line(self, ev: CalEvent, line: str) -> None:
        """Write ``line`` as the first line of the notes."""

        def change(e: Any) -> None:
            old = str(e.pop("DESCRIPTION", "") or "")
            e.add("DESCRIPTION", f"{line}\n{old}" if old else line)

        self.edit(ev, change)

    def set_title(self, ev: CalEvent, title: str) -> None:
        """Replace the title."""

        def change(e: Any) -> None:
            e.pop("SUMMARY", None)
            e.add("SUMMARY", title)

        self.edit(ev, change)
