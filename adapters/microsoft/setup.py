"""The first calls of ``syncd calendar add … microsoft`` and ``syncd auth microsoft``: probe
the chosen calendar, or use (or create) the mailbox's "Bookings" calendar."""

from __future__ import annotations

from urllib.parse import quote

from adapters.microsoft.backend import GraphBackend
from adapters.microsoft.wire import _BadRequest
from syncd.errors import NotFoundError
from syncd.ports import NotFound

BOOKINGS_NAME = "Bookings"


def _named(backend: GraphBackend, name: str) -> str:
    doc = backend.transport.json(
        "calendars", "GET", f"{backend.user_path}/calendars",
        params={"$filter": f"name eq '{name}'"},
    )  # fmt: skip
    hits = [str(c["id"]) for c in doc.get("value") or [] if isinstance(c, dict) and c.get("id")]
    return hits[0] if hits else ""


def bookings_calendar(backend: GraphBackend, wanted_id: str) -> tuple[str, bool]:
    """(calendar id, created): ``wanted_id`` if the token reaches it, else "Bookings".

    Creating the calendar is not retried: a lost answer would leave a second one behind
    (the next run finds the first by its name).
    """
    if wanted_id:
        try:
            backend.transport.json(
                "calendars.get", "GET", f"{backend.user_path}/calendars/{quote(wanted_id, safe='')}"
            )
        except NotFound as err:
            raise NotFoundError(
                f"Microsoft calendar {wanted_id} is not in mailbox {backend.mailbox}."
            ) from err
        return wanted_id, False
    found = _named(backend, BOOKINGS_NAME)
    if found:
        return found, False
    try:
        made = backend.transport.json(
            "calendars.create", "POST", f"{backend.user_path}/calendars",
            body={"name": BOOKINGS_NAME}, retry=False,
        )  # fmt: skip
    except _BadRequest as err:  # 409 ErrorFolderExists: made meanwhile
        found = _named(backend, BOOKINGS_NAME)
        if not found:
            raise
        del err
        return found, False
    return str(made["id"]), True
