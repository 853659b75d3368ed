"""``POST /push/{backend}/{calendar_id}``: servers' push notifications (see
:mod:`syncd.engine.channels`).

Each backend kind's request format is read by the :class:`syncd.ports.NotificationReader`
the composition root registered for it (Google: ``X-Goog-*`` headers and an empty body;
Microsoft Graph: a JSON body, and a ``validationToken`` handshake to echo). A genuine
notification marks the calendar due and calls ``on_notify`` (the daemon wakes and syncs it
at once); anything else is refused with 403 and changes nothing. The answer carries no
detail: whoever forges a notification learns nothing from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from syncd.engine import channels
from syncd.errors import SyncdError
from syncd.ports import NotificationReader
from syncd.store.context import Context

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class PushWiring:
    """What the composition root plugs in: a reader per backend kind, and who to wake."""

    readers: Mapping[str, NotificationReader] = field(default_factory=dict)
    on_notify: Callable[[int], None] = lambda _calendar_id: None


def routes(ctx: Context, wiring: PushWiring) -> list[BaseRoute]:
    """The push endpoint; ``wiring.on_notify(calendar_id)`` runs after a genuine notification."""

    async def notification(request: Request) -> Response:
        backend: str = request.path_params["backend"]
        calendar_id: int = request.path_params["calendar_id"]
        reader = wiring.readers.get(backend)
        body = await request.body()  # read it even when empty, so keep-alive stays sane
        if reader is None:
            return PlainTextResponse("not found\n", status_code=404)
        if len(body) > MAX_BODY:
            return PlainTextResponse("too large\n", status_code=413)
        reading = reader.read(dict(request.headers.items()), dict(request.query_params), body)
        if reading.echo is not None:  # a subscription's validation handshake
            return PlainTextResponse(reading.echo, status_code=200)
        try:
            genuine = await run_in_threadpool(
                channels.handle_notification, ctx, backend, calendar_id, reading
            )
        except SyncdError as err:  # the database: the server retries a 5xx later
            log.warning("push for calendar %s not handled: %s", calendar_id, err)
            return PlainTextResponse("unavailable\n", status_code=503)
        if not genuine:
            log.warning("push for calendar %s refused: channel or secret unknown", calendar_id)
            return PlainTextResponse("forbidden\n", status_code=403)
        wiring.on_notify(calendar_id)
        return Response(status_code=200)

    path = channels.PATH.replace("{calendar_id}", "{calendar_id:int}")
    return [Route(path, notification, methods=["POST"])]
