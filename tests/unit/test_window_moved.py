"""A change window that moved on (Graph's calendar-view delta, once a day) is a planned full
listing: a reconciliation, logged as such, not a warning about an expired cursor."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest

from syncd.ports import ChangeSet, CursorExpired, WindowMoved
from tests.fakes.memory_backend import MemoryBackend
from tests.unit.harness import Harness


class Expiring(MemoryBackend):
    """Raises ``error`` for the next delta asked of it, then answers as before."""

    error: CursorExpired | None = None

    def changes(self, cursor: str | None, known: Mapping[str, str]) -> ChangeSet:
        if cursor is not None and self.error is not None:
            error, self.error = self.error, None
            raise error
        return super().changes(cursor, known)


@pytest.mark.parametrize("moved", [True, False])
def test_a_moved_window_is_a_reconciliation_and_an_expired_cursor_a_warning(
    moved: bool, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(["Ann", "Bob"])
    try:
        backend = Expiring(h.cal)
        h.cycle(backend=backend)
        backend.error = WindowMoved("a day old") if moved else CursorExpired("token too old")
        with caplog.at_level(logging.INFO, logger="syncd"):
            report = h.cycle(backend=backend)
        assert report.error is None
        assert (report.reconciled, report.resynced) == (moved, not moved)
        warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert bool(warned) is not moved, warned
        assert report.actions == [] and h.customer_emails() == []  # nothing else to it
    finally:
        h.close()
