"""Google push channels, per calendar: open, renew, stop, and check what Google posts.

When ``[web] public_url`` is https, every Google calendar gets an ``events.watch`` channel
whose notifications go to ``<public_url>/push/google/<calendar row id>``. A notification
only says "something changed in this calendar": it marks the calendar due
(``next_sync_at = now``) and wakes the daemon; the change feed does the rest, and polling
stays the backstop for a lost notification or a dead channel.

The proof that a notification comes from Google is the channel token syncd chose: 32
random bytes, echoed in ``X-Goog-Channel-Token``. Only its SHA-256 is stored, in the
calendar row's ``push`` JSON (``channel_id``, ``resource_id``, ``token_hash``,
``expiration``), and a notification's token is hashed and compared in constant time.

This module composes the engine's database with the Google adapter, like
:mod:`syncd.app.backends`: adapters are imported inside the functions that call them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from syncd.config import Config
from syncd.errors import SyncdError
from syncd.ports import CalendarBackend
from syncd.store.context import Context
from syncd.store.models import CalendarRow

log = logging.getLogger("syncd.engine.channels")

PATH = "/push/google/{calendar_id}"
CHANNEL_TTL = timedelta(days=7)  # Google caps it; it says when in the watch answer
RENEW_BEFORE = timedelta(hours=1)
RETRY_AFTER_FAILURE = timedelta(minutes=10)
CLAIM_FOR = timedelta(minutes=2)  # one worker opens a channel, the others wait

OpenBackend = Callable[[str, dict[str, Any], Config], CalendarBackend]


def enabled(cfg: Config, force: bool = False) -> bool:
    """Push needs a public https address (Google refuses anything else); ``force`` for tests."""
    return force or cfg.web.public_url.lower().startswith("https://")


def address(cfg: Config, calendar_id: int) -> str:
    """Where Google posts the notifications of one calendar."""
    return cfg.web.public_url.rstrip("/") + PATH.format(calendar_id=calendar_id)


def token_hash(token: str) -> str:
    """SHA-256 (hex) of a channel token: what the database keeps instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _needs_channel(push: Mapping[str, Any] | None, now: datetime) -> bool:
    """No live channel (or one expiring within the hour), and nobody opening or backing off."""
    push = push or {}
    for key in ("claimed_until", "retry_at"):
        until = _when(push.get(key))
        if until is not None and until > now:
            return False
    expiration = _when(push.get("expiration"))
    return not push.get("channel_id") or expiration is None or expiration - now <= RENEW_BEFORE


def _default_open(backend: str, settings: dict[str, Any], cfg: Config) -> CalendarBackend:
    from syncd.app.backends import open_backend

    return open_backend(backend, settings, cfg)


def _claim(ctx: Context, now: datetime) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """Google calendars that need a channel, claimed for a while: (id, settings, push).

    The claim (``claimed_until`` in the push JSON) keeps other workers from opening a
    second channel meanwhile; the push JSON still names the channel being replaced.
    """
    watched = (
        CalendarRow.backend == "google",
        CalendarRow.busy_only.is_(False),
        CalendarRow.paused_reason.is_(None),
    )
    with ctx.db.read() as orm:  # the common case, every daemon tick: nothing to do
        pushes = orm.scalars(select(CalendarRow.push).where(*watched)).all()
        if not any(_needs_channel(push, now) for push in pushes):
            return []
    out = []
    with ctx.db.write() as orm:
        stmt = select(CalendarRow).where(*watched)
        if ctx.db.lock_clause():
            stmt = stmt.with_for_update(skip_locked=True)
        for row in orm.scalars(stmt):
            old = dict(row.push or {})
            if _needs_channel(old, now):
                claimed = {**old, "claimed_until": (now + CLAIM_FOR).isoformat()}
                row.push = claimed
                out.append((row.id, dict(row.settings), claimed))
    return out


def ensure_channels(
    ctx: Context,
    cfg: Config,
    now: datetime,
    *,
    force: bool = False,
    open_backend: OpenBackend = _default_open,
) -> list[int]:
    """Open a channel for each Google calendar without a live one; renew those expiring.

    Returns the calendars that got a new channel. A failure is logged and retried after
    :data:`RETRY_AFTER_FAILURE`; polling covers the calendar meanwhile. The replaced
    channel is stopped once the new one is stored.
    """
    if not enabled(cfg, force):
        return []
    opened: list[int] = []
    for calendar_id, settings, old in _claim(ctx, now):
        if _open_one(ctx, cfg, now, calendar_id, settings, old, open_backend):
            opened.append(calendar_id)
    return opened


def _open_one(
    ctx: Context,
    cfg: Config,
    now: datetime,
    calendar_id: int,
    settings: dict[str, Any],
    old: dict[str, Any],
    open_backend: OpenBackend,
) -> bool:
    from adapters.google.backend import GoogleBackend
    from adapters.google.push import stop, watch

    token = secrets.token_urlsafe(32)
    digest = token_hash(token)
    # Google posts a "sync" notification as soon as the channel exists, before watch()
    # returns its id: the pending token hash lets handle_notification accept it.
    _store(ctx, calendar_id, {**old, "pending_token_hash": digest})
    try:
        backend = open_backend("google", settings, cfg)
    except SyncdError as err:
        _failed(ctx, calendar_id, old, now, err)
        return False
    try:
        if not isinstance(backend, GoogleBackend):
            raise SyncdError(f"calendar {calendar_id}: push needs a Google backend")
        channel = watch(backend, address(cfg, calendar_id), token, int(CHANNEL_TTL.total_seconds()))
        expiration = channel["expiration"] or now + CHANNEL_TTL
        _store(
            ctx,
            calendar_id,
            {
                "channel_id": channel["channel_id"],
                "resource_id": channel["resource_id"],
                "token_hash": digest,
                "expiration": expiration.isoformat(),
            },
        )
        log.info("calendar %s: push channel open until %s", calendar_id, expiration)
        if old.get("channel_id") and old.get("resource_id"):
            try:
                stop(backend, str(old["channel_id"]), str(old["resource_id"]))
            except SyncdError as err:  # it expires on its own within the hour
                log.info("calendar %s: could not stop the old channel: %s", calendar_id, err)
        return True
    except Exception as err:  # a malformed answer too: polling covers the calendar
        _failed(ctx, calendar_id, old, now, err)
        return False
    finally:
        backend.close()


def _store(ctx: Context, calendar_id: int, push: dict[str, Any] | None) -> None:
    with ctx.db.write() as orm:
        row = orm.get(CalendarRow, calendar_id)
        if row is not None:
            row.push = push  # a new dict: SQLAlchemy sees the JSON change


def _failed(
    ctx: Context, calendar_id: int, old: dict[str, Any], now: datetime, err: Exception
) -> None:
    log.warning(
        "calendar %s: could not open a push channel (polling continues): %s", calendar_id, err
    )
    keep = {k: v for k, v in old.items() if k not in ("claimed_until", "pending_token_hash")}
    _store(
        ctx,
        calendar_id,
        {**keep, "retry_at": (now + RETRY_AFTER_FAILURE).isoformat(), "error": str(err)},
    )


def stop_channels(
    ctx: Context, cfg: Config, *, open_backend: OpenBackend = _default_open
) -> list[int]:
    """Stop every open channel (on shutdown); returns the calendars whose channel stopped.

    A channel that cannot be stopped is forgotten anyway: it expires on its own, and its
    notifications are then refused (its token hash is gone).
    """
    from adapters.google.backend import GoogleBackend
    from adapters.google.push import stop

    with ctx.db.read() as orm:
        rows = [
            (r.id, dict(r.settings), dict(r.push or {}))
            for r in orm.scalars(select(CalendarRow).where(CalendarRow.backend == "google"))
            if r.push
        ]
    stopped: list[int] = []
    for calendar_id, settings, push in rows:
        if push.get("channel_id") and push.get("resource_id"):
            try:
                backend = open_backend("google", settings, cfg)
                try:
                    if isinstance(backend, GoogleBackend):
                        stop(backend, str(push["channel_id"]), str(push["resource_id"]))
                        stopped.append(calendar_id)
                finally:
                    backend.close()
            except SyncdError as err:
                log.warning("calendar %s: could not stop its push channel: %s", calendar_id, err)
        _store(ctx, calendar_id, None)
    return stopped


def _same(a: str, b: Any) -> bool:
    return isinstance(b, str) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def handle_notification(ctx: Context, calendar_id: int, headers: Mapping[str, str]) -> bool:
    """Whether a notification is genuine; a genuine one marks the calendar due now.

    Genuine: ``X-Goog-Channel-Token`` hashes to the stored token hash and
    ``X-Goog-Channel-ID`` is the stored channel, or the token hashes to the hash of a
    channel being opened (Google's first "sync" message can beat the watch answer).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    token = lower.get("x-goog-channel-token", "")
    channel_id = lower.get("x-goog-channel-id", "")
    if not token or not channel_id:
        return False
    digest = token_hash(token)
    with ctx.db.read() as orm:  # a forged flood only reads
        row = orm.get(CalendarRow, calendar_id)
        push = dict(row.push or {}) if row is not None and row.backend == "google" else {}
    current = _same(digest, push.get("token_hash")) and _same(channel_id, push.get("channel_id"))
    if not current and not _same(digest, push.get("pending_token_hash")):
        return False
    mark_due(ctx, calendar_id)
    return True


def mark_due(ctx: Context, calendar_id: int) -> None:
    """Make the daemon's next pass sync this calendar (``next_sync_at = now``)."""
    with ctx.db.write() as orm:
        row = orm.get(CalendarRow, calendar_id)
        if row is not None:
            row.next_sync_at = ctx.clock()
