"""Small HTTP/1.1 servers on loopback for the CalDAV transport's unit tests, and a socket
whose peer has gone: what tests/unit/test_idle_report.py and test_plain_writes.py share."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar


class LoopbackServer(ThreadingHTTPServer):
    """A threading HTTP server on a free loopback port; ``origin`` is its base URL."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (kept-alive connections), nothing logged."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *_: Any) -> None:
        pass


S = TypeVar("S", bound=LoopbackServer)


@contextmanager
def serving(server: S) -> Iterator[S]:
    """``server`` answering on a thread of its own until the block ends, then closed."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class DeadSocket:
    """A kept-alive connection's socket whose peer has gone without it showing yet (nothing
    to read): writing into it fails with ``error``."""

    def __init__(self, error: OSError) -> None:
        self._error = error
        self._pair = socket.socketpair()

    def fileno(self) -> int:
        return self._pair[0].fileno()

    def sendall(self, *_: Any) -> None:
        raise self._error

    def settimeout(self, *_: Any) -> None:
        pass

    def close(self) -> None:
        for end in self._pair:
            end.close()
