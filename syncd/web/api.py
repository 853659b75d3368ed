"""The REST API for booking platforms, under ``/api/v1/``.

Same services, rules, JSON (``syncd.services.views.session_json``) and error sentences as the CLI.
Errors are ``{"error": "<sentence>"}`` with a status per kind of :class:`SyncdError`:

====================  ======  ===========================================================
kind                  status  when
====================  ======  ===========================================================
UsageError            400     malformed body or query, a time without an offset, bad zone
(no/wrong token)      401     ``Authorization: Bearer <token>`` missing or wrong
(not the admin)       403     ``"as": "admin"`` with the booking platform's token
NotFoundError         404     unknown session or admin
Refused               409     a rule refused: a cut-off, an overlap, a canceled session
InvalidValue          422     a value that can never be right: a line break in a name, a
                              reason or a message, ``notanemail``, an empty name, a
                              session longer than 24 hours
PeerUnavailable       503     the database did not answer; also: the API is disabled
====================  ======  ===========================================================

Two tokens: ``[web] api_token_file`` is the booking platform's; it acts as the customer
(or ``api`` when it books) and is bound by the cut-offs and the admin's availability.
Only ``[web] admin_token_file`` may act as the admin (``"as": "admin"``, the default with
that token), which bypasses both.

409 rather than 422 for Refused: the request is well-formed, it conflicts with the current
state of the session or of the admin's calendar.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from syncd.domain.model import Actor, Customer, Session
from syncd.domain.timefmt import parse_time
from syncd.domain.validate import InvalidValue
from syncd.errors import (
    ConfigError,
    NotFoundError,
    PeerUnavailable,
    Refused,
    SyncdError,
    UsageError,
)
from syncd.services import booking as services
from syncd.services.views import session_json
from syncd.web.openapi import build_openapi
from syncd.web.security import bearer_ok

log = logging.getLogger(__name__)

API_DISABLED = "The REST API is disabled: set [web] api_token_file (or admin_token_file)"
NOT_ADMIN = "This token cannot act as the admin: only the admin token ([web] admin_token_file) may."
MAX_DURATION_MINUTES = 24 * 60
MAX_BODY = 64 * 1024
ACTORS = {"customer": Actor.CUSTOMER, "admin": Actor.ADMIN}
ADMIN = "admin"
PLATFORM = "platform"

Handler = Callable[[Request], Awaitable[Response]]


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": message}`` with ``status``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def status_of(err: SyncdError) -> int:
    """The HTTP status of one kind of error (see the module docstring)."""
    if isinstance(err, InvalidValue):
        return 422
    if isinstance(err, UsageError):
        return 400
    if isinstance(err, NotFoundError):
        return 404
    if isinstance(err, Refused):
        return 409
    if isinstance(err, NotAdmin):
        return 403
    if isinstance(err, PeerUnavailable | ConfigError):
        return 503
    return 500


def _authorized(handler: Handler) -> Handler:
    """Bearer auth, then the error mapping around ``handler``."""

    async def wrapped(request: Request) -> Response:
        cfg = request.app.state.web.cfg
        try:
            platform, admin = cfg.web.api_token(), cfg.web.admin_token()
        except ConfigError as err:
            log.error("REST API: %s", err)
            return error(503, f"{API_DISABLED} ({err})")
        if not platform and not admin:
            return error(503, API_DISABLED)
        header = request.headers.get("authorization")
        if bearer_ok(header, admin):
            request.state.role = ADMIN
        elif bearer_ok(header, platform):
            request.state.role = PLATFORM
        else:
            return error(
                401,
                "Missing or wrong API token: send 'Authorization: Bearer <token>'.",
                {"WWW-Authenticate": 'Bearer realm="syncd"'},
            )
        try:
            return await handler(request)
        except SyncdError as err:
            return error(status_of(err), str(err))
        except OverflowError:
            return error(400, "A time or duration is out of range.")

    return wrapped


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise UsageError("The request body is too large.")
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as err:
        raise UsageError("The request body is not valid JSON.") from err
    if not isinstance(data, dict):
        raise UsageError("The request body must be a JSON object.")
    return data


def _text(data: dict[str, Any], key: str, where: str = "", required: bool = True) -> str | None:
    value = data.get(key)
    name = f"{where}{key}"
    if value is None:
        if required:
            raise UsageError(f'"{name}" is required.')
        return None
    if not isinstance(value, str):
        raise UsageError(f'"{name}" must be a string.')
    if required and not value.strip():
        raise UsageError(f'"{name}" must not be empty.')
    return value


def _present(data: dict[str, Any], key: str, where: str = "") -> str:
    """A string that must be there; whether it is a good value is the services' to say."""
    value = _text(data, key, where, required=False)
    if value is None:
        raise UsageError(f'"{where}{key}" is required.')
    return value


def _need(data: dict[str, Any], key: str, where: str = "") -> str:
    value = _text(data, key, where)
    assert value is not None
    return value


class NotAdmin(SyncdError):
    """The platform's token asked to act as the admin (403)."""


def _is_admin(request: Request) -> bool:
    return bool(getattr(request.state, "role", None) == ADMIN)


def _actor(request: Request, data: dict[str, Any]) -> Actor:
    """Who acts: ``"as"``, by default the admin with the admin token, else the customer."""
    value = data.get("as", ADMIN if _is_admin(request) else "customer")
    if value not in ACTORS:
        raise UsageError('"as" must be "customer" or "admin".')
    if value == ADMIN and not _is_admin(request):
        raise NotAdmin(NOT_ADMIN)
    return ACTORS[value]


def _time(text: str) -> datetime:
    value = parse_time(text)
    value.astimezone(UTC)  # OverflowError here (mapped to 400), not deep in a service
    return value


def _json(s: Session, status: int = 200) -> JSONResponse:
    return JSONResponse(session_json(s), status_code=status)


async def create_session(request: Request) -> Response:
    """``POST /api/v1/sessions``: book a session.

    The platform's token books as ``api`` (inside the admin's availability); the admin
    token books as the admin (anywhere) unless ``"as": "customer"``.
    """
    data = await _body(request)
    ctx = request.app.state.web.ctx
    admin = _need(data, "admin")
    customer = data.get("customer")
    if not isinstance(customer, dict):
        raise UsageError('"customer" must be an object with email, name and tz.')
    email = _present(customer, "email", "customer.")
    name = _present(customer, "name", "customer.")
    tz = _text(customer, "tz", "customer.", required=False) or "UTC"
    start = _time(_need(data, "start"))
    minutes = data.get("duration_minutes")
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise UsageError('"duration_minutes" must be a whole number of minutes.')
    if not 1 <= minutes <= MAX_DURATION_MINUTES:
        raise InvalidValue(
            f'"duration_minutes" must be between 1 and {MAX_DURATION_MINUTES} minutes.'
        )
    end = start + timedelta(minutes=minutes)
    actor = Actor.API
    if "as" in data or _is_admin(request):
        actor = _actor(request, data)
    s = await run_in_threadpool(
        services.book, ctx, admin, Customer(email, name, tz), start, end, actor
    )
    return _json(s, 201)


async def list_sessions(request: Request) -> Response:
    """``GET /api/v1/sessions?admin=&status=``: sessions by start time."""
    ctx = request.app.state.web.ctx
    unknown = sorted(set(request.query_params) - {"admin", "status"})
    if unknown:
        # A typo like ?stauts=booked must not silently list every session.
        raise UsageError(f'Unknown query parameter "{unknown[0]}" (use admin and status).')
    admin = request.query_params.get("admin") or None
    status = request.query_params.get("status")
    sessions = await run_in_threadpool(services.list_sessions, ctx, admin, status)
    return JSONResponse([session_json(s) for s in sessions])


async def get_session(request: Request) -> Response:
    """``GET /api/v1/sessions/{id}``: one session with its history."""
    ctx = request.app.state.web.ctx
    s = await run_in_threadpool(services.show, ctx, request.path_params["id"])
    return _json(s)


async def reschedule_session(request: Request) -> Response:
    """``POST /api/v1/sessions/{id}/reschedule``: move it, or let the customer choose."""
    data = await _body(request)
    ctx = request.app.state.web.ctx
    sid = request.path_params["id"]
    choose = data.get("let_customer_choose", False)
    if not isinstance(choose, bool):
        raise UsageError('"let_customer_choose" must be true or false.')
    if choose:
        if data.get("to") is not None:
            raise UsageError('Use either "to" or "let_customer_choose", not both.')
        message = _text(data, "message", required=False)
        if not message or not message.strip():
            raise UsageError('"let_customer_choose" needs a "message" for the customer.')
        # Letting the customer choose is the admin's action: the admin token only
        # ("as": "customer" is refused by the rules, 409).
        actor = _actor(request, {"as": ADMIN, **data})
        s = await run_in_threadpool(services.let_customer_choose, ctx, sid, message, actor)
        return _json(s)
    if data.get("to") is None:
        raise UsageError('Give "to" (a time) or "let_customer_choose": true with a "message".')
    start = _time(_need(data, "to"))
    actor = _actor(request, data)
    s = await run_in_threadpool(services.reschedule, ctx, sid, start, None, actor)
    return _json(s)


async def cancel_session(request: Request) -> Response:
    """``POST /api/v1/sessions/{id}/cancel``: cancel with a reason."""
    data = await _body(request)
    ctx = request.app.state.web.ctx
    reason = _text(data, "reason", required=False)
    if reason is None:
        raise UsageError('"reason" is required.')
    actor = _actor(request, data)
    s = await run_in_threadpool(services.cancel, ctx, request.path_params["id"], reason, actor)
    return _json(s)


async def openapi_document(request: Request) -> Response:
    """``GET /api/v1/openapi.json``: the OpenAPI 3 document (no token needed)."""
    return JSONResponse(build_openapi(request.app.state.web.cfg.web.public_url))


def routes() -> list[BaseRoute]:
    """Every route of the REST API."""
    return [
        Route("/api/v1/openapi.json", openapi_document, methods=["GET"]),
        Route("/api/v1/sessions", _authorized(create_session), methods=["POST"]),
        Route("/api/v1/sessions", _authorized(list_sessions), methods=["GET"]),
        Route("/api/v1/sessions/{id}", _authorized(get_session), methods=["GET"]),
        Route(
            "/api/v1/sessions/{id}/reschedule",
            _authorized(reschedule_session),
            methods=["POST"],
        ),
        Route("/api/v1/sessions/{id}/cancel", _authorized(cancel_session), methods=["POST"]),
    ]
