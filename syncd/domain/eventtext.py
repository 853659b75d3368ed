"""Text conventions of the mirrored event: syncd's notes block and the admin's command line.

Pure functions shared by the planner and the backends, so that both sides agree on what
syncd owns in the notes and what a command looks like.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BLOCK_START = "-- syncd --"
BLOCK_END = "-- /syncd --"


@dataclass(frozen=True)
class Command:
    """A command the admin wrote into the event: ``kind`` is ``cancel`` or ``reschedule``."""

    kind: str
    text: str


def notes_block(lines: Sequence[str]) -> str:
    """syncd's own block of the notes, fenced so it can be replaced without touching the rest."""
    return "\n".join([BLOCK_START, *lines, BLOCK_END])


def split_notes(description: str) -> tuple[str, str]:
    """Split notes into (the admin's text, syncd's block or "")."""
    start = description.find(BLOCK_START)
    if start < 0:
        return description.strip("\n"), ""
    end = description.find(BLOCK_END, start)
    end = len(description) if end < 0 else end + len(BLOCK_END)
    admin = (description[:start] + description[end:]).strip("\n")
    return admin, description[start:end]


def merge_notes(existing: str, block: str) -> str:
    """Replace syncd's block in ``existing`` with ``block``, keeping the admin's own text above."""
    admin, _ = split_notes(existing)
    return f"{admin}\n\n{block}" if admin else block


def _match(line: str, prefixes: Sequence[str]) -> tuple[str, str] | None:
    stripped = line.strip()
    lower = stripped.lower()
    for prefix in prefixes:
        p = prefix.lower().strip()
        if p and lower.startswith(p):
            return prefix, stripped[len(p) :].strip()
    return None


def is_own_title(summary: str, own_summary: str) -> bool:
    """True when ``summary`` is syncd's own title, or a cut or an extension of it.

    The title template holds the customer's name: a customer called "Cancel: Bob" gets
    "Cancel: Bob — 1:1 session", and neither that title, nor "Cancel: Bob" (the admin
    shortened it), nor "Cancel: Bob — 1:1 session, bring the contract" is the admin's
    command.
    """
    mine = " ".join(own_summary.split()).casefold()
    theirs = " ".join(summary.split()).casefold()
    if not mine or not theirs:
        return False
    return mine.startswith(theirs) or theirs.startswith(mine)


def find_command(
    summary: str,
    description: str,
    cancel_keywords: Sequence[str],
    reschedule_keywords: Sequence[str],
    own_summary: str = "",
) -> Command | None:
    """The command in the title prefix, else in the first non-empty line of the admin's notes.

    Only the admin's own words count: syncd's notes block is never read, and neither is a
    title that is syncd's own (``own_summary``, see :func:`is_own_title`).
    """
    admin_notes, _ = split_notes(description)
    first_line = next((ln for ln in admin_notes.splitlines() if ln.strip()), "")
    title = "" if is_own_title(summary, own_summary) else summary
    for text in (title, first_line):
        for kind, keywords in (("cancel", cancel_keywords), ("reschedule", reschedule_keywords)):
            hit = _match(text, keywords)
            if hit is not None:
                return Command(kind, hit[1])
    return None


def strip_command(
    summary: str, description: str, prefixes: Sequence[str], fallback_summary: str
) -> tuple[str, str]:
    """Remove a consumed command from the title and the first line of the admin's notes.

    Returns the new (summary, description); an emptied title falls back to
    ``fallback_summary``.
    """
    new_summary = summary
    if _match(summary, prefixes) is not None and not is_own_title(summary, fallback_summary):
        new_summary = fallback_summary
    admin, block = split_notes(description)
    lines = admin.splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        if _match(line, prefixes) is not None:
            del lines[i]
        break
    admin = "\n".join(lines).strip("\n")
    new_description = f"{admin}\n\n{block}" if admin and block else (admin or block)
    return new_summary, new_description
