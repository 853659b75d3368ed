"""The email of a gesture builds once what every email shares (issue 11, goal 1).

``email.headerregistry.HeaderRegistry`` makes a new class with ``type()`` for every header it
parses, and parses the same Content-Type of every part of every email again; syncd's
emails are built with a registry that makes one class per header name and parses each MIME
structure header value once, and the email is the same as the standard policy makes it.
"""

from __future__ import annotations

import email.policy
import re
from datetime import UTC, datetime
from email.headerregistry import ContentTypeHeader, HeaderRegistry
from email.message import EmailMessage
from typing import Any

import pytest

from syncd.notify import compose as compose_mod
from syncd.notify.emaildocs import EXAMPLES

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
SENDER = "Bookings Ü <bookings@example.com>"


def _message(kind: str, message_id: str = "<outbox-1@h>") -> EmailMessage:
    return compose_mod.compose(
        EXAMPLES[kind], kind, "Ann Weber <ann@example.org>", message_id, SENDER, now=NOW
    )


def _mail(kind: str) -> bytes:
    """The email as the SMTP adapter sends it."""
    return _message(kind).as_bytes(policy=email.policy.SMTP)


def _header_classes_made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, the header names the standard registry makes a class for."""
    made: list[str] = []
    plain = HeaderRegistry.__getitem__

    def counting(self: HeaderRegistry, name: str) -> Any:
        made.append(name)
        return plain(self, name)

    monkeypatch.setattr(HeaderRegistry, "__getitem__", counting)
    return made


def test_a_second_email_makes_no_header_class(monkeypatch: pytest.MonkeyPatch) -> None:
    _message("rescheduled")  # every header name seen once
    made = _header_classes_made(monkeypatch)
    _message("rescheduled", "<outbox-2@h>")
    assert made == []  # (serializing under policy.SMTP is the adapter's, not measured here)


def test_a_second_email_parses_none_of_its_mime_structure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _message("rescheduled")
    parsed: list[str] = []
    plain = ContentTypeHeader.parse.__func__  # type: ignore[attr-defined]

    def counting(cls: type[ContentTypeHeader], value: str, kwds: dict[str, Any]) -> None:
        parsed.append(value)
        plain(cls, value, kwds)

    monkeypatch.setattr(ContentTypeHeader, "parse", classmethod(counting))
    _message("rescheduled", "<outbox-2@h>")
    assert parsed == []


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_the_email_is_the_one_the_standard_policy_makes(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = _mail(kind)
    monkeypatch.setattr(compose_mod, "POLICY", email.policy.default)
    standard = _mail(kind)

    def boundaries(b: bytes) -> bytes:
        return re.sub(rb"=+_?\d{19}==", b"BOUNDARY", b)

    assert boundaries(ours) == boundaries(standard)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_the_smtp_adapter_sends_the_bytes_policy_smtp_makes(kind: str) -> None:
    from adapters.smtp import wire_bytes

    message = _message(kind)
    assert wire_bytes(message) == message.as_bytes(policy=email.policy.SMTP)


def test_sending_an_email_makes_no_header_class(monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.smtp import wire_bytes

    wire_bytes(_message("rescheduled"))
    message = _message("rescheduled", "<outbox-2@h>")
    made = _header_classes_made(monkeypatch)
    wire_bytes(message)
    assert made == []


def test_a_content_holding_the_fixed_boundary_gets_another() -> None:
    fixed = compose_mod.ALTERNATIVE_BOUNDARY
    assert compose_mod._boundary(fixed, "hello", b"BEGIN:VCALENDAR") == fixed
    other = compose_mod._boundary(fixed, "hello", f"x\n--{fixed}\ny")
    assert other != fixed and other.startswith("=_syncd_")
    assert compose_mod._boundary(fixed, f"--{fixed}--".encode()) != fixed


@pytest.mark.parametrize(
    "name", ["--=_syncd_alternative_0", "--=_syncd_mixed_0--", 'Ann "Cancel:" Weber\u2019s ^']
)
def test_a_hostile_customer_name_keeps_the_email_whole(name: str) -> None:
    payload = {**EXAMPLES["rescheduled"]}
    payload["session"] = {
        **payload["session"],
        "customer": {**payload["session"]["customer"], "name": name},
    }
    msg = compose_mod.compose(payload, "rescheduled", "ann@example.org", "<o-1@h>", SENDER, now=NOW)
    back = email.message_from_bytes(
        msg.as_bytes(policy=email.policy.SMTP), policy=email.policy.default
    )
    assert isinstance(back, EmailMessage)
    alternative, attachment = list(back.iter_parts())
    parts = list(alternative.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html", "text/calendar"]
    assert attachment.get_filename() == "invite.ics"
    assert f"Hello {name}," in parts[0].get_content()
    assert str(back["To"].addresses[0].display_name) == name


def test_an_admin_email_is_text_and_html() -> None:
    msg = _message("gesture_undone")
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["MIME-Version"] == "1.0"
