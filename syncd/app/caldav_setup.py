"""``syncd calendar add EMAIL caldav``: which calendar collection the URL leads to.

The URL may be the calendar itself, the account or just the server: discovery
(:mod:`adapters.caldav.discovery`) finds the calendar named ``--calendar`` (default
"Bookings") or creates it, and the command prints what it chose.
"""

from __future__ import annotations

from typing import Any

from syncd.app.runtime import Runtime
from syncd.config import read_secret
from syncd.errors import ConfigError, UsageError
from syncd.ports import AuthRevoked
from syncd.store.repo import get_admin_row

DEFAULT_NAME = "Bookings"


def choose_calendar(rt: Runtime, settings: dict[str, Any]) -> list[str]:
    """Point ``settings["url"]`` at the calendar collection to use; the lines to print.

    When the password cannot be read here (a systemd credential outside its unit), the URL
    is kept as given, unchecked.
    """
    a = rt.args
    with rt.ctx.db.read() as orm:
        get_admin_row(orm, a.email)  # an unknown admin: nothing is created on the server
    try:
        password = read_secret(
            settings.get("password_file", ""),
            settings.get("password_credential", ""),
            "the CalDAV password",
        )
    except ConfigError as err:
        return [f"Not checked ({err}): the URL is used as given."]
    from adapters.caldav.discovery import DiscoveryError, discover

    name = getattr(a, "calendar", None) or DEFAULT_NAME
    timeout = rt.config.sync.timeout.total_seconds()
    try:
        found = discover(settings["url"], settings.get("username", ""), password, name, timeout)
    except DiscoveryError as err:
        raise UsageError(str(err)) from err
    except AuthRevoked as err:
        raise UsageError(f"{settings['url']}: the server refused the username or password") from err
    settings["url"] = found.url
    shown = f'"{found.name}"' if found.name else "(no name)"
    if found.how == "given":
        return [f"Using the calendar {shown} at {found.url}."]
    verb = "Found" if found.how == "found" else "Created"
    others = [f'"{n}"' for n, u in found.calendars if u != found.url]
    lines = [f"{verb} the calendar {shown} at {found.url}."]
    if others:
        lines.append(f"Other calendars there: {', '.join(others)}.")
    return lines
