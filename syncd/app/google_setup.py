"""``syncd auth google EMAIL``: the consent flow, then the admin's calendar row.

The adapter (:mod:`adapters.google.auth`) runs the OAuth flow and the first API calls; the
credentials file and the calendar row are written here, by the core's composition root.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session as Orm

from adapters.google import auth as google_auth
from adapters.google import setup as google_calls
from syncd.app.calendars import register_calendar
from syncd.config import Config
from syncd.errors import SyncdError
from syncd.store.models import CalendarRow
from syncd.store.repo import get_admin_row

if TYPE_CHECKING:
    from syncd.app.runtime import Runtime


def google_options(cfg: Config) -> Any:
    """The Google adapter's options from ``[google]`` and ``[sync]``."""
    from adapters.google.backend import GoogleOptions

    return GoogleOptions(
        api_endpoint=cfg.google.api_endpoint,
        token_uri=cfg.google.token_uri,
        state_dir=str(cfg.sync.state_dir),
        timeout=cfg.sync.timeout.total_seconds(),
    )


def authorize(rt: Runtime) -> int:
    """``syncd auth google EMAIL [--calendar-id ID] [--no-browser]``.

    Runs the installed-app OAuth flow (loopback redirect) and stores the refresh token in
    ``<state_dir>/google/<email>.json``. Without ``--calendar-id`` the narrow
    ``calendar.app.created`` scope is asked for and a dedicated "Bookings" calendar is
    created (or the one an earlier run created is reused); with it, ``calendar.events``
    for that calendar. Finally the calendar is registered for the admin.
    """
    args, cfg = rt.args, rt.config
    email = str(args.email).strip().lower()
    wanted_id = str(getattr(args, "calendar_id", "") or "")
    with rt.ctx.db.read() as orm:
        admin_tz = get_admin_row(orm, email).tz
    creds = google_auth.consent(
        cfg.google.client_secrets_file,
        wanted_id,
        open_browser=not getattr(args, "no_browser", False),
    )
    path = google_auth.default_credentials_path(str(cfg.sync.state_dir), email)
    google_auth.write_authorized_user(path, creds, cfg.google.token_uri)
    endpoint, timeout = cfg.google.api_endpoint, cfg.sync.timeout.total_seconds()
    created = False
    calendar_id = wanted_id or _previous_app_calendar(rt, email, str(path))
    if not calendar_id or not google_calls.calendar_exists(
        creds, endpoint, timeout, calendar_id, bool(wanted_id)
    ):
        if wanted_id:
            raise SyncdError(f"Google calendar {wanted_id} is not accessible to {email}.")
        calendar_id = google_calls.create_bookings_calendar(creds, endpoint, timeout, admin_tz)
        created = True
    settings: dict[str, Any] = {
        "calendar_id": calendar_id,
        "credentials_file": str(path),
        "admin_email": email,
    }
    if not wanted_id:
        settings["app_created"] = True
    row_id = register_calendar(rt.ctx, email, "google", settings, ("calendar_id",))
    data = {
        "calendar": row_id,
        "calendar_id": calendar_id,
        "credentials_file": str(path),
        "created": created,
    }
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2))
    else:
        made = "created the Bookings calendar" if created else "using calendar"
        print(
            f"Authorized {email}: {made} {calendar_id} (syncd calendar {row_id}); "
            f"token stored in {path}."
        )
    return 0


def _google_rows(orm: Orm, email: str) -> list[CalendarRow]:
    """The admin's Google calendar rows."""
    admin = get_admin_row(orm, email)
    return list(
        orm.scalars(
            select(CalendarRow).where(
                CalendarRow.admin_id == admin.id, CalendarRow.backend == "google"
            )
        )
    )


def _previous_app_calendar(rt: Runtime, email: str, credentials_file: str) -> str:
    """The calendar an earlier ``syncd auth google`` created for this admin, or ""."""
    with rt.ctx.db.read() as orm:
        for row in _google_rows(orm, email):
            s = row.settings or {}
            if s.get("app_created") and s.get("credentials_file") == credentials_file:
                return str(s.get("calendar_id") or "")
    return ""
