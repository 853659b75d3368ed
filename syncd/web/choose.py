"""The customer's "choose a new time" page: ``GET``/``POST /choose/{token}``.

GET never consumes the link (mail scanners open links); POST consumes it atomically with
the reschedule and its outbox rows (``services.consume_choice``). Both are rate-limited per
client IP. POST needs the double-submit CSRF token: the random ``syncd_csrf`` cookie
(HttpOnly, SameSite=Strict, Secure on https) repeated in a hidden field.

The page shows one week at a time (days as rows, the week of the earliest free slot first,
previous/next week links: ``?week=YYYY-MM-DD&tz=ZONE``, no JavaScript), each slot as long as
the session, a slot that ends the next day saying so.

Status codes: 200 page, 400 no slot picked, 403 CSRF, 404 unknown link, 409 the slot is
no longer free (the slots are shown again), 410 used or expired link, 429 rate-limited,
503 database down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any
from urllib.parse import urlencode
from zoneinfo import available_timezones

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from syncd.domain.timefmt import human, local, parse_time
from syncd.errors import PeerUnavailable, Refused, SyncdError, UsageError
from syncd.services import choice as services
from syncd.services.choice import Choice, LinkInvalid, offered_slots
from syncd.web.queries import busy_intervals, other_live_sessions
from syncd.web.security import CSRF_COOKIE, CSRF_FIELD, csrf_ok, new_csrf_token

log = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 128
LINK_STATUS = {"unknown": 404, "used": 410, "expired": 410}
LINK_TITLE = {
    "unknown": "This link is not valid",
    "used": "This link was already used",
    "expired": "This link has expired",
}


@cache
def zone_names() -> tuple[str, ...]:
    """The IANA zones offered in the picker (no legacy ``Etc/``/``posix/`` aliases)."""
    skip = ("Etc/", "posix/", "right/", "SystemV/")
    names = {n for n in available_timezones() if "/" in n and not n.startswith(skip)}
    return tuple(sorted(names | {"UTC"}))


@dataclass(frozen=True)
class SlotView:
    """One radio button: the UTC start as the value, the local times as the label."""

    value: str
    label: str
    dom_id: str
    checked: bool


@dataclass(frozen=True)
class DayView:
    """The slots of one local day, shown as one row (a fieldset)."""

    heading: str
    slots: list[SlotView]


@dataclass(frozen=True)
class WeekView:
    """One week of slots; ``prev``/``next`` are the Mondays of the neighbouring weeks that
    have free slots (None when there are none)."""

    heading: str
    monday: str
    days: list[DayView]
    prev: str | None
    next: str | None
    total: int


def slot_label(start: datetime, end: datetime, tz: str) -> str:
    """``09:00 – 10:00``, or ``23:30 – 00:30 next day`` for a slot that crosses midnight."""
    s, e = local(start, tz), local(end, tz)
    days = (e.date() - s.date()).days
    after = "" if days == 0 else " next day" if days == 1 else f" (+{days} days)"
    return f"{s:%H:%M} – {e:%H:%M}{after}"


def _monday(d: date) -> date:
    return d - timedelta(days=d.weekday())


def week_view(
    slots: list[tuple[datetime, datetime]], tz: str, week: str | None, picked: str | None = None
) -> WeekView:
    """The week of ``week`` (any day of it, ISO), else of the earliest slot, in ``tz``."""
    by_week: dict[date, list[tuple[datetime, datetime]]] = {}
    for start, end in slots:
        by_week.setdefault(_monday(local(start, tz).date()), []).append((start, end))
    weeks = sorted(by_week)
    monday: date | None = None
    if week:
        try:
            monday = _monday(date.fromisoformat(week[:10]))
        except ValueError:
            monday = None
    if monday is None:
        monday = weeks[0] if weeks else _monday(datetime.now().date())
    days: dict[date, list[SlotView]] = {}
    for i, (start, end) in enumerate(by_week.get(monday, [])):
        value = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        view = SlotView(value, slot_label(start, end, tz), f"slot-{i}", value == picked)
        days.setdefault(local(start, tz).date(), []).append(view)
    sunday = monday + timedelta(days=6)
    heading = f"{monday:%a} {monday.day} {monday:%b} – {sunday:%a} {sunday.day} {sunday:%b %Y}"
    return WeekView(
        heading=heading,
        monday=monday.isoformat(),
        days=[DayView(f"{d:%A} {d.day} {d:%B}", v) for d, v in sorted(days.items())],
        prev=next((w.isoformat() for w in reversed(weeks) if w < monday), None),
        next=next((w.isoformat() for w in weeks if w > monday), None),
        total=len(slots),
    )


class ChoosePage:
    """The handlers of ``/choose/{token}``; shared state lives in ``app.state.web``."""

    def __init__(self, state: Any) -> None:
        self.state = state

    # --- helpers -----------------------------------------------------------------------

    def _html(self, name: str, status: int = 200, **data: Any) -> HTMLResponse:
        return HTMLResponse(self.state.render(name, **data), status_code=status)

    def _error(self, status: int, title: str, message: str) -> HTMLResponse:
        return self._html("error.html", status, title=title, message=message)

    def _limited(self, request: Request) -> HTMLResponse | None:
        key = request.client.host if request.client else "unknown"
        wait = self.state.limiter.hit(key)
        if wait is None:
            return None
        resp = self._error(
            429,
            "Too many requests",
            "Too many requests from your network. Please wait a minute and try again.",
        )
        resp.headers["Retry-After"] = str(int(wait) + 1)
        return resp

    def _link_error(self, err: LinkInvalid) -> HTMLResponse:
        return self._error(
            LINK_STATUS.get(err.reason, 404), LINK_TITLE.get(err.reason, "Link error"), str(err)
        )

    def _tz(self, choice: Choice, asked: Any) -> tuple[str, str | None]:
        """The zone to show and a note when the asked one was not understood."""
        default = choice.session.customer.tz
        if not isinstance(asked, str) or not asked:
            return default, None
        if asked in zone_names() or asked in (default, choice.admin.tz):
            return asked, None
        return default, f'"{asked[:60]}" is not a time zone we know; showing {default}.'

    def _slots(self, choice: Choice) -> list[tuple[datetime, datetime]]:
        """The slots the link offers; blocking (DB and calendar I/O)."""
        ctx = self.state.ctx
        now = ctx.clock()
        others = other_live_sessions(ctx, choice.admin.email, choice.session.id)
        busy = busy_intervals(
            ctx, self.state.open_backend, choice.admin.email, now, choice.offer_until
        )
        return offered_slots(choice, now, others, busy)

    async def _page(
        self,
        request: Request,
        token: str,
        choice: Choice,
        tz: str,
        status: int = 200,
        message: str | None = None,
        note: str | None = None,
        picked: str | None = None,
        week: str | None = None,
    ) -> Response:
        slots = await run_in_threadpool(self._slots, choice)
        view = week_view(slots, tz, week, picked)

        def week_link(monday: str | None) -> str | None:
            return f"/choose/{token}?{urlencode({'week': monday, 'tz': tz})}" if monday else None

        csrf = request.cookies.get(CSRF_COOKIE) or ""
        if len(csrf) < 32 or len(csrf) > 128:
            csrf = new_csrf_token()
        resp = self._html(
            "choose.html",
            status,
            admin=choice.admin,
            session=choice.session,
            current=human(choice.session.start, tz),
            expires=human(choice.expires_at, tz),
            week=view,
            prev_link=week_link(view.prev),
            next_link=week_link(view.next),
            minutes=int((choice.session.end - choice.session.start).total_seconds() // 60),
            tz=tz,
            zones=zone_names(),
            csrf=csrf,
            csrf_field=CSRF_FIELD,
            action=f"/choose/{token}",
            message=message,
            note=note,
        )
        resp.set_cookie(
            CSRF_COOKIE,
            csrf,
            path="/choose",
            httponly=True,
            samesite="strict",
            secure=self.state.secure_cookies,
        )
        return resp

    # --- routes ------------------------------------------------------------------------

    async def get(self, request: Request) -> Response:
        """Show the free slots; never consumes the link."""
        limited = self._limited(request)
        if limited is not None:
            return limited
        token = str(request.path_params["token"])
        try:
            if len(token) > MAX_TOKEN_LENGTH:
                raise LinkInvalid("unknown", "This link is not valid. Please check the address.")
            choice = await run_in_threadpool(services.lookup_choice, self.state.ctx, token)
            tz, note = self._tz(choice, request.query_params.get("tz"))
            week = request.query_params.get("week")
            return await self._page(request, token, choice, tz, note=note, week=week)
        except LinkInvalid as err:
            return self._link_error(err)
        except SyncdError as err:
            return self._unavailable(err)

    async def post(self, request: Request) -> Response:
        """Consume the link and book the picked slot; 409 re-shows the slots."""
        limited = self._limited(request)
        if limited is not None:
            return limited
        token = str(request.path_params["token"])
        form = await request.form()
        if not csrf_ok(request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)):
            return self._error(
                403,
                "Please try again",
                "This form has expired or was not sent from this page. Open your link "
                "again and pick a time.",
            )
        ctx = self.state.ctx
        try:
            if len(token) > MAX_TOKEN_LENGTH:
                raise LinkInvalid("unknown", "This link is not valid. Please check the address.")
            choice = await run_in_threadpool(services.lookup_choice, ctx, token)
            tz, _ = self._tz(choice, form.get("tz"))
            week_field = form.get("week")
            week = week_field if isinstance(week_field, str) else None
            raw = form.get("slot")
            if not isinstance(raw, str) or not raw:
                return await self._page(
                    request, token, choice, tz, 400, "Please pick one of the times below.",
                    week=week,
                )  # fmt: skip
            try:
                start = parse_time(raw)
            except UsageError:
                return await self._page(
                    request, token, choice, tz, 400, "Please pick one of the times below.",
                    week=week,
                )  # fmt: skip
            busy = await run_in_threadpool(
                busy_intervals,
                ctx,
                self.state.open_backend,
                choice.admin.email,
                ctx.clock(),
                choice.offer_until,
            )
            try:
                session = await run_in_threadpool(services.consume_choice, ctx, token, start, busy)
            except LinkInvalid:
                raise
            except Refused as err:
                return await self._page(request, token, choice, tz, 409, str(err), week=week)
            return self._html(
                "confirmed.html",
                admin=choice.admin,
                session=session,
                when=human(session.start, tz),
                ends=slot_label(session.start, session.end, tz).split(" – ", 1)[1],
                tz=tz,
            )
        except LinkInvalid as err:
            return self._link_error(err)
        except SyncdError as err:
            return self._unavailable(err)

    def _unavailable(self, err: SyncdError) -> HTMLResponse:
        if not isinstance(err, PeerUnavailable):
            log.error("choose page: %s", err)
        return self._error(
            503,
            "Please try again shortly",
            "We could not reach our booking system just now. Your link still works; please "
            "try again in a few minutes.",
        )
