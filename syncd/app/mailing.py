"""The daemon's mailer: built when a message is claimed, reused while the drain lasts.

An idle tick (nothing due in the outbox) builds nothing: no SMTP client, no TLS context
(issue 11, goal 5). One drain sends every due message over one connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.store.context import Context


def make_mailer(cfg: Config) -> Any:
    """The SMTP mailer of the configuration (composition root)."""
    from adapters.smtp import SmtpMailer

    s = cfg.smtp
    return SmtpMailer(
        s.host, s.port, s.security, s.username, s.password(), s.timeout.total_seconds()
    )


class LazyMailer:
    """A :class:`syncd.ports.Mailer` that makes the real one on the first message."""

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._mailer: Any = None

    @property
    def built(self) -> bool:
        """True once a message made the real mailer."""
        return self._mailer is not None

    def send(self, message: EmailMessage, recipients: Sequence[str]) -> None:
        """Deliver ``message``, connecting first if this drain has not yet."""
        if self._mailer is None:
            self._mailer = make_mailer(self._cfg)
        self._mailer.send(message, recipients)

    def close(self) -> None:
        """Close the connection, if one was made."""
        if self._mailer is not None:
            self._mailer.close()
            self._mailer = None


def drain_outbox(ctx: Context, cfg: Config, owner: str) -> Any:
    """Send what is due in the outbox."""
    from syncd.notify import sender

    mailer = LazyMailer(cfg)
    try:
        return sender.drain(ctx, mailer, cfg.smtp, owner)
    finally:
        mailer.close()
