"""``POST /push/google/{calendar_id}``: Google's push notifications (see :mod:`syncd.engine.channels`).

Google posts an empty body with ``X-Goog-*`` headers. A notification whose channel token
checks out marks the calendar due and calls ``on_notify`` (the daemon wakes and syncs it
at once); anything else is refused with 403 and changes nothing. The answer carries no
detail: whoever forges a notification learns nothing from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from syncd.config import Config
from syncd.engine import channels as push
from syncd.errors import SyncdError
from syncd.store.context import Context

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


def routes(ctx: Context, cfg: Config, on_notify: Callable[[int], None]) -> list[BaseRoute]:
    """The push endpoint; ``on_notify(calendar_id)`` runs after a genuine notification."""

    async def notification(request: Request) -> Response:
        calendar_id: int = request.path_params["calendar_id"]
        body = await request.body()  # Google sends none; read it so keep-alive stays sane
        if len(body) > MAX_BODY:
            return PlainTextResponse("too large\n", status_code=413)
        headers = dict(request.headers.items())
        try:
            genuine = await run_in_threadpool(push.handle_notification, ctx, calendar_id, headers)
        except SyncdError as err:  # the database: Google retries a 5xx later
            log.warning("push for calendar %s not handled: %s", calendar_id, err)
            return PlainTextResponse("unavailable\n", status_code=503)
        if not genuine:
            log.warning("push for calendar %s refused: channel or token unknown", calendar_id)
            return PlainTextResponse("forbidden\n", status_code=403)
        on_notify(calendar_id)
        return Response(status_code=200)

    return [
        Route(
            push.PATH.replace("{calendar_id}", "{calendar_id:int}"),
            notification,
            methods=["POST"],
        )
    ]
