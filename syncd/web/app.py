"""The web application: the customer page, the REST API, health and metrics.

``create_app(ctx, cfg)`` is the only entry point; ``syncd.web.server`` runs it under
uvicorn. Routes:

- ``GET /``: a small index page (what this is, where to look; ``WebState.index_links``);
- ``GET|POST /choose/{token}``: the "choose a new time" page (``syncd.web.choose``);
- ``/api/v1/...``: the REST API (``syncd.web.api``, documented by ``syncd.web.openapi``);
- ``GET /healthz``: 200 while the process lives;
- ``GET /readyz``: 200 when the database answers and has its schema, else 503;
- ``GET /metrics``: Prometheus text (``syncd.web.metrics``).

No page ever shows a stack trace: expected errors have their own pages, anything else is a
plain 500 page (HTML, or ``{"error": ...}`` under ``/api/``) with the details in the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from syncd.config import Config
from syncd.ports import BackendFactory
from syncd.store.context import Context
from syncd.web import api, metrics, push
from syncd.web.choose import ChoosePage
from syncd.web.security import RateLimiter, SecurityHeaders, add_headers

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class WebState:
    """What every handler needs, kept on ``app.state.web``."""

    ctx: Context
    cfg: Config
    limiter: RateLimiter
    secure_cookies: bool
    open_backend: BackendFactory | None = None
    exposition: metrics.Exposition | None = None
    #: Extra links the index page shows, as (label, URL) (the demo's calendar and mail page).
    index_links: list[tuple[str, str]] = field(default_factory=list)
    env: Environment = field(
        default_factory=lambda: Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
    )

    def render(self, name: str, **data: Any) -> str:
        """One template rendered with ``data``."""
        return self.env.get_template(name).render(**data)


async def index(request: Request) -> Response:
    """``GET /``: what this server is and where to look (no secrets)."""
    state: WebState = request.app.state.web
    web = state.cfg.web
    body = state.render(
        "index.html",
        title="syncd",
        links=state.index_links,
        rest_api=bool(web.api_token_file or web.admin_token_file),
    )
    return HTMLResponse(body)


async def healthz(request: Request) -> Response:
    """200 "ok" while the process lives (liveness)."""
    return PlainTextResponse("ok\n")


def _ready(ctx: Context) -> str | None:
    """None when ready, else why not."""
    try:
        if ctx.db.is_current():
            return None
        return "the database has no schema yet: run 'syncd db upgrade'"
    except Exception as err:  # readiness reports every failure, it never raises
        return f"the database did not answer: {err}"


async def readyz(request: Request) -> Response:
    """200 when the database answers and the schema exists, else 503 with the reason."""
    why = await run_in_threadpool(_ready, request.app.state.web.ctx)
    if why is None:
        return PlainTextResponse("ready\n")
    return PlainTextResponse(f"not ready: {why}\n", status_code=503)


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text format."""
    state: WebState = request.app.state.web
    exposition = state.exposition or metrics.Exposition(state.ctx)
    text = await run_in_threadpool(exposition.scrape)
    return Response(text, media_type=metrics.CONTENT_TYPE)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if _is_api(request):
        sentence = {404: "There is no such API endpoint.", 405: "Method not allowed."}.get(
            exc.status_code, str(exc.detail)
        )
        return JSONResponse({"error": sentence}, exc.status_code, headers=headers)
    titles = {404: "Page not found", 405: "Method not allowed"}
    state: WebState = request.app.state.web
    body = state.render(
        "error.html",
        title=titles.get(exc.status_code, "Error"),
        message="There is nothing here. Please check the address."
        if exc.status_code == 404
        else str(exc.detail),
    )
    return HTMLResponse(body, exc.status_code, headers=headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    # The path is logged without the link token (a secret) of the customer page.
    path = "/choose/…" if request.url.path.startswith("/choose/") else request.url.path
    log.error("unexpected error on %s %s", request.method, path, exc_info=exc)
    response: Response
    if _is_api(request):
        response = JSONResponse({"error": "Internal error; the details are in the log."}, 500)
    else:
        state: WebState = request.app.state.web
        body = state.render(
            "error.html",
            title="Something went wrong",
            message="Something went wrong on our side. Please try again in a few minutes.",
        )
        response = HTMLResponse(body, 500)
    # This answer is sent by Starlette's outermost middleware, past SecurityHeaders.
    add_headers(response.headers, request.url.path)
    return response


def create_app(
    ctx: Context,
    cfg: Config,
    *,
    push_wiring: push.PushWiring | None = None,
    open_backend: BackendFactory | None = None,
) -> Starlette:
    """The Starlette application serving ``ctx`` with the ``[web]`` settings of ``cfg``."""
    state = WebState(
        ctx=ctx,
        cfg=cfg,
        limiter=RateLimiter(cfg.web.rate_limit_per_minute),
        secure_cookies=urlparse(cfg.web.public_url).scheme == "https",
        open_backend=open_backend,
        exposition=metrics.Exposition(ctx),
    )
    page = ChoosePage(state)
    routes = [
        Route("/choose/{token}", page.get, methods=["GET"]),
        Route("/choose/{token}", page.post, methods=["POST"]),
        Route("/", index, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *api.routes(),
        *push.routes(ctx, push_wiring or push.PushWiring()),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    app.state.web = state
    return app
