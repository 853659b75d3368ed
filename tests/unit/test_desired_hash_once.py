"""A cycle hashes each session's desired event once (issue 11, goal 6: a first mirror asked
for each one four or five times: the plan, the settle marks, the write's record, the
second pass)."""

from __future__ import annotations

from collections import Counter

import pytest

from syncd.engine import desired
from tests.unit.harness import Harness


def test_a_first_mirror_hashes_each_desired_event_once(monkeypatch: pytest.MonkeyPatch) -> None:
    desired.desired_hash.cache_clear()
    made: Counter[str] = Counter()
    real = desired.desired_content

    def counting(event: desired.DesiredEvent) -> desired.EventContent:
        made[event.session_id] += 1
        return real(event)

    monkeypatch.setattr(desired, "desired_content", counting)
    h = Harness([f"Customer {i}" for i in range(8)])  # books, then mirrors in one cycle
    try:
        assert len(h.cal.events) == 8
        assert sorted(made) == sorted(h.sids)
        assert set(made.values()) == {1}, made
    finally:
        h.close()
