"""The SMTP mailer: :class:`syncd.ports.Mailer` over smtplib.

One connection is kept open across sends; one idle for more than :data:`CHECK_AFTER_IDLE`
seconds is checked with ``NOOP`` before reuse, and one that drops at ``MAIL FROM`` (before
any message data: nothing can have been delivered) is replaced once and the envelope sent
again. Any other failure closes it, and the next send reconnects. The envelope is walked
step by step (MAIL, RCPT, DATA) so that each failure is classified where it happened:

- connection refused, timeouts, a dropped connection, TLS and login failures, and any 4xx
  answer raise :class:`MailTransient` (retry later);
- a 5xx answer to MAIL, RCPT or DATA raises :class:`MailPermanent` (never retry);
- a connection lost while waiting for the answer to the message data raises
  :class:`MailMaybeDelivered` (a :class:`MailTransient` with ``maybe_delivered = True``):
  the server may have queued the message, so a retry can duplicate it; the retry carries
  the same Message-ID, which makes the duplicate detectable.

Not thread-safe: use one instance per worker thread.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
import time
from collections.abc import Sequence
from email import policy
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import getaddresses

from syncd.ports import MailMaybeDelivered, MailPermanent, MailTransient

_LEADING_DOT = re.compile(rb"(?m)^\.")
#: A connection used less than this many seconds ago is reused without a NOOP round trip.
CHECK_AFTER_IDLE = 5.0


def _reply_error(step: str, code: int, reply: bytes | str) -> MailTransient | MailPermanent:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    message = f"SMTP {step} answered {code} {text}".strip()
    if 400 <= code < 500:
        return MailTransient(message)
    if 500 <= code < 600:
        return MailPermanent(message)
    return MailTransient(message)


def wire_bytes(message: EmailMessage) -> bytes:
    """The message as ``policy.SMTP`` writes it (CRLF line ends).

    A message built under an :class:`EmailPolicy` keeps its own policy with CRLF, so the
    header classes it was built with serve the serialization too (``policy.SMTP`` would
    build and parse every header again); the bytes are the same.
    """
    own = message.policy
    if isinstance(own, EmailPolicy) and own.utf8 == policy.SMTP.utf8:
        return message.as_bytes(policy=own.clone(linesep="\r\n"))
    return message.as_bytes(policy=policy.SMTP)


class SmtpMailer:
    """Sends composed messages through one SMTP server (none, STARTTLS or implicit TLS)."""

    def __init__(
        self,
        host: str,
        port: int,
        security: str = "none",
        username: str = "",
        password: str = "",
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"security must be none, starttls or tls, not {security!r}")
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self.password = password
        self.timeout = timeout
        self._ssl_context = ssl_context
        self._conn: smtplib.SMTP | None = None
        self._used_at = 0.0  # time.monotonic() of the connection's last answer

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context, made on first use (a plain connection never needs one)."""
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    # --- connection ---------------------------------------------------------------------------

    def _connect(self) -> smtplib.SMTP:
        where = f"{self.host}:{self.port}"
        conn: smtplib.SMTP | None = None
        try:
            if self.security == "tls":
                conn = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=self.ssl_context
                )
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            conn.ehlo()
            if self.security == "starttls":
                conn.starttls(context=self.ssl_context)
                conn.ehlo()
            if self.username:
                conn.login(self.username, self.password)
        except smtplib.SMTPAuthenticationError as err:
            # A refused login is the configuration's fault, not the message's: retry later.
            _quietly_close(conn)
            raise MailTransient(f"The SMTP server {where} refused the login: {err}") from err
        except smtplib.SMTPNotSupportedError as err:
            _quietly_close(conn)
            raise MailTransient(f"The SMTP server {where} does not support {err}") from err
        except (smtplib.SMTPException, OSError) as err:
            _quietly_close(conn)
            raise MailTransient(f"Cannot reach the SMTP server {where}: {err}") from err
        return conn

    def _connection(self) -> smtplib.SMTP:
        """The open connection if it was just used or still answers NOOP, else a new one."""
        if self._conn is not None and time.monotonic() - self._used_at < CHECK_AFTER_IDLE:
            return self._conn
        if self._conn is not None:
            try:
                code, _ = self._conn.noop()
            except (smtplib.SMTPException, OSError):
                code = -1
            if code == 250:
                self._used_at = time.monotonic()
                return self._conn
            self.close()
        self._conn = self._connect()
        self._used_at = time.monotonic()
        return self._conn

    def check(self) -> None:
        """Connect, greet and log in (for ``syncd doctor``); raises MailError if it cannot."""
        self._connection()

    def close(self) -> None:
        """Say QUIT and close the connection, if one is open."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            _quietly_close(conn)

    # --- sending ------------------------------------------------------------------------------

    def send(self, message: EmailMessage, recipients: Sequence[str]) -> None:
        """Deliver ``message`` to ``recipients``; every recipient must be accepted."""
        if not recipients:
            raise MailPermanent("A message needs at least one recipient.")
        envelope_from = _envelope_from(message)
        data = wire_bytes(message)
        conn = self._connection()
        step = "MAIL FROM"
        try:
            try:
                code, reply = conn.mail(envelope_from)
            except (smtplib.SMTPServerDisconnected, OSError):
                # A kept connection the server closed meanwhile: nothing was sent on it.
                self._drop()
                conn = self._conn = self._connect()
                code, reply = conn.mail(envelope_from)
            if code != 250:
                raise _reply_error(step, code, reply)
            step = "RCPT TO"
            refused: list[tuple[str, int, bytes]] = []
            for rcpt in recipients:
                code, reply = conn.rcpt(rcpt)
                if code not in (250, 251):
                    refused.append((rcpt, code, reply))
            if refused:
                # Deliver to all or none: a partial delivery would be repeated on the retry.
                permanent = [r for r in refused if r[1] >= 500]
                rcpt, code, reply = (permanent or refused)[0]
                raise _reply_error(f"RCPT TO <{rcpt}>", code, reply)
            step = "DATA"
            code, reply = conn.docmd("DATA")
            if code != 354:
                raise _reply_error(step, code, reply)
            step = "end of data"
            code, reply = _send_body(conn, data)
            if code != 250:
                raise _reply_error(step, code, reply)
            self._used_at = time.monotonic()
        except (MailTransient, MailPermanent):
            self._reset()
            raise
        except UnicodeEncodeError as err:
            self._reset()
            raise MailPermanent(f"SMTP {step}: the address is not ASCII ({err})") from err
        except (smtplib.SMTPServerDisconnected, OSError) as err:
            self._drop()
            if step == "end of data":
                raise MailMaybeDelivered(
                    f"The SMTP connection dropped after the message was sent ({err}); "
                    "it may have been delivered"
                ) from err
            raise MailTransient(f"The SMTP connection dropped at {step}: {err}") from err
        except smtplib.SMTPResponseException as err:
            self._drop()
            raise _reply_error(step, err.smtp_code, err.smtp_error) from err
        except smtplib.SMTPException as err:
            self._drop()
            raise MailTransient(f"SMTP failed at {step}: {err}") from err

    def _reset(self) -> None:
        """After a refused envelope: RSET so the connection can be reused, or drop it."""
        if self._conn is None:
            return
        try:
            code, _ = self._conn.rset()
        except (smtplib.SMTPException, OSError):
            code = -1
        if code != 250:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        _quietly_close(conn)

    def __enter__(self) -> SmtpMailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _send_body(conn: smtplib.SMTP, data: bytes) -> tuple[int, bytes]:
    """The message data after a 354, dot-stuffed, and the server's final answer."""
    body = _LEADING_DOT.sub(b"..", data)
    if body[-2:] != b"\r\n":
        body += b"\r\n"
    conn.send(body + b".\r\n")
    return conn.getreply()


def _envelope_from(message: EmailMessage) -> str:
    value = str(message.get("Sender") or message.get("From") or "")
    pairs = getaddresses([value])
    if not pairs or not pairs[0][1]:
        raise MailPermanent(f"The message has no usable From address ({value!r}).")
    return pairs[0][1]


def _quietly_close(conn: smtplib.SMTP | None) -> None:
    if conn is None:
        return
    with contextlib.suppress(OSError):
        conn.close()
