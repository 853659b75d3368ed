"""What one calendar's cycle did (the runner's answer to the daemon and the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CycleReport:
    """What one calendar's cycle did; ``error`` is set when a peer (or anything) failed."""

    calendar_id: int
    changed: int = 0
    removed: int = 0
    resynced: bool = False
    reconciled: bool = False
    actions: list[str] = field(default_factory=list)
    writes: int = 0
    write_failures: int = 0
    held: int = 0
    tripped: bool = False
    error: str | None = None
    auth_revoked: bool = False
    #: The plan was not committed: the intent or the lease changed under this cycle.
    fenced: bool = False
    #: The last pass planned only part of what changed (a catch-up goes on).
    more: bool = False
