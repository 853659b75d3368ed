"""``/metrics`` through prometheus-client: parsed by its own parser, read at scrape time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from syncd.config import Config, WebConfig
from syncd.domain.model import Customer, Status
from syncd.notify.outbox import STATUSES as OUTBOX_STATUSES
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.web import metrics
from syncd.web.queries import Counts
from syncd.web.server import start_in_thread

ADMIN = "coach@example.com"
START = datetime(2026, 12, 8, 10, tzinfo=UTC)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _cfg() -> Config:
    return Config(web=WebConfig(listen="127.0.0.1:0", public_url="https://book.example.com"))


def test_every_series_is_present_and_read_at_scrape_time(sqlite_url: str) -> None:
    ctx = Context(db=Database(sqlite_url))
    web = start_in_thread(ctx, _cfg())
    try:
        before = _samples(httpx.get(f"{web.url}/metrics").text)
        for status in {s.value for s in Status}:
            assert before[("syncd_sessions", (("status", status),))] == 0
        for status in OUTBOX_STATUSES:
            assert before[("syncd_outbox_rows", (("status", status),))] == 0
        for name in (
            "syncd_calendars",
            "syncd_calendars_with_error",
            "syncd_breakers_tripped",
            "syncd_pending_gestures",
            "syncd_held_gestures",
        ):
            assert before[(name, ())] == 0, name
        assert before[("syncd_up", ())] == 1 and before[("syncd_database_up", ())] == 1

        services.add_admin(ctx, ADMIN, "Coach Carla", "Europe/Berlin")
        for i in range(3):
            start = START + timedelta(hours=2 * i)
            customer = Customer(f"c{i}@example.org", f"C{i}", "UTC")
            services.book(ctx, ADMIN, customer, start, start + timedelta(hours=1))
        after = _samples(httpx.get(f"{web.url}/metrics").text)
        assert after[("syncd_sessions", (("status", "booked"),))] == 3
        assert after[("syncd_outbox_rows", (("status", "pending"),))] == 3
        assert after.keys() == before.keys()
    finally:
        web.stop()
        ctx.db.dispose()


def test_large_counts_keep_every_digit() -> None:
    # The hand-written exposition printed "{value:g}": 2000001 became "2e+06".
    text = metrics.render(Counts(sessions={"booked": 2_000_001}, calendars=1_234_567))
    got = _samples(text)
    assert got[("syncd_sessions", (("status", "booked"),))] == 2_000_001
    assert got[("syncd_calendars", ())] == 1_234_567
    assert _samples(metrics.render(None)) == {("syncd_up", ()): 1, ("syncd_database_up", ()): 0}


def test_its_own_registry_and_no_database_is_database_up_0(tmp_path: Path) -> None:
    # Two web apps in one process (two registries) never clash, and the global registry
    # holds none of syncd's series.
    broken = Context(db=Database(f"sqlite:///{tmp_path}/no-schema.db"))
    one = _samples(metrics.Exposition(broken).scrape())
    two = _samples(metrics.Exposition(broken).scrape())
    assert one == two == {("syncd_up", ()): 1, ("syncd_database_up", ()): 0}
    assert REGISTRY.get_sample_value("syncd_up") is None
