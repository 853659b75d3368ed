"""A real SMTP server (aiosmtpd) on 127.0.0.1 for any test suite, keeping what it receives.

``start_smtp(port=0, handler_mode="accept")`` starts one in a background thread; ``port=0``
picks a free port (pass a port again to bring a stopped server "back" on the same one).
``.messages`` holds every received message parsed back as an
:class:`email.message.EmailMessage`, ``.envelopes`` the (MAIL FROM, RCPT TO) pairs.

``.mode`` switches how it answers (settable at any time; ``fail_next(mode, times)`` for a
limited number of transactions, then back to ``accept``):

- ``accept``: 250 to everything;
- ``421``: 421 to the end of the message data (a temporary failure; nothing kept);
- ``550``: 550 to RCPT TO (a permanent refusal; nothing kept);
- ``drop``: keeps the message, then closes the connection without the final 250, so the
  client sees a disconnect although the message was received (the duplicate case).

``security="starttls"`` or ``"tls"`` (implicit TLS) serve a self-signed certificate for
127.0.0.1 (``tls_client_context()`` trusts it); ``login=("user", "pw")`` requires AUTH.
"""

from __future__ import annotations

import atexit
import datetime as dt
import ipaddress
import shutil
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

MODES = ("accept", "421", "550", "drop")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SmtpServer:
    """A running aiosmtpd server and what it received."""

    port: int
    mode: str = "accept"
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    transactions: int = 0
    _controller: Controller | None = field(default=None, repr=False)
    _remaining: int | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail_next(self, mode: str, times: int = 1) -> None:
        """Answer the next ``times`` transactions with ``mode``, then accept again."""
        assert mode in MODES, mode
        with self._lock:
            self.mode, self._remaining = mode, times

    def message_ids(self) -> list[str]:
        """The Message-ID header of every received message, in order."""
        return [str(m["Message-ID"]) for m in self.messages]

    def stop(self) -> None:
        """Stop listening (connections are then refused); idempotent."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    # --- called from the server's event loop ---------------------------------------------

    def _current_mode(self, consume: bool) -> str:
        with self._lock:
            mode = self.mode
            if consume and self._remaining is not None:
                self._remaining -= 1
                if self._remaining <= 0:
                    self.mode, self._remaining = "accept", None
            return mode


_CERT: tuple[str, str] | None = None


def _certificate() -> tuple[str, str]:
    """(cert path, key path) of a self-signed certificate for 127.0.0.1, made once."""
    global _CERT
    if _CERT is None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        folder = tempfile.mkdtemp(prefix="syncd-smtp-tls-")
        atexit.register(shutil.rmtree, folder, True)  # was left in /tmp by every run
        cert_path, key_path = f"{folder}/cert.pem", f"{folder}/key.pem"
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        _CERT = (cert_path, key_path)
    return _CERT


def tls_client_context() -> ssl.SSLContext:
    """A client context that trusts (only) the test servers' self-signed certificate."""
    return ssl.create_default_context(cafile=_certificate()[0])


def _server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*_certificate())
    return ctx


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.server._current_mode(consume=False) == "550":
            self.server._current_mode(consume=True)
            self.server.transactions += 1
            return f"550 5.1.1 <{address}>: Recipient address rejected: no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mode = self.server._current_mode(consume=True)
        self.server.transactions += 1
        if mode == "421":
            return "421 4.3.2 Service not available, closing transmission channel"
        raw: bytes = envelope.original_content
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.server.messages.append(parsed)
        self.server.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        if mode == "drop":
            # Received, but the client never hears the 250 (the reply below goes nowhere).
            server.transport.close()
        return "250 OK"


def start_smtp(
    port: int = 0,
    *,
    handler_mode: str = "accept",
    security: str = "none",
    login: tuple[str, str] | None = None,
) -> SmtpServer:
    """Start a server on 127.0.0.1 (``port=0``: a free one); stop it with ``.stop()``."""
    assert handler_mode in MODES, handler_mode
    assert security in ("none", "starttls", "tls"), security
    srv = SmtpServer(port=port or free_port(), mode=handler_mode)
    kwargs: dict[str, Any] = {}
    if security == "starttls":
        kwargs.update(tls_context=_server_context(), require_starttls=True)
    elif security == "tls":
        kwargs.update(ssl_context=_server_context())
    if login is not None:

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            wanted = (login[0].encode(), login[1].encode())
            ok = isinstance(data, LoginPassword) and (data.login, data.password) == wanted
            return AuthResult(success=ok, handled=False)

        # aiosmtpd only counts STARTTLS as TLS; with implicit TLS the socket is encrypted too.
        kwargs.update(
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=security == "starttls",
        )
    controller = Controller(_Handler(srv), hostname="127.0.0.1", port=srv.port, **kwargs)
    controller.start()
    srv._controller = controller
    return srv
