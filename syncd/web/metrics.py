"""``/metrics`` in the Prometheus text exposition format (version 0.0.4), no dependency.

Every known status is always present (as 0 when there is none) so alert rules never see a
series disappear. When the database does not answer, ``syncd_database_up`` is 0 and the
database-backed series are left out; ``syncd_up`` stays 1 while the process lives.
"""

from __future__ import annotations

import logging

from syncd.domain.model import Status
from syncd.notify.outbox import STATUSES as OUTBOX_STATUSES
from syncd.store.context import Context
from syncd.web.queries import Counts, counts

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        if labels:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            self.lines.append(f"{name}{{{inner}}} {value:g}")
        else:
            self.lines.append(f"{name} {value:g}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(c: Counts | None) -> str:
    """The exposition text for ``c`` (``None``: the database did not answer)."""
    w = _Writer()
    w.metric("syncd_up", "gauge", "1 while the syncd process is alive.")
    w.sample("syncd_up", 1)
    w.metric("syncd_database_up", "gauge", "1 when the database answered this scrape.")
    w.sample("syncd_database_up", 0 if c is None else 1)
    if c is None:
        return w.text()
    w.metric("syncd_sessions", "gauge", "Sessions by status.")
    for status in sorted({s.value for s in Status} | set(c.sessions)):
        w.sample("syncd_sessions", c.sessions.get(status, 0), {"status": status})
    w.metric("syncd_outbox_rows", "gauge", "Outbox rows (emails) by status.")
    for status in sorted(set(OUTBOX_STATUSES) | set(c.outbox)):
        w.sample("syncd_outbox_rows", c.outbox.get(status, 0), {"status": status})
    w.metric("syncd_calendars", "gauge", "Calendars configured.")
    w.sample("syncd_calendars", c.calendars)
    w.metric("syncd_calendars_with_error", "gauge", "Calendars whose last sync failed.")
    w.sample("syncd_calendars_with_error", c.calendars_with_error)
    w.metric("syncd_breakers_tripped", "gauge", "Calendars whose mass-deletion breaker is tripped.")
    w.sample("syncd_breakers_tripped", c.breakers_tripped)
    w.metric(
        "syncd_pending_gestures", "gauge", "Admin calendar gestures waiting (settle or breaker)."
    )
    w.sample("syncd_pending_gestures", c.pending_gestures)
    w.metric("syncd_held_gestures", "gauge", "Gestures held by a tripped breaker.")
    w.sample("syncd_held_gestures", c.held_gestures)
    return w.text()


def scrape(ctx: Context) -> str:
    """Read the counts and render them; a database failure is reported, never raised."""
    try:
        return render(counts(ctx))
    except Exception as err:  # a scrape must answer even when the database does not
        log.warning("metrics: the database did not answer: %s", err)
        return render(None)
