"""The demo's mail page: every email syncd sent, and the calendar as the admin sees it."""

from __future__ import annotations

import html
import re
import socket
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from syncd.demo.mail import MailStore
from syncd.domain.eventtext import split_notes
from syncd.errors import ConfigError, SyncdError

if TYPE_CHECKING:
    from syncd.demo.radicale import CalEvent

_NAME = re.compile(r"^(\d{4,})\.eml$")
_URL = re.compile(r"https?://[^\s<>\"']+")


_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem;
       padding: 0 1rem; color: #1d2430; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #dde2ea;
         vertical-align: top; }
pre { background: #f4f6f9; padding: .8rem; overflow-x: auto; white-space: pre-wrap; }
iframe { width: 100%; height: 28rem; border: 1px solid #dde2ea; }
.muted { color: #5d6878; } dt { font-weight: 600; } dd { margin: 0 0 .4rem 0; }
"""


def _page(title: str, body: str, refresh: bool = False) -> HTMLResponse:
    meta = '<meta http-equiv="refresh" content="5">' if refresh else ""
    return HTMLResponse(
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def _linkify(text: str) -> str:
    """Escape ``text`` and make its URLs clickable (the "choose a new time" link)."""
    out, last = [], 0
    for m in _URL.finditer(text):
        out.append(html.escape(text[last : m.start()]))
        url = html.escape(m.group(0))
        out.append(f'<a href="{url}">{url}</a>')
        last = m.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def _short_date(value: str) -> str:
    try:
        return parsedate_to_datetime(value).astimezone().strftime("%a %d %b %H:%M:%S")
    except (TypeError, ValueError):
        return value


def _calendar_table(events: list[CalEvent], tz: str) -> str:
    rows = []
    for e in events:
        when = "—"
        if e.start is not None and e.end is not None:
            s, t = e.start.astimezone(ZoneInfo(tz)), e.end.astimezone(ZoneInfo(tz))
            when = f"{s:%a %d %b %H:%M}–{t:%H:%M} {s.tzname()}"
        own = split_notes(e.notes)[0].strip()  # the admin's text, not syncd's block
        note = own.splitlines()[0] if own else ""
        rows.append(
            f"<tr><td>{html.escape(when)}</td><td>{html.escape(e.summary)}</td>"
            f"<td>{html.escape(e.status.lower() or '—')}</td><td>{html.escape(note)}</td></tr>"
        )
    if not rows:
        return '<p class="muted">The calendar is empty.</p>'
    head = "<tr><th>When</th><th>Title</th><th>Status</th><th>Your notes (first line)</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def mail_app(
    store: MailStore,
    events: Callable[[], list[CalEvent]] | None = None,
    tz: str = "UTC",
    title: str = "syncd demo — emails sent",
) -> Starlette:
    """The Starlette app of the mail page (and of ``/calendar`` when ``events`` is given)."""

    async def index(request: Request) -> Response:
        mails = list(reversed(store.all()))
        rows = "".join(
            f'<tr><td><a href="/mail/{m.number}">{m.number}</a></td>'
            f"<td>{html.escape(_short_date(m.date))}</td><td>{html.escape(m.to)}</td>"
            f'<td><a href="/mail/{m.number}">{html.escape(m.subject)}</a></td>'
            f"<td>{html.escape(m.itip_method) or '—'}</td></tr>"
            for m in mails
        )
        table = (
            "<table><tr><th>#</th><th>Date</th><th>To</th><th>Subject</th><th>iTIP</th></tr>"
            f"{rows}</table>"
            if mails
            else '<p class="muted">No email yet.</p>'
        )
        body = (
            f"<h1>{html.escape(title)}</h1><p class='muted'>{len(mails)} emails, newest "
            "first; this page refreshes every 5 seconds. Kept as .eml files in "
            f"{html.escape(str(store.folder))}. <a href='/calendar'>The calendar</a></p>"
            f"{table}"
        )
        return _page(title, body, refresh=True)

    async def show(request: Request) -> Response:
        number = int(request.path_params["n"])
        m = store.load(number)
        if m is None:
            return _page("No such email", "<h1>No such email</h1><p><a href='/'>All emails</a>")
        headers = "".join(
            f"<dt>{k}</dt><dd>{html.escape(v)}</dd>"
            for k, v in (
                ("From", m.sender),
                ("To", m.to),
                ("Subject", m.subject),
                ("Date", m.date),
                ("Message-ID", m.message_id),
                ("Attachments", ", ".join(m.attachments) or "none"),
            )
        )
        parts = [f"<h2>Text part</h2><pre>{_linkify(m.text)}</pre>"]
        if m.html:
            # Links open in a new tab: the customer page refuses to be framed.
            doc = m.html.replace("<head>", '<head><base target="_blank">', 1)
            srcdoc = html.escape(doc, quote=True)
            sandbox = "allow-popups allow-popups-to-escape-sandbox"
            parts.append(
                f'<h2>HTML part</h2><iframe sandbox="{sandbox}" srcdoc="{srcdoc}"></iframe>'
            )
        if m.itip:
            parts.append(
                f"<h2>iTIP part (text/calendar; method={html.escape(m.itip_method)})</h2>"
                f"<pre>{html.escape(m.itip)}</pre>"
            )
        nav = (
            f"<p><a href='/'>All emails</a> · <a href='/mail/{number}/raw'>raw message</a>"
            + (f" · <a href='/mail/{number - 1}'>previous</a>" if number > 1 else "")
            + (f" · <a href='/mail/{number + 1}'>next</a>" if store.raw(number + 1) else "")
            + "</p>"
        )
        body = f"{nav}<h1>{html.escape(m.subject)}</h1><dl>{headers}</dl>{''.join(parts)}"
        return _page(m.subject, body)

    async def raw(request: Request) -> Response:
        data = store.raw(int(request.path_params["n"]))
        if data is None:
            return Response("no such email\n", 404, media_type="text/plain")
        return Response(data, media_type="text/plain; charset=utf-8")

    async def index_json(request: Request) -> Response:
        return JSONResponse([m.summary() for m in store.all()])

    async def calendar(request: Request) -> Response:
        if events is None:
            return _page("No calendar", "<h1>No calendar</h1>")
        try:
            table = _calendar_table(await run_in_threadpool(events), tz)
        except (OSError, SyncdError) as err:
            table = f"<p>The calendar server did not answer: {html.escape(str(err))}</p>"
        body = (
            "<p><a href='/'>All emails</a></p><h1>The coach's calendar, as it is now</h1>"
            f"<p class='muted'>Times in {html.escape(tz)}; refreshes every 5 seconds. Edit it "
            "in a calendar app, or run the walkthrough, and watch it change.</p>"
            f"{table}"
        )
        return _page("The calendar", body, refresh=True)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/calendar", calendar),
            Route("/mail/{n:int}", show),
            Route("/mail/{n:int}/raw", raw),
            Route("/mails.json", index_json),
        ]
    )


# --- a uvicorn thread -----------------------------------------------------------------------


class ThreadedServer:
    """An ASGI app served by uvicorn in a daemon thread."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, port: int) -> None:
        self.server, self.thread, self.port = server, thread, port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)


def serve_in_thread(app: Any, port: int, name: str = "demo-web") -> ThreadedServer:
    """Serve ``app`` on 127.0.0.1:``port`` in a daemon thread; ConfigError if it cannot."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"demo: cannot listen on 127.0.0.1:{port}: {err.strerror}") from err
    config = uvicorn.Config(
        app, lifespan="off", access_log=False, log_config=None, server_header=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise ConfigError(f"demo: the {name} server did not start on port {port}")
        time.sleep(0.02)
    return ThreadedServer(server, thread, int(sock.getsockname()[1]))
