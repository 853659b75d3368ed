"""Composition: an outbox row's payload becomes one email, text + HTML (+ iTIP).

Templates are Jinja2 files in ``syncd/notify/templates/`` named ``<kind>.subject``,
``<kind>.txt`` and ``<kind>.html`` (the HTML ones extend ``base.html``, the text ones
``base.txt``). A folder given as ``[smtp] templates`` is searched first, so an operator can
override any single file. HTML is autoescaped; text and subjects are not.

Customer times are shown in the customer's zone, with the zone named; admin times in the
admin's zone. Every customer email about a time carries an iTIP part (RFC 5546, RFC 6047)
with the UID of the mirrored event, so the customer's own calendar follows:

- booked, rescheduled, confirmed: ``METHOD:REQUEST``, ``STATUS:CONFIRMED``;
- canceled: ``METHOD:CANCEL``, ``STATUS:CANCELLED``;
- choose: ``METHOD:REQUEST`` with ``STATUS:TENTATIVE`` and ``TRANSP:TRANSPARENT`` at the old
  time: the customer's calendar shows the session as "not settled" until they pick a time
  (the "confirmed" email then moves it). The single-use link is never put into the iTIP
  part, only into the email body, so it does not spread into calendars.

``python -m syncd.notify.compose --docs`` prints ``docs/EMAILS.md`` (every email as its
reader sees it, rendered from :data:`syncd.notify.emaildocs.EXAMPLES`).
"""

from __future__ import annotations

import functools
import re
import secrets
from datetime import UTC, datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage, MIMEPart
from email.policy import EmailPolicy
from email.utils import format_datetime, getaddresses
from pathlib import Path
from typing import Any

from icalendar import Calendar, Event, vCalAddress, vText
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

from syncd.domain.icstext import escaped, lines_bytes
from syncd.domain.model import CUSTOMER_NOTICES, NoticeKind
from syncd.domain.timefmt import human, local
from syncd.domain.validate import plain_text
from syncd.notify.links import LinkKey, link_of

TEMPLATES = Path(__file__).parent / "templates"
PRODID = "-//syncd//syncd 1.0//EN"

# kind -> (METHOD, STATUS, PARTSTAT of the customer)
ITIP: dict[str, tuple[str, str, str]] = {
    NoticeKind.BOOKED.value: ("REQUEST", "CONFIRMED", "ACCEPTED"),
    NoticeKind.RESCHEDULED.value: ("REQUEST", "CONFIRMED", "ACCEPTED"),
    NoticeKind.CONFIRMED.value: ("REQUEST", "CONFIRMED", "ACCEPTED"),
    NoticeKind.CANCELED.value: ("CANCEL", "CANCELLED", "ACCEPTED"),
    NoticeKind.CHOOSE.value: ("REQUEST", "TENTATIVE", "TENTATIVE"),
}

_ENVS: dict[str | None, Environment] = {}


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, with each header's class made once, not per header.

    ``HeaderRegistry`` builds a new class with ``type()`` for every header it parses;
    the classes are stateless, so one per header name serves every message.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._made.get(key)
        if cls is None:
            cls = self._made[key] = super().__getitem__(name)
        return cls

    def __call__(self, name: str, value: str) -> BaseHeader:
        """The header; the MIME structure's (the same few values in every email) parsed once.

        A parsed header is an immutable ``str``, so one serves every message that has it.
        """
        if name.lower() in _STRUCTURE:
            return _structure_header(self, name, value)
        return super().__call__(name, value)


#: The headers of the parts of an email, and the fixed ones of every email: their values
#: repeat from one email to the next.
_STRUCTURE = frozenset(
    {
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "mime-version",
        "auto-submitted",
    }
)


@functools.lru_cache(maxsize=128)
def _structure_header(registry: _HeaderClasses, name: str, value: str) -> BaseHeader:
    return HeaderRegistry.__call__(registry, name, value)


class _Policy(EmailPolicy):
    """``email.policy.default`` whose headers fold once per value.

    The generator folds every header of every part of every email; most are the same
    few values each time (the parts' Content-Type and encoding, From, Reply-To), and a
    fold depends only on the header's name, class, value and the policy's line rules.
    """

    def fold_binary(self, name: str, value: Any) -> bytes:
        key = (name, type(value), str(value), self.linesep, self.max_line_length,
               self.utf8, self.cte_type, self.refold_source)  # fmt: skip
        folded = _FOLDS.get(key)
        if folded is None:
            folded = super().fold_binary(name, value)
            if len(_FOLDS) >= 4096:
                _FOLDS.clear()
            _FOLDS[key] = folded
        return folded


_FOLDS: dict[tuple[Any, ...], bytes] = {}

#: ``email.policy.default`` with :class:`_HeaderClasses` and folds made once: what every
#: email is built with.
_POLICY = _Policy(header_factory=_HeaderClasses())
POLICY: EmailPolicy = _POLICY


def environment(templates_dir: str | None = None) -> Environment:
    """The Jinja2 environment: ``templates_dir`` first, then the built-in templates."""
    key = str(Path(templates_dir).resolve()) if templates_dir else None
    env = _ENVS.get(key)
    if env is None:
        loaders = [FileSystemLoader(key)] if key else []
        loaders.append(FileSystemLoader(str(TEMPLATES)))
        env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        env.filters["human"] = lambda iso, tz: human(_instant(iso), tz)
        env.filters["short"] = lambda iso, tz: short(_instant(iso), tz)
        _ENVS[key] = env
    return env


def short(instant: datetime, tz: str) -> str:
    """The subject-line form of a time, e.g. ``Tue 1 Dec, 16:00 CET``."""
    t = local(instant, tz)
    return f"{t:%a} {t.day} {t:%b}, {t:%H:%M} {t.tzname()}"


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def context(payload: dict[str, Any], kind: str, link_key: LinkKey | None = None) -> dict[str, Any]:
    """The template variables of one email (every time already formatted).

    The admin's words (a reason, a message) are one line of plain text here whatever the
    calendar sent (Google's editor writes HTML); the link is derived under ``link_key``.
    """
    data: dict[str, Any] = dict(payload.get("data") or {})
    session: dict[str, Any] | None = payload.get("session")
    admin: dict[str, Any] = (session or {}).get("admin") or payload.get("admin") or {}
    admin_tz = admin.get("tz") or "UTC"
    ctx: dict[str, Any] = {
        "kind": kind,
        "to_admin": kind not in {k.value for k in CUSTOMER_NOTICES},
        "data": data,
        "admin_name": admin.get("name") or admin.get("email") or "your host",
        "admin_email": admin.get("email", ""),
        "admin_tz": admin_tz,
        "reason": plain_text(data.get("reason") or (session or {}).get("cancel_reason") or ""),
        "message": plain_text(data.get("message") or ""),
        "what": data.get("what") or "",
        "link": link_of(payload, link_key),
        "calendar": data.get("calendar") or "",
    }
    if session is not None:
        cust = session["customer"]
        tz = cust.get("tz") or "UTC"
        start, end = _instant(session["start"]), _instant(session["end"])
        ctx.update(
            session_id=session["id"],
            customer_name=cust.get("name") or cust["email"],
            customer_email=cust["email"],
            customer_tz=tz,
            when=human(start, tz),
            short_when=short(start, tz),
            when_admin=human(start, admin_tz),
            short_when_admin=short(start, admin_tz),
            minutes=int((end - start).total_seconds() // 60),
            old_when=human(_instant(data["old_start"]), tz) if data.get("old_start") else "",
            old_when_admin=(
                human(_instant(data["old_start"]), admin_tz) if data.get("old_start") else ""
            ),
            expires=human(_instant(data["expires"]), tz) if data.get("expires") else "",
            expires_admin=(
                human(_instant(data["expires"]), admin_tz) if data.get("expires") else ""
            ),
        )
    sessions = data.get("sessions") or []
    ctx["count"] = data.get("count", len(sessions))
    ctx["sessions"] = [
        {
            "id": s.get("id", ""),
            "customer": s.get("customer", ""),
            "when": human(_instant(s["start"]), admin_tz) if s.get("start") else "",
        }
        for s in sessions
    ]
    cal_id = data.get("calendar_id", data.get("calendar", ""))
    ctx["release_command"] = f"syncd breaker release {cal_id}"
    ctx["restore_command"] = f"syncd breaker restore {cal_id}"
    return ctx


def render(
    payload: dict[str, Any],
    kind: str,
    templates_dir: str | None = None,
    link_key: LinkKey | None = None,
) -> tuple[str, str, str]:
    """``(subject, text, html)`` of one email."""
    return _render(context(payload, kind, link_key), kind, templates_dir)


def _render(values: dict[str, Any], kind: str, templates_dir: str | None) -> tuple[str, str, str]:
    env = environment(templates_dir)
    values = dict(values)
    subject = " ".join(env.get_template(f"{kind}.subject").render(values).split())
    values["subject"] = subject
    text = env.get_template(f"{kind}.txt").render(values)
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"
    html = env.get_template(f"{kind}.html").render(values)
    return subject, text, html


def itip(
    payload: dict[str, Any], kind: str, sender: str, now: datetime | None = None
) -> tuple[str, bytes] | None:
    """``(METHOD, VCALENDAR bytes)`` of a customer email, or None for admin emails.

    Written directly, byte for byte what :func:`itip_with_library` writes (the library's
    property order, parameter quoting, TEXT escaping and folding; tests/unit/test_itip.py
    compares the two): it was a quarter of the cost of an email. A name or address with a
    character the parameter rules rewrite (``"``, ``^``, a line break, a control
    character) goes through the library.
    """
    if kind not in ITIP or "session" not in payload:
        return None
    method, status, partstat = ITIP[kind]
    session = payload["session"]
    cust = session["customer"]
    sender_name, sender_addr = _address(sender)
    cust_name = cust.get("name") or cust["email"]
    if not all(_plain_param(v) for v in (sender_name, sender_addr, cust_name, cust["email"])):
        return method, itip_with_library(payload, kind, sender, now)
    stamp, start, end = (
        f"{t.astimezone(UTC):%Y%m%dT%H%M%SZ}"
        for t in (now or datetime.now(UTC), _instant(session["start"]), _instant(session["end"]))
    )
    organizer = f"ORGANIZER;CN={_cn(sender_name)}" if sender_name else "ORGANIZER"
    lines = (
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{escaped(PRODID)}",
        f"METHOD:{method}",
        "BEGIN:VEVENT",
        f"SUMMARY:{escaped(_summary(session, kind))}",
        f"DTSTART:{start}",
        f"DTEND:{end}",
        f"DTSTAMP:{stamp}",
        f"UID:{escaped(session['uid'])}",
        f"SEQUENCE:{int(session.get('sequence', 0))}",
        f"ATTENDEE;CN={_cn(cust_name)};PARTSTAT={partstat};ROLE=REQ-PARTICIPANT;RSVP=FALSE"
        f":mailto:{cust['email']}",
        f"{organizer}:mailto:{sender_addr}",
        f"STATUS:{status}",
        f"TRANSP:{'TRANSPARENT' if status == 'TENTATIVE' else 'OPAQUE'}",
        "END:VEVENT",
        "END:VCALENDAR",
    )
    return method, lines_bytes(lines)


#: What the parameter rules of RFC 5545/6868 rewrite or forbid in a value.
_PARAM_SPECIAL = re.compile('[\x00-\x1f\x7f"^\\\\]')


def _plain_param(value: str) -> bool:
    return _PARAM_SPECIAL.search(value) is None


def _cn(value: str) -> str:
    """A CN parameter value as ``icalendar`` writes it: quoted when it holds a space, a
    quote or a separator."""
    return f'"{value}"' if any(c in value for c in " ',;:\u2019") else value


def _summary(session: dict[str, Any], kind: str) -> str:
    admin_name = (session.get("admin") or {}).get("name") or "your host"
    summary = f"Session with {admin_name}"
    if kind == NoticeKind.CHOOSE.value:
        summary += " (choose a new time)"
    return summary


def itip_with_library(
    payload: dict[str, Any], kind: str, sender: str, now: datetime | None = None
) -> bytes:
    """The iTIP part through ``icalendar`` (what :func:`itip` must equal)."""
    method, status, partstat = ITIP[kind]
    session = payload["session"]
    cust = session["customer"]
    sender_name, sender_addr = _address(sender)
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("method", method)
    event = Event()
    event.add("uid", session["uid"])
    event.add("sequence", int(session.get("sequence", 0)))
    event.add("dtstamp", (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0))
    event.add("dtstart", _instant(session["start"]).astimezone(UTC))
    event.add("dtend", _instant(session["end"]).astimezone(UTC))
    event.add("summary", _summary(session, kind))
    event.add("status", status)
    event.add("transp", "TRANSPARENT" if status == "TENTATIVE" else "OPAQUE")
    organizer = vCalAddress(f"mailto:{sender_addr}")
    if sender_name:
        organizer.params["CN"] = vText(sender_name)
    event.add("organizer", organizer)
    attendee = vCalAddress(f"mailto:{cust['email']}")
    attendee.params["CN"] = vText(cust.get("name") or cust["email"])
    attendee.params["ROLE"] = vText("REQ-PARTICIPANT")
    attendee.params["PARTSTAT"] = vText(partstat)
    attendee.params["RSVP"] = vText("FALSE")
    event.add("attendee", attendee)
    cal.add_component(event)
    return bytes(cal.to_ical())


@functools.lru_cache(maxsize=256)
def _address(value: str) -> tuple[str, str]:
    pairs = getaddresses([value])
    if not pairs or not pairs[0][1]:
        raise ValueError(f"{value!r} is not an email address")
    return pairs[0]


def _header_address(value: str) -> Address:
    name, addr = _address(value)
    user, _, domain = addr.rpartition("@")
    return Address(display_name=name, username=user, domain=domain)


@functools.lru_cache(maxsize=256)
def _address_header(name: str, value: str) -> BaseHeader:
    """A From or Reply-To header (the same few values in every email), parsed once."""
    header: BaseHeader = _POLICY.header_factory(name, _header_address(value))
    return header


#: The boundaries of every email's two multiparts. A line that starts ``--=_`` cannot occur
#: in a quoted-printable part (``=`` is written ``=3D`` there), a base64 one (no ``_``), or
#: the 7bit iTIP part (every content line starts with a property name or, folded, a space);
#: the parts are checked all the same (:func:`_boundary`). Fixed, they let the headers that
#: name them be parsed once for all emails, and the generator skip its search for one.
MIXED_BOUNDARY = "=_syncd_mixed_0"
ALTERNATIVE_BOUNDARY = "=_syncd_alternative_0"


def _boundary(fixed: str, *contents: str | bytes) -> str:
    """``fixed``, or a random boundary should any content hold it."""
    marker = "--" + fixed
    for content in contents:
        text = content.decode("ascii", "replace") if isinstance(content, bytes) else content
        if marker in text:
            return f"=_syncd_{secrets.token_hex(16)}"
    return fixed


def _part(policy: EmailPolicy, content: str | bytes, **kw: Any) -> MIMEPart:
    part = MIMEPart(policy=policy)
    part.set_content(content, **kw)
    return part


def _multipart(msg: MIMEPart, subtype: str, boundary: str, parts: list[MIMEPart]) -> None:
    msg["Content-Type"] = f'multipart/{subtype}; boundary="{boundary}"'
    for part in parts:
        msg.attach(part)


def compose(
    row_payload: dict[str, Any],
    kind: str,
    recipient: str,
    message_id: str,
    sender: str,
    templates_dir: str | None = None,
    *,
    now: datetime | None = None,
    link_key: LinkKey | None = None,
) -> EmailMessage:
    """The email of one outbox row, ready for :meth:`syncd.ports.Mailer.send`.

    ``message_id`` is the row's (identical on every retry); ``sender`` is ``[smtp] from``;
    ``link_key`` gives the link secret the row's "choose a new time" link is derived under.
    Customer emails about a time are ``multipart/mixed``: a ``multipart/alternative`` of
    text/plain, text/html and ``text/calendar; method=...``, then ``invite.ics``; other
    emails are the ``multipart/alternative`` of text and HTML.
    """
    values = context(row_payload, kind, link_key)
    subject, text, html = _render(values, kind, templates_dir)
    policy = POLICY
    msg = EmailMessage(policy=policy)
    msg["From"] = _address_header("From", sender) if policy is _POLICY else _header_address(sender)
    to = _header_address(recipient)
    if not values["to_admin"] and "session" in row_payload:
        name = row_payload["session"]["customer"].get("name") or ""
        to = Address(display_name=name, username=to.username, domain=to.domain)
        admin_email = values["admin_email"]
        if admin_email:
            reply_to = f"{values['admin_name']} <{admin_email}>"
            msg["Reply-To"] = (
                _address_header("Reply-To", reply_to)
                if policy is _POLICY
                else _header_address(reply_to)
            )
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"
    msg["MIME-Version"] = "1.0"
    qp: dict[str, Any] = {"charset": "utf-8", "cte": "quoted-printable"}
    alternatives = [
        _part(policy, text, subtype="plain", **qp),
        _part(policy, html, subtype="html", **qp),
    ]
    part = itip(row_payload, kind, sender, now)
    if part is None:
        _multipart(msg, "alternative", _boundary(ALTERNATIVE_BOUNDARY, text, html), alternatives)
        return msg
    method, ics = part
    # icalendar folds lines at 75 octets: pure ASCII goes as 7bit, like most calendar
    # servers send it; anything else as base64 (iTIP parsers handle it best).
    alternatives.append(
        _part(
            policy,
            ics,
            maintype="text",
            subtype="calendar",
            cte="7bit" if ics.isascii() else "base64",
            params={"method": method, "charset": "utf-8"},
        )
    )
    alternative = MIMEPart(policy=policy)
    _multipart(
        alternative,
        "alternative",
        _boundary(ALTERNATIVE_BOUNDARY, text, html, ics),
        alternatives,
    )
    attachment = _part(
        policy, ics, maintype="application", subtype="ics", disposition="attachment",
        filename="invite.ics",
    )  # fmt: skip
    _multipart(msg, "mixed", _boundary(MIXED_BOUNDARY, text, html, ics), [alternative, attachment])
    return msg


__all__ = ["ITIP", "compose", "context", "itip", "render", "short"]
