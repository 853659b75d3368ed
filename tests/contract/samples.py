"""Sample data shared by the contract suite and the backend kits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from syncd.domain.eventtext import notes_block
from syncd.ports import DesiredEvent

START = datetime(2031, 3, 10, 10, 0, tzinfo=UTC)
END = datetime(2031, 3, 10, 11, 0, tzinfo=UTC)


def desired(
    session_id: str, start: datetime = START, end: datetime = END, **fields: Any
) -> DesiredEvent:
    """A DesiredEvent for ``session_id`` with syncd's deterministic UID; ``fields`` override."""
    values: dict[str, Any] = {
        "session_id": session_id,
        "uid": f"syncd-{session_id}@syncd.test",
        "start": start,
        "end": end,
        "summary": f"Session {session_id}",
        "notes_block": notes_block([f"Session {session_id}", "Booked by Ada"]),
    }
    values.update(fields)
    return DesiredEvent(**values)
