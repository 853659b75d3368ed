"""Microsoft Graph in the composition root: opening a calendar's backend, and its commands.

A calendar row's settings: ``mailbox`` (the UPN), ``calendar_id`` (empty: the default
calendar), ``admin_email``, and ``auth``: ``app`` (client credentials from ``[microsoft]``) or
``delegated`` (msal's token cache in ``token_cache_file``, by default
``<state_dir>/microsoft/<admin email>.json``, written 0600 by ``syncd auth microsoft``).
The adapter never writes files: when msal refreshes the delegated cache, the new text comes
back here and is stored.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.microsoft.auth import AppTokens, DelegatedTokens, TokenSource
from adapters.microsoft.backend import GraphBackend
from syncd.app.calendars import register_calendar
from syncd.config import Config, read_secret
from syncd.errors import ConfigError, UsageError
from syncd.store.repo import get_admin_row

if TYPE_CHECKING:
    from syncd.app.runtime import Runtime


def cache_path(cfg: Config, admin_email: str) -> Path:
    """``<state_dir>/microsoft/<admin email>.json``: where the delegated token cache lives."""
    return Path(cfg.sync.state_dir) / "microsoft" / f"{admin_email.strip().lower()}.json"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` mode 0600 in a 0700 directory, atomically (temporary file + rename)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=".cache-", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def client_secret(cfg: Config) -> str:
    """The app's client secret from ``[microsoft] client_secret_file`` or ``_credential``."""
    ms = cfg.microsoft
    return read_secret(
        ms.client_secret_file, ms.client_secret_credential, "[microsoft] client secret"
    )


def delegated_tokens(cfg: Config, path: Path, username: str, cache_text: str) -> DelegatedTokens:
    """The delegated token source on the cache at ``path`` (refreshes are written back)."""
    ms = cfg.microsoft
    return DelegatedTokens(
        ms.client_id,
        ms.tenant,
        ms.authority_endpoint,
        cache_text,
        username,
        cfg.sync.timeout.total_seconds(),
        on_cache_change=lambda text: write_private(path, text),
    )


def tokens_for(settings: dict[str, Any], cfg: Config) -> TokenSource:
    """The token source a calendar row's settings call for."""
    ms = cfg.microsoft
    timeout = cfg.sync.timeout.total_seconds()
    if settings.get("auth") == "delegated":
        email = str(settings.get("admin_email") or "")
        path = (
            Path(str(settings.get("token_cache_file") or ""))
            if settings.get("token_cache_file")
            else cache_path(cfg, email)
        )
        try:
            text = path.read_text()
        except FileNotFoundError as err:
            raise ConfigError(
                f"Microsoft sign-in {path}: no such file (run 'syncd auth microsoft {email}')."
            ) from err
        except OSError as err:
            raise ConfigError(f"Microsoft sign-in {path}: cannot read: {err.strerror}") from err
        return delegated_tokens(cfg, path, str(settings.get("mailbox") or ""), text)
    return AppTokens(ms.client_id, ms.tenant, client_secret(cfg), ms.authority_endpoint, timeout)


def open_graph_backend(settings: dict[str, Any], cfg: Config) -> GraphBackend:
    """The backend of a ``microsoft`` calendar row."""
    return GraphBackend(
        str(settings.get("mailbox") or ""),
        str(settings.get("calendar_id") or ""),
        tokens_for(settings, cfg),
        cfg.microsoft.graph_endpoint,
        timeout=cfg.sync.timeout.total_seconds(),
    )


# -- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Added:
    """What ``calendar add … microsoft`` or ``auth microsoft`` did."""

    row_id: int
    calendar_id: str
    created: bool


def attach(rt: Runtime, email: str, settings: dict[str, Any], wanted_id: str) -> Added:
    """Check the calendar (or find/create "Bookings"), then register it for the admin."""
    from adapters.microsoft import setup as calls

    backend = GraphBackend(
        str(settings["mailbox"]),
        "",
        tokens_for(settings, rt.config),
        rt.config.microsoft.graph_endpoint,
        timeout=rt.config.sync.timeout.total_seconds(),
    )
    try:
        calendar_id, created = calls.bookings_calendar(backend, wanted_id)
    finally:
        backend.close()
    row_id = register_calendar(
        rt.ctx,
        email,
        "microsoft",
        {**settings, "calendar_id": calendar_id},
        ("mailbox", "calendar_id"),
    )
    return Added(row_id, calendar_id, created)


def print_added(rt: Runtime, email: str, added: Added, extra: dict[str, Any]) -> None:
    """The result line (or JSON) of ``calendar add``/``auth microsoft``."""
    data = {"calendar": added.row_id, "calendar_id": added.calendar_id, "created": added.created}
    if getattr(rt.args, "json", False):
        print(json.dumps({**data, **extra}, indent=2))
        return
    made = "created the Bookings calendar" if added.created else "using calendar"
    print(f"{email}: {made} {added.calendar_id[:24]}… (syncd calendar {added.row_id}).")


def calendar_add(rt: Runtime) -> int:
    """``syncd calendar add EMAIL microsoft --mailbox UPN [--calendar-id ID]`` (app-only)."""
    args = rt.args
    email = str(args.email).strip().lower()
    mailbox = str(getattr(args, "mailbox", "") or "").strip()
    if not mailbox:
        raise UsageError("calendar add … microsoft needs --mailbox UPN (the user's mailbox).")
    with rt.ctx.db.read() as orm:
        get_admin_row(orm, email)
    settings = {"mailbox": mailbox, "admin_email": email, "auth": "app"}
    added = attach(rt, email, settings, str(getattr(args, "calendar_id", "") or ""))
    print_added(rt, email, added, {"mailbox": mailbox})
    return 0


def authorize(rt: Runtime) -> int:
    """``syncd auth microsoft EMAIL [--device-code] [--calendar-id ID]`` (delegated).

    Signs the person in (browser loopback, or a device code printed on stderr), stores msal's
    token cache 0600 in :func:`cache_path`, then registers the calendar (``--calendar-id``,
    or "Bookings", used or created) for the admin.
    """
    from adapters.microsoft import consent

    args, cfg = rt.args, rt.config
    email = str(args.email).strip().lower()
    with rt.ctx.db.read() as orm:
        get_admin_row(orm, email)
    path = cache_path(cfg, email)
    tokens = delegated_tokens(cfg, path, "", "")

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if getattr(args, "device_code", False):
        upn = consent.device_code_sign_in(tokens, say)
    else:
        upn = consent.browser_sign_in(tokens, say, login_hint="")
    write_private(path, tokens.serialized())
    settings = {
        "mailbox": upn,
        "admin_email": email,
        "auth": "delegated",
        "token_cache_file": str(path),
    }
    added = attach(rt, email, settings, str(getattr(args, "calendar_id", "") or ""))
    print_added(rt, email, added, {"mailbox": upn, "token_cache_file": str(path)})
    return 0


def doctor_checks(calendar: int, settings: dict[str, Any], cfg: Config) -> list[dict[str, Any]]:
    """``syncd doctor`` on a Microsoft calendar: the token, then the calendar (one line each)."""
    mailbox = str(settings.get("mailbox") or "?")
    kind = "delegated" if settings.get("auth") == "delegated" else "app-only"
    token_check = f"calendar {calendar} token"
    try:
        source = tokens_for(settings, cfg)
        source.drop()  # not msal's cached access token: the credentials themselves
        source.token()
    except Exception as err:  # noqa: BLE001 - doctor reports every failure as a line
        return [{"check": token_check, "ok": False, "detail": str(err)}]
    checks = [{"check": token_check, "ok": True, "detail": f"Microsoft {kind} token for {mailbox}"}]
    try:
        backend = open_graph_backend(settings, cfg)
        try:
            doc = backend.transport.json("calendars.get", "GET", backend.cal_path)
        finally:
            backend.close()
        name = str(doc.get("name") or settings.get("calendar_id") or "the default calendar")
        checks.append(
            {"check": f"calendar {calendar}", "ok": True, "detail": f"{name} in {mailbox}"}
        )
    except Exception as err:  # noqa: BLE001
        checks.append({"check": f"calendar {calendar}", "ok": False, "detail": str(err)})
    return checks
