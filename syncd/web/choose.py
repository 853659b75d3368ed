"""The customer's "choose a new time" page: ``GET``/``POST /choose/{token}``.

GET never consumes the link (mail scanners open links); POST consumes it atomically with
the reschedule and its outbox rows (``services.consume_choice``). Both are rate-limited per
client IP. POST needs the double-submit CSRF token: the random ``syncd_csrf`` cookie
(HttpOnly, SameSite=Strict, Secure on https) repeated in a hidden field.

Status codes: 200 page, 400 no slot picked, 403 CSRF, 404 unknown link, 409 the slot is
no longer free (the slots are shown again), 410 used or expired link, 429 rate-limited,
503 database down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from syncd.domain.availability import free_slots
from syncd.domain.timefmt import human, local, parse_time
from syncd.errors import PeerUnavailable, Refused, SyncdError, UsageError
from syncd.services import booking as services
from syncd.services.booking import Choice, LinkInvalid
from syncd.web.queries import busy_intervals, other_live_sessions
from syncd.web.security import CSRF_COOKIE, CSRF_FIELD, csrf_ok, new_csrf_token

log = logging.getLogger(__name__)

HORIZON = timedelta(weeks=4)
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
    """The slots of one local day, shown as one fieldset."""

    heading: str
    slots: list[SlotView]


def group_slots(
    slots: list[tuple[datetime, datetime]], tz: str, picked: str | None = None
) -> list[DayView]:
    """Slots grouped by day in ``tz``, labelled like ``09:00–10:00 CET``."""
    days: dict[str, list[SlotView]] = {}
    for i, (start, end) in enumerate(slots):
        s, e = local(start, tz), local(end, tz)
        heading = f"{s:%A} {s.day} {s:%B %Y}"
        value = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        label = f"{s:%H:%M}–{e:%H:%M} {s.tzname()}"
        days.setdefault(heading, []).append(SlotView(value, label, f"slot-{i}", value == picked))
    return [DayView(h, v) for h, v in days.items()]


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
        """Free slots for the next four weeks; blocking (DB and calendar I/O)."""
        ctx = self.state.ctx
        now = ctx.clock()
        until = now + HORIZON
        others = other_live_sessions(ctx, choice.admin.email, choice.session.id)
        busy = busy_intervals(ctx, self.state.open_backend, choice.admin.email, now, until)
        return free_slots(choice.admin, now, until, others, busy, choice.session.id)

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
    ) -> Response:
        slots = await run_in_threadpool(self._slots, choice)
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
            days=group_slots(slots, tz, picked),
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
            return await self._page(request, token, choice, tz, note=note)
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
            raw = form.get("slot")
            if not isinstance(raw, str) or not raw:
                return await self._page(
                    request, token, choice, tz, 400, "Please pick one of the times below."
                )
            try:
                start = parse_time(raw)
            except UsageError:
                return await self._page(
                    request, token, choice, tz, 400, "Please pick one of the times below."
                )
            busy = await run_in_threadpool(
                busy_intervals,
                ctx,
                self.state.open_backend,
                choice.admin.email,
                ctx.clock(),
                ctx.clock() + HORIZON,
            )
            try:
                session = await run_in_threadpool(services.consume_choice, ctx, token, start, busy)
            except LinkInvalid:
                raise
            except Refused as err:
                return await self._page(request, token, choice, tz, 409, str(err), picked=None)
            return self._html(
                "confirmed.html",
                admin=choice.admin,
                session=session,
                when=human(session.start, tz),
                ends=f"{local(session.end, tz):%H:%M}",
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
