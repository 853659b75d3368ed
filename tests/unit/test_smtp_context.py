"""The SMTP adapter makes its TLS context only when a connection needs one (issue 11)."""

from __future__ import annotations

import ssl

import pytest

from adapters.smtp import SmtpMailer


def test_a_plain_mailer_makes_no_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    real = ssl.create_default_context

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    SmtpMailer("127.0.0.1", 25, "none")
    assert made == []
    tls = SmtpMailer("127.0.0.1", 465, "tls")
    assert isinstance(tls.ssl_context, ssl.SSLContext) and made == [1]
    assert tls.ssl_context is tls.ssl_context and made == [1]  # made once, then kept
