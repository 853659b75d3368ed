"""The "choose a new time" link, derived when it is needed and never stored.

The database keeps a reference (the choice-token row's id and its session) and the SHA-256
of the token; the token itself is ``HMAC-SHA256(link secret, reference)``, computed when the
email is composed (and again for every retry: the same link each time). The link secret
lives outside the database (``[web] link_secret_file`` / ``link_secret_credential``, or a
generated file in the state folder), so a database dump alone never yields a working link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

#: The payload key of an outbox row that carries a link: ``{"id": int, "session": str}``.
LINK_REF = "link_ref"
#: The base the link is built on (``<public_url>/choose/``), kept with the reference.
LINK_BASE = "link_base"

LinkKey = Callable[[], bytes]


def token_hash(raw: str) -> str:
    """The SHA-256 of a link token: the only form of it the database keeps."""
    return hashlib.sha256(raw.encode()).hexdigest()


def derive_token(key: bytes, token_id: int, session_id: str) -> str:
    """The raw token of choice-token row ``token_id`` (43 URL-safe characters, 256 bits)."""
    message = f"syncd choose-link v1\x00{token_id}\x00{session_id}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def link_extra(public_url: str, token_id: int, session_id: str) -> dict[str, Any]:
    """What an outbox row keeps so that the link can be derived when it is composed."""
    return {
        LINK_REF: {"id": token_id, "session": session_id},
        LINK_BASE: f"{public_url.rstrip('/')}/choose/",
    }


def link_of(payload: dict[str, Any], key: LinkKey | None) -> str:
    """The link an email carries: derived from the row's reference, or "" if it has none."""
    ref = payload.get(LINK_REF)
    if isinstance(ref, dict) and key is not None:
        token = derive_token(key(), int(ref["id"]), str(ref["session"]))
        return f"{payload.get(LINK_BASE, '')}{token}"
    # Rows written before links were derived, and the documentation examples.
    return str(payload.get("link") or "")
