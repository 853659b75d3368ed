"""Delegated sign-in for ``syncd auth microsoft``: the browser loopback flow or a device code.

Both run through msal's public client of a :class:`~adapters.microsoft.auth.DelegatedTokens`,
so the refresh token lands in its serializable token cache; the core stores that cache
(adapters never persist).

- **Browser** (:func:`browser_sign_in`): msal's authorization-code flow with PKCE and a
  loopback redirect ``http://localhost:<port>`` served here for one request; the browser is
  :data:`OPEN_BROWSER` (``webbrowser.open``, which honours ``$BROWSER``; tests replace it).
  The address is also printed, for a browser on another screen.
- **Device code** (:func:`device_code_sign_in`): msal's device flow; the code and the URL are
  printed (the caller says where: ``syncd`` keeps stdout for ``--json``), then msal polls.
"""

from __future__ import annotations

import contextlib
import threading
import webbrowser
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from adapters.microsoft.auth import DELEGATED_SCOPES, TRANSIENT_ERRORS, DelegatedTokens, _call
from syncd.errors import ConfigError, Refused
from syncd.ports import Transient

# Tests replace this to play the person's browser.
OPEN_BROWSER: Callable[[str], Any] = webbrowser.open

# AADSTS codes that mean the app registration (or [microsoft]) is wrong, with what to do.
_CONFIG_HINTS = {
    "AADSTS700016": "check [microsoft] client_id and tenant",
    "AADSTS7000218": "allow public client flows in the app registration (Authentication)",
    "AADSTS50011": "add the redirect URI http://localhost to the app registration",
    "AADSTS50059": "set [microsoft] tenant to your tenant id or domain",
    "AADSTS50194": "set [microsoft] tenant to your tenant id or domain, or make the app "
    "multi-tenant",
}


def _sign_in_error(result: Mapping[str, Any], how: str) -> Exception:
    """The error of a failed sign-in, as one sentence with what to do."""
    error = str(result.get("error") or "")
    detail = str(result.get("error_description") or error or "no answer").split("\r\n")[0]
    if error in TRANSIENT_ERRORS:
        return Transient(f"Microsoft sign-in ({how}) failed for now: {detail}")
    for code, hint in _CONFIG_HINTS.items():
        if code in detail:
            return ConfigError(f"Microsoft sign-in ({how}) refused: {detail} — {hint}.")
    if error == "authorization_declined":
        return Refused(f"The Microsoft sign-in ({how}) was declined.")
    if error == "expired_token":
        return Refused(f"The device code expired before anyone signed in ({detail}); try again.")
    return Refused(f"Microsoft sign-in ({how}) failed: {detail}")


def _signed_in(result: Any, how: str) -> str:
    """The signed-in person's user name (UPN) from msal's token result."""
    if not isinstance(result, Mapping) or not result.get("access_token"):
        raise _sign_in_error(result if isinstance(result, Mapping) else {}, how)
    claims = result.get("id_token_claims") or {}
    name = str(claims.get("preferred_username") or claims.get("upn") or "")
    if not name:
        raise Refused(f"Microsoft sign-in ({how}) returned no user name (preferred_username).")
    return name


def device_code_sign_in(tokens: DelegatedTokens, say: Callable[[str], None]) -> str:
    """msal's device flow: ``say`` the code and URL, wait for the person; their UPN."""
    app = tokens.application()
    flow = _call("device code", lambda: app.initiate_device_flow(scopes=list(DELEGATED_SCOPES)))
    if not isinstance(flow, Mapping) or "user_code" not in flow:
        raise _sign_in_error(flow if isinstance(flow, Mapping) else {}, "device code")
    say(str(flow.get("message") or f"Open {flow['verification_uri']}, enter {flow['user_code']}"))
    result = _call("device code", lambda: app.acquire_token_by_device_flow(flow))
    return _signed_in(result, "device code")


class _Loopback(HTTPServer):
    """Receives the one redirect of the authorization-code flow on 127.0.0.1."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RedirectHandler)
        self.params: dict[str, str] | None = None
        self.done = threading.Event()


class _RedirectHandler(BaseHTTPRequestHandler):
    server: _Loopback

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        query = dict(parse_qsl(urlsplit(self.path).query))
        if "code" not in query and "error" not in query:
            self.send_error(404)  # a favicon, a stray request
            return
        ok = "code" in query
        page = (
            b"<html><body><p>syncd is signed in. You can close this tab.</p></body></html>"
            if ok
            else b"<html><body><p>The sign-in did not complete; see the terminal.</p></body></html>"
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)
        if self.server.params is None:
            self.server.params = query
            self.server.done.set()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: the redirect carries the authorization code."""


def browser_sign_in(
    tokens: DelegatedTokens, say: Callable[[str], None], login_hint: str, timeout: float = 300.0
) -> str:
    """The authorization-code flow with a loopback redirect; the signed-in person's UPN."""
    app = tokens.application()
    server = _Loopback()
    thread = threading.Thread(target=server.serve_forever, name="ms-loopback", daemon=True)
    thread.start()
    try:
        redirect = f"http://localhost:{server.server_address[1]}"
        flow = _call(
            "browser",
            lambda: app.initiate_auth_code_flow(
                list(DELEGATED_SCOPES), redirect_uri=redirect, login_hint=login_hint or None
            ),
        )
        say(f"Sign in to Microsoft in the browser; if none opens, visit {flow['auth_uri']}")
        with contextlib.suppress(Exception):  # no browser here: the address is printed
            OPEN_BROWSER(str(flow["auth_uri"]))
        if not server.done.wait(timeout):
            raise Refused(f"No sign-in came back within {int(timeout)} seconds; try again.")
    finally:
        server.shutdown()
        server.server_close()
    params = server.params or {}
    if "error" in params:
        raise _sign_in_error(params, "browser")
    result = _call("browser", lambda: app.acquire_token_by_auth_code_flow(flow, params))
    return _signed_in(result, "browser")
