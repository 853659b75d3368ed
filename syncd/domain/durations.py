"""Durations as people write them in the config and on the command line: 90s, 2m, 24h, 7d."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """Parse ``"90s"``, ``"2m"``, ``"24h"``, ``"7d"`` or combinations like ``"1h30m"``.

    Raises ValueError with a sentence that says what is accepted.
    """
    s = text.strip().lower()
    parts = _PART.findall(s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f'"{text}" is not a duration (use 90s, 2m, 24h, 7d)')
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def format_duration(value: timedelta) -> str:
    """The shortest spelling :func:`parse_duration` reads back to ``value``."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out)
