"""The demo's mail catcher: an SMTP server that keeps every message, and a page to read them.

:class:`MailStore` keeps each received message as ``<dir>/mail/NNNN.eml`` (so the mail
survives restarts and ``syncd demo --walkthrough`` can read it from another process);
:func:`start_smtp` runs aiosmtpd in a thread; :func:`mail_app` is a small Starlette app
that lists the messages (``/``), shows one rendered (``/mail/N``: headers, the text part,
the HTML part in a sandboxed iframe, the iTIP part as text), serves the raw message
(``/mail/N/raw``) and a JSON index (``/mails.json``), and shows the coach's calendar as it
is on the CalDAV server (``/calendar``) for a newcomer without a calendar app.
:func:`serve_in_thread` runs any ASGI app under uvicorn in a daemon thread.

Only ``syncd demo`` uses this module; aiosmtpd comes with the ``demo`` extra.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncd.errors import ConfigError

if TYPE_CHECKING:
    pass

_NAME = re.compile(r"^(\d{4,})\.eml$")
_URL = re.compile(r"https?://[^\s<>\"']+")


@dataclass(frozen=True)
class MailView:
    """One kept message, decoded for display."""

    number: int
    sender: str
    to: str
    subject: str
    date: str
    message_id: str
    text: str
    html: str
    itip: str
    itip_method: str
    attachments: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        """The JSON of ``/mails.json``."""
        return {
            "n": self.number,
            "to": self.to,
            "subject": self.subject,
            "date": self.date,
            "message_id": self.message_id,
            "itip_method": self.itip_method,
        }


def parse_mail(number: int, raw: bytes) -> MailView:
    """Decode a raw message into its headers and parts."""
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    text = body_html = itip = method = ""
    attachments: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        filename = part.get_filename()
        if filename:
            attachments.append(f"{filename} ({kind})")
            continue
        content = part.get_content()
        if isinstance(content, bytes):
            content = content.decode("utf-8", "replace")
        if kind == "text/plain" and not text:
            text = str(content)
        elif kind == "text/html" and not body_html:
            body_html = str(content)
        elif kind == "text/calendar" and not itip:
            itip = str(content)
            method = str(part.get_param("method") or "")
    return MailView(
        number=number,
        sender=str(msg.get("From", "")),
        to=str(msg.get("To", "")),
        subject=str(msg.get("Subject", "")),
        date=str(msg.get("Date", "")),
        message_id=str(msg.get("Message-ID", "")),
        text=text,
        html=body_html,
        itip=itip,
        itip_method=method,
        attachments=tuple(attachments),
    )


class MailStore:
    """Messages kept as numbered ``.eml`` files in one folder (written atomically)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def numbers(self) -> list[int]:
        """The numbers of the kept messages, oldest first."""
        found = (_NAME.match(p.name) for p in self.folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, number: int) -> Path:
        """Where message ``number`` is kept."""
        return self.folder / f"{number:04d}.eml"

    def save(self, raw: bytes) -> int:
        """Keep one message; returns its number."""
        with self._lock:
            number = max(self.numbers(), default=0) + 1
            tmp = self.folder / f".{number:04d}.tmp"
            tmp.write_bytes(raw)
            os.replace(tmp, self.path(number))
            return number

    def raw(self, number: int) -> bytes | None:
        """The raw message, or None."""
        try:
            return self.path(number).read_bytes()
        except OSError:
            return None

    def load(self, number: int) -> MailView | None:
        """One message decoded, or None."""
        raw = self.raw(number)
        return None if raw is None else parse_mail(number, raw)

    def all(self, after: int = 0) -> list[MailView]:
        """Every message numbered above ``after``, oldest first."""
        views = (self.load(n) for n in self.numbers() if n > after)
        return [v for v in views if v is not None]


# --- SMTP ---------------------------------------------------------------------------------


class _Keeper:
    """aiosmtpd handler: keep every message, tell the terminal."""

    def __init__(self, store: MailStore, announce: Callable[[MailView], None]) -> None:
        self.store, self.announce = store, announce

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content or envelope.content
        number = self.store.save(raw)
        with contextlib.suppress(Exception):  # a display problem never refuses a message
            self.announce(parse_mail(number, raw))
        return "250 OK: kept"


class SmtpCatcher:
    """A running aiosmtpd controller; ``stop()`` is idempotent."""

    def __init__(self, controller: Any, port: int) -> None:
        self._controller: Any = controller
        self.port = port

    def stop(self) -> None:
        """Stop listening."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def start_smtp(
    store: MailStore, port: int, announce: Callable[[MailView], None] = lambda _m: None
) -> SmtpCatcher:
    """Start an SMTP server on 127.0.0.1:``port`` that keeps every message in ``store``."""
    from aiosmtpd.controller import Controller

    controller = Controller(_Keeper(store, announce), hostname="127.0.0.1", port=port)
    try:
        controller.start()
    except Exception as err:  # aiosmtpd raises several kinds when the port is taken
        raise ConfigError(f"demo: cannot start the SMTP server on port {port}: {err}") from err
    return SmtpCatcher(controller, port)


# --- the mail page ------------------------------------------------------------------------
