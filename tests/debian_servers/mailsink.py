"""An SMTP sink (aiosmtpd) that keeps every message, and a ``sendmail`` that forwards to it.

Servers that speak SMTP (SOGo) are pointed at :attr:`MailSink.port`; servers that run a
``sendmail`` program (Cyrus, PHP's ``mail()`` in DAViCal) are given the script written by
:func:`write_sendmail`, which relays its standard input to the sink. Either way the test
finds the message in :attr:`MailSink.messages`.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

# Runs as the server's own user (cyrus, www-data), so it needs an interpreter every user can
# execute: the system Python, not the project's virtualenv.
SENDMAIL_SCRIPT = '''#!{python}
"""sendmail stand-in: relay standard input to the test sink on 127.0.0.1:{port}."""
import smtplib
import sys
from email import message_from_bytes, policy
from email.utils import getaddresses

args = sys.argv[1:]
sender, recipients, use_headers = "", [], False
i = 0
while i < len(args):
    arg = args[i]
    if arg == "--":
        recipients.extend(args[i + 1 :])
        break
    if arg in ("-f", "-F", "-o", "-r", "-N", "-R", "-V", "-X", "-B", "-p", "-q", "-L"):
        if arg in ("-f", "-r"):
            sender = args[i + 1] if i + 1 < len(args) else ""
        i += 2
        continue
    if arg.startswith("-f") and len(arg) > 2:
        sender = arg[2:]
    elif arg == "-t":
        use_headers = True
    elif not arg.startswith("-"):
        recipients.append(arg)
    i += 1
data = sys.stdin.buffer.read()
msg = message_from_bytes(data, policy=policy.compat32)
if use_headers or not recipients:
    fields = msg.get_all("To", []) + msg.get_all("Cc", []) + msg.get_all("Bcc", [])
    recipients += [addr for _, addr in getaddresses(fields) if addr]
if not sender:
    sender = getaddresses([msg.get("From", "")])[0][1] or "sendmail@localhost"
try:
    with open({log!r}, "a") as log:
        log.write("sendmail %r -> %r\\n" % (sys.argv[1:], recipients))
except OSError:
    pass
with smtplib.SMTP("127.0.0.1", {port}, timeout=10) as smtp:
    smtp.sendmail(sender, recipients or ["unknown@localhost"], data)
'''


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Keeper:
    """aiosmtpd handler: accept and keep every message."""

    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        message = message_from_bytes(content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self.sink.lock:
            self.sink.messages.append(message)
            self.sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK kept by the test sink"


@dataclass
class MailSink:
    """A running SMTP sink on 127.0.0.1 and what it received."""

    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _controller: Controller | None = field(default=None, repr=False)

    @classmethod
    def start(cls) -> MailSink:
        """Start a sink on a free port (in a background thread)."""
        sink = cls(port=free_port())
        controller = Controller(_Keeper(sink), hostname="127.0.0.1", port=sink.port)
        controller.start()
        sink._controller = controller
        return sink

    def stop(self) -> None:
        """Stop listening (idempotent); the messages stay readable."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def system_python() -> str:
    """An interpreter every system user can run (never one under /root)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("python3")
    if not found:
        raise RuntimeError("no system python3 for the sendmail stand-in (apt-get install python3)")
    return found


def write_sendmail(path: Path, sink: MailSink, log: Path) -> Path:
    """Write an executable ``sendmail`` at ``path`` that relays to ``sink``; return ``path``."""
    path.write_text(SENDMAIL_SCRIPT.format(python=system_python(), port=sink.port, log=str(log)))
    path.chmod(0o755)
    return path
