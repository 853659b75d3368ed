"""A TCP gate in front of a running server: "the server is down" without losing its data.

The Debian servers (Cyrus, DAViCal, SOGo) keep their data in a runtime folder that goes
away when they stop, so a scenario that needs the server down and then back (on the same
port, with the same calendars) talks to it through a :class:`Gate`: ``close()`` stops
listening and drops every open connection (clients see "connection refused", as with a
stopped server); ``open()`` listens on the same port again.

:class:`GatedServer` is the server as a test sees it through the gate (``Server``-shaped).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from tests.debian_servers.common import DebianServer


class Gate:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target``; can be closed and reopened."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.open()

    def open(self) -> None:
        """Listen (again, on the same port once one was chosen)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self.port = int(sock.getsockname()[1])
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def close(self) -> None:
        """Stop listening and cut every connection (idempotent)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def _through(url: str, port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=f"127.0.0.1:{port}").geturl()


@dataclass
class GatedServer:
    """A Debian server reached through a :class:`Gate`; ``stop()`` closes the gate only."""

    real: DebianServer
    gate: Gate = field(init=False)

    def __post_init__(self) -> None:
        self.gate = Gate(self.real.port)
        self.kind = self.real.kind
        self.username = self.real.username
        self.password = self.real.password

    @property
    def port(self) -> int:
        """The gate's port."""
        return self.gate.port

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:GATE``."""
        return f"http://127.0.0.1:{self.gate.port}"

    @property
    def base_url(self) -> str:
        """The calendar home, through the gate."""
        return _through(self.real.base_url, self.gate.port)

    def make_calendar(self, name: str | None = None) -> str:
        """A new calendar on the server; its URL through the gate."""
        return _through(self.real.make_calendar(name), self.gate.port)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        """A raw request to the server itself (the admin's client is not behind the gate)."""
        path = urllib.parse.urlsplit(url).path if "://" in url else url
        return self.real.request(method, path, *args, **kwargs)

    def stop(self) -> None:
        """The server goes away for syncd: the gate closes."""
        self.gate.close()

    def back(self) -> None:
        """The server is reachable again, on the same port."""
        self.gate.open()

    def shutdown(self) -> None:
        """Close the gate and stop the server for good."""
        self.gate.close()
        self.real.stop()
