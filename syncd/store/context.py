"""The handle every use case gets: the database, the public URL, the policy defaults, a clock."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlparse

from syncd.domain.model import Policy
from syncd.store.db import Database

#: The link secret of a process that was not given one (tests, tools): random, so links it
#: derives never outlive the process. ``syncd`` itself always passes the configured one.
_PROCESS_KEY = secrets.token_bytes(32)


def process_key() -> bytes:
    """This process's own random link secret (see :attr:`Context.link_key`)."""
    return _PROCESS_KEY


def utcnow() -> datetime:
    """The wall clock, UTC."""
    return datetime.now(UTC)


@dataclass
class Context:
    """What every service needs: the database, the public URL and a clock."""

    db: Database
    public_url: str = "http://127.0.0.1:8080"
    policy: Policy = field(default_factory=Policy)
    clock: Callable[[], datetime] = utcnow
    #: The secret "choose a new time" links are derived under (read on first use).
    link_key: Callable[[], bytes] = process_key
    #: Whether the REST API answers (a token file is set): only then do events link to it.
    rest_api: bool = True

    @property
    def host(self) -> str:
        """The host of ``web.public_url``: the right-hand side of UIDs and Message-IDs."""
        return urlparse(self.public_url).hostname or "localhost"

    def uid(self, session_id: str) -> str:
        """The iCalendar UID of a session's event and of its emails' iTIP parts."""
        return f"syncd-{session_id}@{self.host}"

    def choose_link(self, token: str) -> str:
        """The customer's "choose a new time" link."""
        return f"{self.public_url.rstrip('/')}/choose/{token}"
