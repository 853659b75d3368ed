"""Google credentials: loading them for the backend, and ``syncd auth google`` to obtain them.

Two kinds of credentials files are accepted, both in Google's own JSON formats:

- an authorized-user file (``client_id``, ``client_secret``, ``refresh_token``,
  ``token_uri``), as :func:`authorize` writes it after the installed-app OAuth flow;
- a service-account key (``"type": "service_account"``), used with domain-wide delegation
  and the admin's email as the subject.

A calendar row's ``credentials_file`` may be empty: the file is then
``<[sync] state_dir>/google/<admin email>.json``, which is where :func:`authorize` stores it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httplib2
from google.oauth2 import credentials as _oauth2_credentials
from google.oauth2 import service_account as _service_account
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient.discovery import build
from sqlalchemy import select

from syncd.config import Config
from syncd.errors import ConfigError, SyncdError
from syncd.store.models import CalendarRow
from syncd.store.repo import get_admin_row

if TYPE_CHECKING:
    from syncd.app.cli import Runtime

# google-auth's classes are untyped; keep mypy --strict quiet at the boundary only.
UserCredentials: Any = _oauth2_credentials.Credentials
ServiceAccountCredentials: Any = _service_account.Credentials

SCOPE_CALENDAR = "https://www.googleapis.com/auth/calendar"
SCOPE_EVENTS = "https://www.googleapis.com/auth/calendar.events"
SCOPE_APP_CREATED = "https://www.googleapis.com/auth/calendar.app.created"
BOOKINGS_SUMMARY = "Bookings"


class OAuthFlow(Protocol):
    """What :func:`authorize` needs from google-auth-oauthlib's ``InstalledAppFlow``."""

    def run_local_server(self, *, port: int, open_browser: bool) -> Any:
        """Run the loopback-redirect flow; return the user's credentials."""
        ...


def _installed_app_flow(client_secrets_file: str, scopes: Sequence[str]) -> OAuthFlow:
    from google_auth_oauthlib.flow import InstalledAppFlow

    flow: OAuthFlow = InstalledAppFlow.from_client_secrets_file(
        client_secrets_file, scopes=list(scopes)
    )
    return flow


# Tests replace this to drive :func:`authorize` without a browser.
FLOW_FACTORY: Callable[[str, Sequence[str]], OAuthFlow] = _installed_app_flow


# -- loading ------------------------------------------------------------------------------


def default_credentials_path(cfg: Config, admin_email: str) -> Path:
    """``<state_dir>/google/<admin email>.json``: where ``syncd auth google`` stores tokens."""
    return Path(cfg.sync.state_dir) / "google" / f"{admin_email.strip().lower()}.json"


def credentials_from_info(
    info: Mapping[str, Any], default_token_uri: str, subject: str = ""
) -> Any:
    """google-auth credentials from an authorized-user or service-account JSON document.

    The authorized user's ``token_uri`` is honoured (``default_token_uri`` when absent):
    ``Credentials.from_authorized_user_info`` would ignore it, so the object is built here.
    A service account acts as ``subject`` (the admin) when given.
    """
    if info.get("type") == "service_account":
        creds = ServiceAccountCredentials.from_service_account_info(
            dict(info), scopes=[SCOPE_CALENDAR]
        )
        return creds.with_subject(subject) if subject else creds
    missing = [k for k in ("client_id", "client_secret", "refresh_token") if not info.get(k)]
    if missing:
        raise ConfigError(
            f"Google credentials lack {', '.join(missing)} "
            "(expected an authorized-user file from 'syncd auth google' or a service-account key)"
        )
    return UserCredentials(
        None,
        refresh_token=info["refresh_token"],
        client_id=info["client_id"],
        client_secret=info["client_secret"],
        token_uri=info.get("token_uri") or default_token_uri,
    )


def load_credentials(credentials_file: str, cfg: Config, admin_email: str = "") -> Any:
    """The credentials of one calendar; ConfigError names the file and what to do."""
    if credentials_file:
        path = Path(credentials_file)
    elif admin_email:
        path = default_credentials_path(cfg, admin_email)
    else:
        raise ConfigError(
            "A Google calendar needs credentials_file or admin_email in its settings "
            "(run 'syncd auth google EMAIL')."
        )
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(
            f"Google credentials {path}: no such file (run 'syncd auth google "
            f"{admin_email or 'EMAIL'}')."
        ) from err
    except OSError as err:
        raise ConfigError(f"Google credentials {path}: cannot read: {err.strerror}") from err
    except ValueError as err:
        raise ConfigError(f"Google credentials {path}: not JSON: {err}") from err
    if not isinstance(info, dict):
        raise ConfigError(f"Google credentials {path}: not a JSON object")
    try:
        return credentials_from_info(info, cfg.google.token_uri, subject=admin_email)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    except (KeyError, ValueError) as err:  # a malformed service-account key
        raise ConfigError(f"Google credentials {path}: {err}") from err


def authorized_http(credentials: Any, timeout: float) -> Any:
    """An httplib2 transport that adds (and refreshes) the bearer token, with a timeout."""
    return AuthorizedHttp(credentials, http=httplib2.Http(timeout=timeout))


def build_service(http: Any, api_endpoint: str) -> Any:
    """The Calendar v3 client on ``api_endpoint`` (bundled discovery document, no cache)."""
    return build(
        "calendar",
        "v3",
        http=http,
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": api_endpoint},
    )


# -- storing --------------------------------------------------------------------------------


def write_authorized_user(path: Path, credentials: Any, default_token_uri: str) -> None:
    """Store the refresh token as authorized-user JSON, mode 0600, in a 0700 directory.

    Written to a temporary file and renamed, so a crash never leaves half a token.
    """
    info = {
        "type": "authorized_user",
        "client_id": credentials.client_id,
        "client_secret": credentials.client_secret,
        "refresh_token": credentials.refresh_token,
        "token_uri": credentials.token_uri or default_token_uri,
    }
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=".token-", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(info, out, indent=2)
            out.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- syncd auth google ----------------------------------------------------------------------


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
        admin = get_admin_row(orm, email)
        admin_tz = admin.tz
    secrets_file = cfg.google.client_secrets_file
    if not secrets_file or not Path(secrets_file).is_file():
        where = f"{secrets_file}: no such file" if secrets_file else "it is not set"
        raise ConfigError(
            f"[google] client_secrets_file: {where}. Download the OAuth client JSON of a "
            "'Desktop app' client from the Google Cloud console and name it there."
        )
    scopes = [SCOPE_EVENTS] if wanted_id else [SCOPE_APP_CREATED]
    flow = FLOW_FACTORY(secrets_file, scopes)
    # The flow prints the authorization URL; keep stdout for the result (--json).
    with contextlib.redirect_stdout(sys.stderr):
        creds = flow.run_local_server(port=0, open_browser=not getattr(args, "no_browser", False))
    if not getattr(creds, "refresh_token", None):
        raise SyncdError(
            "Google returned no refresh token; revoke syncd's access in your Google account "
            "settings and run 'syncd auth google' again."
        )
    path = default_credentials_path(cfg, email)
    write_authorized_user(path, creds, cfg.google.token_uri)
    created = False
    calendar_id = wanted_id or _previous_app_calendar(rt, email, str(path))
    if not calendar_id or not _calendar_exists(creds, cfg, calendar_id, bool(wanted_id)):
        if wanted_id:
            raise SyncdError(f"Google calendar {wanted_id} is not accessible to {email}.")
        calendar_id = _create_bookings_calendar(creds, cfg, admin_tz)
        created = True
    settings: dict[str, Any] = {
        "calendar_id": calendar_id,
        "credentials_file": str(path),
        "admin_email": email,
    }
    if not wanted_id:
        settings["app_created"] = True
    row_id = _register(rt, email, settings)
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


def _google_rows(orm: Any, email: str) -> list[CalendarRow]:
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


def _backend(creds: Any, cfg: Config, calendar_id: str) -> Any:
    from adapters.google.backend import GoogleBackend

    return GoogleBackend(
        calendar_id, creds, cfg.google.api_endpoint, timeout=cfg.sync.timeout.total_seconds()
    )


def _calendar_exists(creds: Any, cfg: Config, calendar_id: str, named: bool) -> bool:
    """Whether the new token reaches ``calendar_id`` (calendars.get, or an events probe)."""
    from syncd.ports import NotFound

    backend = _backend(creds, cfg, calendar_id)
    try:
        if named:  # calendar.events cannot read the calendar resource: probe its events
            backend.call(
                "events.list",
                lambda s: s.events().list(calendarId=calendar_id, maxResults=1, fields="items(id)"),
            )
        else:
            backend.call("calendars.get", lambda s: s.calendars().get(calendarId=calendar_id))
    except NotFound:
        return False
    finally:
        backend.close()
    return True


def _create_bookings_calendar(creds: Any, cfg: Config, tz: str) -> str:
    """calendars.insert a "Bookings" calendar in the admin's zone; its id.

    Not retried: a lost answer would leave a second calendar behind.
    """
    backend = _backend(creds, cfg, "primary")
    try:
        res = backend.call(
            "calendars.insert",
            lambda s: s.calendars().insert(body={"summary": BOOKINGS_SUMMARY, "timeZone": tz}),
            retry=False,
        )
    finally:
        backend.close()
    return str(res["id"])


def _register(rt: Runtime, email: str, settings: dict[str, Any]) -> int:
    """Add the calendar row, or refresh the admin's row with that calendar id (unpausing it)."""
    with rt.ctx.db.write() as orm:
        admin = get_admin_row(orm, email)
        for row in _google_rows(orm, email):
            if (row.settings or {}).get("calendar_id") == settings["calendar_id"]:
                row.settings = {**(row.settings or {}), **settings}  # a new dict: JSON change
                row.paused_reason = None  # the credentials were just renewed
                return row.id
        new = CalendarRow(
            admin_id=admin.id,
            backend="google",
            settings=settings,
            busy_only=False,
            cursor_version=1,
        )
        orm.add(new)
        orm.flush()
        return new.id
