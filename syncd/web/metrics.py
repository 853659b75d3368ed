"""``/metrics`` through ``prometheus-client``: a collector reading the database per scrape.

``Exposition(ctx)`` owns its own ``CollectorRegistry`` (never the process-global one) with
one custom collector, ``SyncdCollector``, that reads ``syncd.web.queries.counts`` at scrape
time; ``generate_latest`` writes the text format (version 0.0.4).

Every known status is always present (as 0 when there is none) so alert rules never see a
series disappear. When the database does not answer, ``syncd_database_up`` is 0 and the
database-backed series are left out; ``syncd_up`` stays 1 while the process lives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from syncd.domain.model import Status
from syncd.notify.outbox import STATUSES as OUTBOX_STATUSES
from syncd.store.context import Context
from syncd.web.queries import Counts, counts

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _by_status(name: str, help_text: str, known: Iterable[str], seen: dict[str, int]) -> Metric:
    family = GaugeMetricFamily(name, help_text, labels=["status"])
    for status in sorted(set(known) | set(seen)):
        family.add_metric([status], seen.get(status, 0))
    return family


def families(c: Counts | None) -> Iterator[Metric]:
    """The metric families for ``c`` (``None``: the database did not answer)."""
    yield _gauge("syncd_up", "1 while the syncd process is alive.", 1)
    yield _gauge(
        "syncd_database_up", "1 when the database answered this scrape.", 0 if c is None else 1
    )
    if c is None:
        return
    yield _by_status("syncd_sessions", "Sessions by status.", (s.value for s in Status), c.sessions)
    yield _by_status(
        "syncd_outbox_rows", "Outbox rows (emails) by status.", OUTBOX_STATUSES, c.outbox
    )
    yield _gauge("syncd_calendars", "Calendars configured.", c.calendars)
    yield _gauge(
        "syncd_calendars_with_error", "Calendars whose last sync failed.", c.calendars_with_error
    )
    yield _gauge(
        "syncd_breakers_tripped",
        "Calendars whose mass-deletion breaker is tripped.",
        c.breakers_tripped,
    )
    yield _gauge(
        "syncd_pending_gestures",
        "Admin calendar gestures waiting (settle or breaker).",
        c.pending_gestures,
    )
    yield _gauge("syncd_held_gestures", "Gestures held by a tripped breaker.", c.held_gestures)


class SyncdCollector(Collector):
    """Reads the counts from the database on every ``collect`` (scrape time)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: registering must not read the database."""
        return []

    def collect(self) -> Iterable[Metric]:
        """The families of this moment; a database failure is reported, never raised."""
        try:
            c: Counts | None = counts(self.ctx)
        except Exception as err:  # a scrape must answer even when the database does not
            log.warning("metrics: the database did not answer: %s", err)
            c = None
        return list(families(c))


class _Fixed(Collector):
    def __init__(self, c: Counts | None) -> None:
        self.c = c

    def collect(self) -> Iterable[Metric]:
        return list(families(self.c))


def render(c: Counts | None) -> str:
    """The exposition text for fixed counts ``c`` (``None``: the database did not answer)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(c))
    return generate_latest(registry).decode("utf-8")


class Exposition:
    """A registry of its own holding one ``SyncdCollector`` for ``ctx``."""

    def __init__(self, ctx: Context) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SyncdCollector(ctx))

    def scrape(self) -> str:
        """The exposition text of this moment."""
        return generate_latest(self.registry).decode("utf-8")


def scrape(ctx: Context) -> str:
    """One scrape of ``ctx`` (a fresh registry; the web app keeps one ``Exposition``)."""
    return Exposition(ctx).scrape()
