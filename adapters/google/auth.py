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
from typing import Any, Protocol

import httplib2
from google.oauth2 import credentials as _oauth2_credentials
from google.oauth2 import service_account as _service_account
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient.discovery import build

from syncd.errors import ConfigError, SyncdError

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


def default_credentials_path(state_dir: str, admin_email: str) -> Path:
    """``<state_dir>/google/<admin email>.json``: where ``syncd auth google`` stores tokens."""
    return Path(state_dir) / "google" / f"{admin_email.strip().lower()}.json"


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


def load_credentials(
    credentials_file: str, state_dir: str, token_uri: str, admin_email: str = ""
) -> Any:
    """The credentials of one calendar; ConfigError names the file and what to do."""
    if credentials_file:
        path = Path(credentials_file)
    elif admin_email:
        path = default_credentials_path(state_dir, admin_email)
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
        return credentials_from_info(info, token_uri, subject=admin_email)
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


# -- the consent flow and the first calls of ``syncd auth google`` ----------------------------


def consent(client_secrets_file: str, calendar_id: str, open_browser: bool) -> Any:
    """Run the installed-app OAuth flow (loopback redirect); the user's credentials.

    Without ``calendar_id`` the narrow ``calendar.app.created`` scope is asked for (syncd
    then creates its own "Bookings" calendar); with it, ``calendar.events``.
    """
    if not client_secrets_file or not Path(client_secrets_file).is_file():
        where = f"{client_secrets_file}: no such file" if client_secrets_file else "it is not set"
        raise ConfigError(
            f"[google] client_secrets_file: {where}. Download the OAuth client JSON of a "
            "'Desktop app' client from the Google Cloud console and name it there."
        )
    scopes = [SCOPE_EVENTS] if calendar_id else [SCOPE_APP_CREATED]
    flow = FLOW_FACTORY(client_secrets_file, scopes)
    # The flow prints the authorization URL; keep stdout for the result (--json).
    with contextlib.redirect_stdout(sys.stderr):
        creds = flow.run_local_server(port=0, open_browser=open_browser)
    if not getattr(creds, "refresh_token", None):
        raise SyncdError(
            "Google returned no refresh token; revoke syncd's access in your Google account "
            "settings and run 'syncd auth google' again."
        )
    return creds
