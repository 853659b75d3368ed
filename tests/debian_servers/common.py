"""What the three Debian servers share: the server object, processes, folders, PostgreSQL.

Every process is started in its own session (process group) and stopped by its PID: SIGTERM,
then SIGKILL after a timeout, then the same for anything left in its process group. A start
that fails undoes everything it did (processes, folders, databases) before raising.

The servers drop to their own system users (``cyrus``, ``www-data``, ``sogo``), which
cannot enter pytest's ``tmp_path`` (``/tmp/pytest-of-root`` is 0700). So each server gets a
private runtime folder from :func:`runtime_dir` (``/tmp/syncd-debsrv-<kind>-XXXX``, owned
by that user, removed at stop) for its configuration and data; ``tmp/<kind>/`` keeps the
logs and a ``data`` symlink to the runtime folder while the server runs. Starting needs
root (to hand folders to those users and start processes as them).
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import psycopg
from psycopg import sql

from tests.debian_servers.mailsink import MailSink, free_port
from tests.servers import DropsCalendars

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))
PG_USER = os.environ.get("PGUSER", "postgres")

MKCALENDAR_BODY = """<?xml version="1.0" encoding="utf-8"?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:set><D:prop>
    <D:displayname>{name}</D:displayname>
    <C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set>
  </D:prop></D:set>
</C:mkcalendar>
"""

__all__ = [
    "DebianServer",
    "MailSink",
    "free_port",
    "pg_admin",
    "runtime_dir",
    "spawn",
    "stop_process",
    "wait_until_up",
]


@dataclass
class DebianServer(DropsCalendars):
    """A running CalDAV server from a Debian package, duck-typed on ``tests.servers.Server``.

    ``base_url`` is the user's calendar home collection (ends with ``/``); ``principal_url``
    the user's principal; ``calendar_url`` the empty calendar made at start; ``mail`` every
    message the server sent (to the sink: nothing leaves the machine).
    """

    kind: str
    base_url: str
    username: str
    password: str
    process: subprocess.Popen[bytes]
    log_path: Path
    principal_url: str
    sink: MailSink
    calendar_url: str = ""
    start_seconds: float = 0.0
    cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)
    made: list[str] = field(default_factory=list, repr=False)
    _counter: int = field(default=0, repr=False)

    @property
    def port(self) -> int:
        """The TCP port the server's HTTP side listens on."""
        return int(urllib.parse.urlsplit(self.base_url).port or 80)

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT`` without a path."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def mail(self) -> list[EmailMessage]:
        """Every message the server handed to SMTP or sendmail, oldest first."""
        with self.sink.lock:
            return list(self.sink.messages)

    def url(self, path: str) -> str:
        """An absolute URL for a path (or an href) on this server."""
        return urllib.parse.urljoin(self.root_url + "/", path)

    def request(
        self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTP request with this server's credentials; never raises on a status.

        ``url`` may be an href (a path). Redirects are returned (3xx), not followed.
        """
        req = urllib.request.Request(self.url(url), data=body or None, method=method)
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=20) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers.items()), err.read()

    def make_calendar(self, name: str | None = None) -> str:
        """Create a calendar collection (MKCALENDAR) and return its URL (ending with ``/``)."""
        if name is None:
            self._counter += 1
            name = f"cal{self._counter}-{secrets.token_hex(3)}"
        url = f"{self.base_url}{urllib.parse.quote(name)}/"
        body = MKCALENDAR_BODY.format(name=name).encode()
        status, _, text = self.request(
            "MKCALENDAR", url, body, {"Content-Type": "application/xml; charset=utf-8"}
        )
        if status not in (200, 201):
            raise RuntimeError(f"{self.kind}: MKCALENDAR {url} -> {status}: {text[:500]!r}")
        self.made.append(url)
        return url

    def alive(self) -> bool:
        """True while the main process runs."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop every process, drop databases, remove runtime folders (idempotent)."""
        self.cleanup.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report redirects (the well-known discovery) instead of following them."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def user_ids(user: str) -> tuple[int, int]:
    """(uid, gid) of a system user."""
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def runtime_dir(stack: contextlib.ExitStack, tmp: Path, kind: str, user: str) -> Path:
    """A private folder owned by ``user`` for config and data, removed when ``stack`` closes.

    ``tmp/<kind>/data`` points at it while the server runs.
    """
    if os.geteuid() != 0:
        raise RuntimeError(f"{kind}: the Debian test servers must be started as root")
    uid, gid = user_ids(user)
    root = Path(tempfile.mkdtemp(prefix=f"syncd-debsrv-{kind}-"))
    stack.callback(shutil.rmtree, root, True)
    os.chown(root, uid, gid)
    link = tmp / kind / "data"
    link.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(root)
    return root


def chown_tree(path: Path, user: str) -> None:
    """Give ``path`` and everything below it to ``user``."""
    uid, gid = user_ids(user)
    os.chown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def log_file(tmp: Path, kind: str, name: str, user: str | None = None) -> Path:
    """``tmp/<kind>/<name>``, empty, owned by ``user`` (so it may reopen /proc/self/fd/2)."""
    path = tmp / kind / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    if user:
        uid, gid = user_ids(user)
        os.chown(path, uid, gid)
    return path


def spawn(
    stack: contextlib.ExitStack,
    args: Sequence[str],
    log_path: Path,
    *,
    user: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    nudge: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``args`` in a new session, as ``user``, output appended to ``log_path``.

    The process is stopped (by PID, see :func:`stop_process`) when ``stack`` closes.
    """
    uid_gid = user_ids(user) if user else None
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
            user=uid_gid[0] if uid_gid else None,
            group=uid_gid[1] if uid_gid else None,
            extra_groups=[] if uid_gid else None,
        )
    stack.callback(stop_process, proc, STOP_TIMEOUT, nudge)
    return proc


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_process(
    proc: subprocess.Popen[bytes],
    timeout: float = STOP_TIMEOUT,
    nudge: Callable[[], None] | None = None,
) -> None:
    """SIGTERM ``proc``, SIGKILL it after ``timeout``, reap it, then clear its process group.

    ``nudge`` is called every 0.1 s while waiting, for a server that acts on SIGTERM only
    once its event loop wakes up (sogod: a connection wakes it).
    """
    pgid = proc.pid  # start_new_session: the group id is the leader's pid
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if nudge is not None:
                with contextlib.suppress(OSError):
                    nudge()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
        if proc.poll() is None:
            _signal_group(pgid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    if _group_alive(pgid):  # children the leader left behind
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)


def wait_until_up(
    kind: str,
    probe: Callable[[], bool],
    procs: Sequence[subprocess.Popen[bytes]],
    logs: Sequence[Path],
    timeout: float = START_TIMEOUT,
) -> None:
    """Poll ``probe`` until it is true; raise with the logs' tails when a process dies first."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            last = f"process {dead[0].args!r} exited with {dead[0].returncode}"
            break
        try:
            if probe():
                return
        except OSError as err:
            last = str(err)
        time.sleep(0.05)
    else:
        last = last or f"not up after {timeout:.0f}s"
    tails = "\n".join(
        f"--- {log}:\n{log.read_text(errors='replace')[-3000:]}" for log in logs if log.exists()
    )
    raise RuntimeError(f"{kind} did not come up ({last}):\n{tails}")


def poke(port: int) -> None:
    """Open a connection to ``127.0.0.1:port`` and send one request line (a wake-up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        conn.recv(64)


def http_status(url: str, method: str = "GET", auth: tuple[str, str] | None = None) -> int:
    """The status of one request (no redirects followed); OSError while nothing listens."""
    req = urllib.request.Request(url, method=method, headers={"Depth": "0"})
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.build_opener(_NoRedirect).open(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def pg_admin() -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the PostgreSQL server as its superuser."""
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
    )


def fresh_database(stack: contextlib.ExitStack, prefix: str) -> str:
    """Create ``<prefix>_<random>`` (dropped, with FORCE, when ``stack`` closes)."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with pg_admin() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                sql.Identifier(name)
            )
        )
    stack.callback(drop_database, name)
    return name


def drop_database(name: str) -> None:
    """Drop a database, closing whatever still uses it."""
    with pg_admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def drop_role(name: str) -> None:
    """Drop a role created for one run."""
    with pg_admin() as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
