"""Real CalDAV servers (Radicale 3, Xandikos) as subprocesses on loopback, for any test suite.

Each server listens on 127.0.0.1 on a free port and stores its data under the ``tmp_path``
it was given. ``Server.make_calendar(name)`` creates a fresh calendar collection
(MKCALENDAR) and returns its URL, so tests stay independent of each other.

The servers are installed in the project's virtualenv (the ``test`` extra); when one
cannot start, this module fails loudly instead of skipping.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from syncd.demo.radicale import radicale_config

START_TIMEOUT = 20.0

MKCALENDAR_BODY = """<?xml version="1.0" encoding="utf-8"?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:set><D:prop>
    <D:displayname>{name}</D:displayname>
    <C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set>
  </D:prop></D:set>
</C:mkcalendar>
"""


class DropsCalendars:
    """What a test server shares: the calendars ``make_calendar`` made, deleted after a test."""

    made: list[str]

    def request(
        self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTP request with the server's credentials (each server's own)."""
        raise NotImplementedError

    def drop_calendars(self) -> None:
        """Delete every calendar ``make_calendar`` made since the last call (idempotent).

        A server shared by the whole run stays small so: SOGo answers 4-13 times slower
        once it holds a hundred calendars more (GET 3.5 -> 45 ms), and every server lists
        them all in a home-set PROPFIND (discovery). A server already gone is left alone.
        """
        made, self.made = self.made, []
        for url in made:
            with contextlib.suppress(OSError):
                self.request("DELETE", url)


@dataclass
class Server(DropsCalendars):
    """A running CalDAV server.

    ``base_url`` ends with the user's home collection (``http://127.0.0.1:PORT/user/``);
    ``username``/``password`` are empty when the server has no authentication (Xandikos).
    """

    kind: str
    base_url: str
    username: str
    password: str
    process: subprocess.Popen[bytes]
    log_path: Path
    made: list[str] = field(default_factory=list, repr=False)
    _counter: int = field(default=0, repr=False)

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self.base_url.split(":")[2].split("/")[0])

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT`` without a path."""
        return f"http://127.0.0.1:{self.port}"

    def request(
        self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTP request with this server's credentials; never raises on a status."""
        req = urllib.request.Request(url, data=body or None, method=method)
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        if self.username:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers.items()), err.read()

    def make_calendar(self, name: str | None = None) -> str:
        """Create a calendar collection (MKCALENDAR) and return its URL (ending with ``/``)."""
        if name is None:
            self._counter += 1
            name = f"cal{self._counter}-{os.urandom(3).hex()}"
        url = f"{self.base_url}{urllib.parse.quote(name)}/"
        body = MKCALENDAR_BODY.format(name=name).encode()
        status, _, text = self.request(
            "MKCALENDAR", url, body, {"Content-Type": "application/xml; charset=utf-8"}
        )
        if status not in (200, 201):
            raise RuntimeError(f"MKCALENDAR {url} -> {status}: {text[:500]!r}")
        self.made.append(url)
        return url

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Terminate the server process (idempotent)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if not server.alive():
            break
        try:
            status, _, _ = server.request("PROPFIND", server.base_url, headers={"Depth": "0"})
        except OSError as err:
            last = str(err)
            time.sleep(0.05)
            continue
        if status in (200, 207):
            return
        last = f"HTTP {status}"
        time.sleep(0.05)
    server.stop()
    log = server.log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"{server.kind} did not come up on {server.base_url} ({last}):\n{log}")


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def start_radicale(
    tmp_path: Path, username: str = "user", password: str = "secret", port: int | None = None
) -> Server:
    """Start Radicale 3 with htpasswd (plain) auth and filesystem storage under ``tmp_path``.

    Started again with the same ``tmp_path`` and ``port`` it serves the same data (a restart).
    """
    root = tmp_path / "radicale"
    root.mkdir(parents=True, exist_ok=True)
    (root / "users").write_text(f"{username}:{password}\n")
    port = port or free_port()
    config = root / "config"
    config.write_text(radicale_config(root, port))
    log_path = root / "server.log"
    proc = _spawn([sys.executable, "-m", "radicale", "--config", str(config)], log_path)
    server = Server(
        "radicale", f"http://127.0.0.1:{port}/{username}/", username, password, proc, log_path
    )
    _wait_until_up(server)
    return server


def start_xandikos(tmp_path: Path, port: int | None = None) -> Server:
    """Start Xandikos (no authentication) with its data under ``tmp_path`` (restartable)."""
    root = tmp_path / "xandikos"
    (root / "data").mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = root / "server.log"
    args = [
        sys.executable,
        "-m",
        "xandikos",
        "serve",
        "--defaults",
        "-d",
        str(root / "data"),
        "--state-dir",
        str(root / "state"),
        "-l",
        "127.0.0.1",
        "-p",
        str(port),
        "--no-detect-systemd",
    ]
    proc = _spawn(args, log_path)
    server = Server("xandikos", f"http://127.0.0.1:{port}/user/calendars/", "", "", proc, log_path)
    _wait_until_up(server)
    return server


@contextlib.contextmanager
def running(kind: str, tmp_path: Path) -> Iterator[Server]:
    """``with running("radicale", tmp) as server:`` — start a server and always stop it."""
    starters = {"radicale": start_radicale, "xandikos": start_xandikos}
    server = starters[kind](tmp_path)
    try:
        yield server
    finally:
        server.stop()
