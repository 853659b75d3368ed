"""Push channels, per calendar, for every backend that can push: open, renew, stop, verify.

When ``[web] public_url`` is https, every calendar whose backend implements
:class:`syncd.ports.ChangeNotifier` gets a channel whose notifications go to
``<public_url>/push/<backend>/<calendar row id>``. A notification only says "something
changed in this calendar": it marks the calendar due (``next_sync_at = now``) and wakes the
daemon; the change feed does the rest, and polling stays the backstop for a lost
notification or a dead channel.

The proof that a notification comes from the server is the secret syncd chose for the
channel (Google's channel token, Graph's ``clientState``): 32 random bytes that the
server echoes. Only its SHA-256 is stored, in the calendar row's ``push`` JSON
(``channel_id``, ``resource_id``, ``token_hash``, ``expiration``, ``owner``), and a
notification's secret is hashed and compared in constant time.

Each channel belongs to the worker that opened it (``owner``): a worker that stops stops
only its own channels, and any worker renews a channel nearing its expiry (taking it
over), so a dead worker's channels live on.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from syncd.config import Config
from syncd.errors import SyncdError
from syncd.ports import BackendFactory, ChangeNotifier, Channel, PushReading
from syncd.store.context import Context
from syncd.store.models import CalendarRow

log = logging.getLogger(__name__)

PATH = "/push/{backend}/{calendar_id}"
CHANNEL_TTL = timedelta(days=7)  # servers cap it (Google a week, Graph under 3 days)
RENEW_BEFORE = timedelta(hours=1)
RETRY_AFTER_FAILURE = timedelta(minutes=10)
CLAIM_FOR = timedelta(minutes=2)  # one worker opens a channel, the others wait

Claimed = tuple[int, str, dict[str, Any], dict[str, Any]]  # id, backend, settings, push


def enabled(cfg: Config, force: bool = False) -> bool:
    """Push needs a public https address (servers refuse anything else); ``force`` for tests."""
    return force or cfg.web.public_url.lower().startswith("https://")


def address(cfg: Config, backend: str, calendar_id: int) -> str:
    """Where the server posts the notifications of one calendar."""
    path = PATH.format(backend=backend, calendar_id=calendar_id)
    return cfg.web.public_url.rstrip("/") + path


def token_hash(token: str) -> str:
    """SHA-256 (hex) of a channel secret: what the database keeps instead of the secret."""
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


def _claim(ctx: Context, now: datetime, kinds: Collection[str]) -> list[Claimed]:
    """Calendars of ``kinds`` that need a channel, claimed for a while.

    The claim (``claimed_until`` in the push JSON) keeps other workers from opening a
    second channel meanwhile; the push JSON still names the channel being replaced.
    """
    watched = (
        CalendarRow.backend.in_(list(kinds)),
        CalendarRow.busy_only.is_(False),
        CalendarRow.paused_reason.is_(None),
    )
    with ctx.db.read() as orm:  # the common case, every daemon tick: nothing to do
        pushes = orm.scalars(select(CalendarRow.push).where(*watched)).all()
        if not any(_needs_channel(push, now) for push in pushes):
            return []
    out: list[Claimed] = []
    with ctx.db.write() as orm:
        stmt = select(CalendarRow).where(*watched)
        if ctx.db.lock_clause():
            stmt = stmt.with_for_update(skip_locked=True)
        for row in orm.scalars(stmt):
            old = dict(row.push or {})
            if _needs_channel(old, now):
                claimed = {**old, "claimed_until": (now + CLAIM_FOR).isoformat()}
                row.push = claimed
                out.append((row.id, row.backend, dict(row.settings), claimed))
    return out


def ensure_channels(
    ctx: Context,
    cfg: Config,
    now: datetime,
    *,
    open_backend: BackendFactory,
    kinds: Collection[str] = ("google",),
    worker: str = "",
    force: bool = False,
) -> list[int]:
    """Open a channel for each calendar of ``kinds`` without a live one; renew those expiring.

    Returns the calendars that got a new or renewed channel. A failure is logged and
    retried after :data:`RETRY_AFTER_FAILURE`; polling covers the calendar meanwhile.
    """
    if not enabled(cfg, force):
        return []
    opened: list[int] = []
    for calendar_id, backend_name, settings, old in _claim(ctx, now, kinds):
        if _open_one(
            ctx, cfg, now, worker, (calendar_id, backend_name, settings, old), open_backend
        ):
            opened.append(calendar_id)
    return opened


def _channel_of(push: Mapping[str, Any]) -> Channel | None:
    if not push.get("channel_id"):
        return None
    return Channel(
        channel_id=str(push["channel_id"]),
        resource_id=str(push.get("resource_id") or ""),
        expiration=_when(push.get("expiration")),
    )


def _open_one(
    ctx: Context,
    cfg: Config,
    now: datetime,
    worker: str,
    claimed: Claimed,
    open_backend: BackendFactory,
) -> bool:
    calendar_id, backend_name, settings, old = claimed
    token = secrets.token_urlsafe(32)
    digest = token_hash(token)
    # A server may post a first notification as soon as the channel exists, before the
    # open call returns its id: the pending hash lets handle_notification accept it.
    _store(ctx, calendar_id, {**old, "pending_token_hash": digest})
    try:
        backend = open_backend(backend_name, settings)
    except SyncdError as err:
        _failed(ctx, calendar_id, old, now, err)
        return False
    try:
        if not isinstance(backend, ChangeNotifier):
            raise SyncdError(f"calendar {calendar_id}: the {backend_name} backend cannot push")
        where = address(cfg, backend_name, calendar_id)
        previous = _channel_of(old)
        channel = (
            backend.renew_channel(previous, where, token, CHANNEL_TTL)
            if previous is not None
            else backend.open_channel(where, token, CHANNEL_TTL)
        )
        expiration = channel.expiration or now + CHANNEL_TTL
        _store(
            ctx,
            calendar_id,
            {
                "channel_id": channel.channel_id,
                "resource_id": channel.resource_id,
                "token_hash": digest,
                "expiration": expiration.isoformat(),
                "owner": worker,
            },
        )
        log.info("calendar %s: push channel open until %s", calendar_id, expiration)
        if previous is not None and previous.channel_id != channel.channel_id:
            try:
                backend.stop_channel(previous)
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


def stop_channels(ctx: Context, *, open_backend: BackendFactory, worker: str = "") -> list[int]:
    """Stop the channels ``worker`` owns (on its shutdown); the calendars whose channel stopped.

    Other workers' channels are left alone. A channel that cannot be stopped is forgotten
    anyway: it expires on its own, and its notifications are then refused (its hash is gone).
    """
    with ctx.db.read() as orm:
        rows = [
            (r.id, r.backend, dict(r.settings), dict(r.push or {}))
            for r in orm.scalars(select(CalendarRow).where(CalendarRow.push.is_not(None)))
            if r.push and (r.push.get("owner") or "") == worker
        ]
    stopped: list[int] = []
    for calendar_id, backend_name, settings, push in rows:
        channel = _channel_of(push)
        if channel is not None:
            try:
                backend = open_backend(backend_name, settings)
                try:
                    if isinstance(backend, ChangeNotifier):
                        backend.stop_channel(channel)
                        stopped.append(calendar_id)
                finally:
                    backend.close()
            except SyncdError as err:
                log.warning("calendar %s: could not stop its push channel: %s", calendar_id, err)
        _store(ctx, calendar_id, None)
    return stopped


def _same(a: str, b: Any) -> bool:
    return isinstance(b, str) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def handle_notification(
    ctx: Context, backend_name: str, calendar_id: int, reading: PushReading
) -> bool:
    """Whether the request holds a genuine notification; a genuine one marks the calendar due.

    Genuine: the secret hashes to the stored hash and the channel id is the stored one,
    or the secret hashes to the hash of a channel being opened (a first message can beat
    the open call's answer). A lifecycle notification that says the channel is gone or
    needs renewing also makes the next tick reopen it.
    """
    if not reading.notifications:
        return False
    with ctx.db.read() as orm:  # a forged flood only reads
        row = orm.get(CalendarRow, calendar_id)
        push = dict(row.push or {}) if row is not None and row.backend == backend_name else {}
    genuine = []
    for note in reading.notifications:
        digest = token_hash(note.secret)
        current = _same(digest, push.get("token_hash")) and _same(
            note.channel_id, push.get("channel_id")
        )
        if current or _same(digest, push.get("pending_token_hash")):
            genuine.append(note)
    if not genuine:
        return False
    if any(n.lifecycle for n in genuine):
        _expire_channel(ctx, calendar_id)
    mark_due(ctx, calendar_id)
    return True


def _expire_channel(ctx: Context, calendar_id: int) -> None:
    """Make the next tick renew (or reopen) this calendar's channel."""
    with ctx.db.write() as orm:
        row = orm.get(CalendarRow, calendar_id)
        if row is not None and row.push:
            row.push = {**row.push, "expiration": ctx.clock().isoformat()}


def mark_due(ctx: Context, calendar_id: int) -> None:
    """Make the daemon's next pass sync this calendar (``next_sync_at = now``)."""
    with ctx.db.write() as orm:
        row = orm.get(CalendarRow, calendar_id)
        if row is not None:
            row.next_sync_at = ctx.clock()
