"""Whether the SMTP server answers, told to the log once per episode (not once per row).

While the server is down every due row fails and is retried with backoff; the log says so
once, when the first row fails, and once more when a message goes out again. The outbox rows
keep the details (``last_error``, shown by ``syncd status`` and ``syncd outbox list``).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from syncd.domain.timefmt import iso_utc

log = logging.getLogger(__name__)


class MailHealth:
    """The SMTP episode of this process: up, or down since the first failure."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.down_since: datetime | None = None
        self.failures = 0

    def failed(self, error: str, now: datetime) -> None:
        """A message could not be sent for a reason that may pass (server down, timeout)."""
        with self._lock:
            self.failures += 1
            if self.down_since is not None:
                return
            self.down_since = now
        log.warning(
            "mail: the SMTP server is failing; emails wait in the outbox and are retried "
            "(logged once until it recovers): %s",
            error,
        )

    def delivered(self, now: datetime) -> None:
        """A message went out: the episode, if any, is over."""
        with self._lock:
            since, failures = self.down_since, self.failures
            self.down_since, self.failures = None, 0
        if since is not None:
            log.info(
                "mail: the SMTP server answers again (failing since %s, %d failed attempts); "
                "sending resumed",
                iso_utc(since),
                failures,
            )


#: The process's own episode (the daemon's drains share it).
PROCESS = MailHealth()
