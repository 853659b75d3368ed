"""iCalendar (RFC 5545) content lines written directly: TEXT escaping and folding.

Byte for byte what ``icalendar`` writes (its escaping, its 75-octet folding that never
splits an escape); the writers that use these (the CalDAV adapter's new events, the iTIP
part of customer emails) are each tested equal to the library's output. They exist
because the library's writer costs more than the rest of building a message.
"""

from __future__ import annotations

from collections.abc import Sequence


def escaped(text: str) -> str:
    """RFC 5545 TEXT escaping, as ``icalendar`` does it (``\\N`` read as a line break;
    CRLF, LF and a lone CR all written ``\\n``)."""
    text = text.replace("\\N", "\n").replace("\\", "\\\\").replace(";", "\\;")
    text = text.replace(",", "\\,").replace("\r\n", "\\n").replace("\n", "\\n")
    return text.replace("\r", "\\n")


def folded(line: str, limit: int = 75) -> str:
    """A content line folded before ``limit`` octets, never inside an escape (as
    ``icalendar`` folds: a backslash that would end a segment starts the next one)."""
    if len(line) < limit and line.isascii():
        return line
    segments: list[str] = []
    current: list[str] = []
    size = 0
    for char in line:
        width = len(char.encode())
        if current and size + width >= limit:
            if len(current) > 1 and current[-1] in "\\^":
                carried = current.pop()
                segments.append("".join(current))
                current, size = [carried], len(carried.encode())
            else:
                segments.append("".join(current))
                current, size = [], 0
        current.append(char)
        size += width
    if current:
        segments.append("".join(current))
    return "\r\n ".join(segments)


def lines_bytes(lines: Sequence[str]) -> bytes:
    """Content lines folded and CRLF-terminated, as one calendar object's bytes."""
    return "".join(folded(line) + "\r\n" for line in lines).encode()
