"""Values people type, checked at the door: names, messages, emails, lengths.

Everything here is refused with :class:`InvalidValue` (exit 2 on the command line, 422 on
the REST API) before it reaches the rules, the engine or an email. Text that syncd did not
get from a person's keyboard (an admin's words in a calendar event, possibly HTML from
Google's editor) is not refused but made plain by :func:`plain_text`.
"""

from __future__ import annotations

import html
import re
import unicodedata
from datetime import timedelta

from syncd.errors import UsageError

MAX_NAME = 200
MAX_TEXT = 2000
MAX_EMAIL = 320
MAX_SESSION = timedelta(hours=24)
MIN_SLOT = timedelta(minutes=5)
MAX_SLOT = timedelta(hours=24)

_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")  # fmt: skip
_BREAKS = re.compile(r"<\s*(?:br|/p|/div|/li|p|div|li)\b[^>]*>", re.IGNORECASE)
_TAGS = re.compile(r"<[^>]*>")


class InvalidValue(UsageError):
    """A value that can never be right (a control character in a name, a 19-year session)."""


def _control(text: str) -> str | None:
    """The first control character of ``text`` (CR, LF, tab, NUL, ...), or None."""
    return next((c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)


def one_line(text: str, what: str, *, required: bool = True, limit: int = MAX_TEXT) -> str:
    """``text`` stripped, if it is one line of printable text; else InvalidValue."""
    bad = _control(text)
    if bad is not None:
        kind = "a line break" if bad in "\r\n\u2028\u2029\x85" else "a control character"
        raise InvalidValue(f"The {what} must be one line of text; it contains {kind}.")
    value = text.strip()
    if required and not value:
        raise InvalidValue(f"The {what} must not be empty.")
    if len(value) > limit:
        raise InvalidValue(f"The {what} is too long (at most {limit} characters).")
    return value


def name(text: str, what: str = "customer name") -> str:
    """A person's name: one non-empty line of at most 200 characters."""
    return one_line(text, what, limit=MAX_NAME)


def email(text: str) -> str:
    """An email address, lowercased; ``notanemail`` and ``a b@c`` are refused."""
    value = text.strip().lower()
    if len(value) > MAX_EMAIL or not _EMAIL.fullmatch(value):
        raise InvalidValue(f'"{text[:80]}" is not an email address (e.g. ann@example.org).')
    return value


def session_length(length: timedelta) -> timedelta:
    """A session's length: more than zero, at most 24 hours, whole minutes."""
    if length <= timedelta(0):
        raise InvalidValue("A session must last at least one minute.")
    if length > MAX_SESSION:
        raise InvalidValue("A session can last at most 24 hours (1440 minutes).")
    if length.total_seconds() % 60:
        raise InvalidValue("A session lasts a whole number of minutes.")
    return length


def slot_length(slot: timedelta) -> timedelta:
    """The admin's slot length: whole minutes, from 5 minutes to 24 hours."""
    if slot.total_seconds() % 60 or not MIN_SLOT <= slot <= MAX_SLOT:
        raise InvalidValue("The slot length must be whole minutes from 5m to 24h (e.g. 60m).")
    return slot


def plain_text(text: str) -> str:
    """An admin's words from a calendar as one line of plain text (HTML tags and entities
    from Google's editor removed, line breaks and control characters made spaces)."""
    if "<" in text or "&" in text:
        text = html.unescape(_TAGS.sub("", _BREAKS.sub(" ", text)))
    cleaned = "".join(" " if _control(c) else c for c in text)
    return " ".join(cleaned.split())
