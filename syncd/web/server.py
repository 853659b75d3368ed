"""Running the web application under uvicorn: in the foreground or in a daemon thread.

The access log is off: the customer page's paths carry the link tokens, which are
secrets. Client addresses come from ``X-Forwarded-For`` only when the proxy is trusted
(uvicorn's ``--forwarded-allow-ips``, default 127.0.0.1, or ``$FORWARDED_ALLOW_IPS``), so
the rate limit on the customer page counts real clients behind a local reverse proxy.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from syncd.config import Config
from syncd.errors import ConfigError
from syncd.ports import BackendFactory
from syncd.store.context import Context
from syncd.web.app import create_app
from syncd.web.push import PushWiring

log = logging.getLogger(__name__)

START_TIMEOUT = 15.0


@dataclass(frozen=True)
class Peers:
    """What the composition root plugs into the web side: push readers, calendar access."""

    push: PushWiring = field(default_factory=PushWiring)
    open_backend: BackendFactory | None = None


def parse_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:8080"`` for IPv6) as (host, port); ConfigError if bad."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f'[web] listen = "{listen}" is not host:port (e.g. 127.0.0.1:8080)')
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def _config(ctx: Context, cfg: Config, host: str, port: int, peers: Peers) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(ctx, cfg, push_wiring=peers.push, open_backend=peers.open_backend),
        host=host,
        port=port,
        lifespan="off",
        access_log=False,
        log_config=None,  # keep the logging syncd set up
        server_header=False,
    )


def serve(ctx: Context, cfg: Config, peers: Peers | None = None) -> None:
    """Serve on ``[web] listen`` in the foreground until SIGINT/SIGTERM."""
    host, port = parse_listen(cfg.web.listen)
    log.info("serving the web side on %s:%s", host, port)
    uvicorn.Server(_config(ctx, cfg, host, port, peers or Peers())).run()


class WebServer:
    """A uvicorn server running in a daemon thread; ``port`` is the bound port."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, sock: socket.socket):
        self.server = server
        self.thread = thread
        self.socket = sock
        address = sock.getsockname()
        self.host: str = str(address[0])
        self.port: int = int(address[1])

    @property
    def state(self) -> Any:
        """The running app's ``WebState`` (``syncd.web.app``)."""
        app: Any = self.server.config.app
        return app.state.web

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound socket."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to finish the requests in hand and exit; wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.warning("the web server did not stop within %.0f s; forcing it", timeout)
            self.server.force_exit = True
            self.thread.join(timeout)
        self.socket.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"[web] listen: cannot listen on {host}:{port}: {err.strerror}") from err
    sock.set_inheritable(True)
    return sock


def start_in_thread(ctx: Context, cfg: Config, peers: Peers | None = None) -> WebServer:
    """Start serving ``[web] listen`` in a daemon thread; port 0 picks a free port.

    The socket is bound here, in the caller's thread, so a port already in use is a
    ConfigError now rather than a dead thread later.
    """
    host, port = parse_listen(cfg.web.listen)
    sock = _bind(host, port)
    server = uvicorn.Server(_config(ctx, cfg, host, port, peers or Peers()))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="syncd-web", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise ConfigError(f"[web] listen: the web server did not start on {host}:{port}")
        time.sleep(0.02)
    web = WebServer(server, thread, sock)
    log.info("web side listening on %s", web.url)
    return web
