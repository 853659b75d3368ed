"""The end-to-end world on Google: a database, an admin, and a calendar in the Google fake.

Everything goes through the real ``google-api-python-client`` and google-auth (refresh
token → access token at the fake's token endpoint). The calendar row is what
``syncd calendar add EMAIL google`` stores (``calendar_id``, ``credentials_file``,
``admin_email``); the configuration points ``[google]`` at the fake. Each cycle builds its
backend from that row and calls :func:`syncd.engine.runner.sync_calendar`, as
:func:`syncd.app.daemon.sync_one` does, but with millisecond retry waits so that a storm of
rate-limit answers stays fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.google import auth as google_auth
from adapters.google.backend import GoogleBackend
from syncd import config as config_mod
from syncd.app.daemon import engine_settings
from syncd.engine.runner import CycleReport, sync_calendar
from syncd.errors import SyncdError
from syncd.ports import RemoteEvent
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import CalendarRow
from tests.contract.google_human import GoogleHuman
from tests.dbs import migrated_sqlite
from tests.fakes.google_calendar import DEFAULT_REFRESH_TOKEN, FakeGoogleCalendar
from tests.integration.world import Clock, WorldBase

ADMIN = "coach@example.com"
CAL = "primary"
FAST_RETRIES = (0.001, 0.01)


@dataclass
class GoogleWorld(WorldBase):
    """One admin whose calendar is the primary calendar of ``fake``."""

    tmp: Path
    fake: FakeGoogleCalendar
    settle: str = "0s"
    extra_config: str = ""
    clock: Clock = field(default_factory=Clock)

    def __post_init__(self) -> None:
        self.db = Database(migrated_sqlite(self.tmp / "world.db"))
        self.credentials_file = self.tmp / "google-credentials.json"
        self.write_credentials(DEFAULT_REFRESH_TOKEN)
        self.config_text = (
            f'[database]\nurl = "sqlite:///{self.tmp}/world.db"\n'
            f'[sync]\nsettle = "{self.settle}"\nstate_dir = "{self.tmp}/state"\n'
            '[web]\npublic_url = "https://book.example.com"\n'
            '[smtp]\nhost = "127.0.0.1"\nport = 9\n'
            f'[google]\napi_endpoint = "{self.fake.base_url}"\n'
            f'token_uri = "{self.fake.token_uri}"\n' + self.extra_config
        )
        self.cfg = config_mod.parse(self.config_text, "test")
        self.ctx = Context(self.db, "https://book.example.com", clock=self.clock)
        services.add_admin(self.ctx, ADMIN, "Coach", "Europe/Berlin")
        with self.db.write() as orm:
            cal = CalendarRow(
                admin_id=1,
                backend="google",
                busy_only=False,
                settings={
                    "calendar_id": CAL,
                    "credentials_file": str(self.credentials_file),
                    "admin_email": ADMIN,
                },
            )
            orm.add(cal)
            orm.flush()
            self.cal_id = cal.id
        self.human = GoogleHuman(self.fake, [CAL])

    # -- set-up ---------------------------------------------------------------------------

    def write_credentials(self, refresh_token: str) -> None:
        """The authorized-user JSON ``syncd auth google`` would have stored."""
        info = self.fake.authorized_user_info(refresh_token)
        self.credentials_file.write_text(json.dumps(info))
        self.credentials_file.chmod(0o600)

    def config_file(self) -> Path:
        """This world's configuration as a file, for the real ``syncd`` CLI."""
        path = self.tmp / "syncd.toml"
        path.write_text(self.config_text)
        return path

    def backend(self) -> GoogleBackend:
        """A backend built from the calendar row, like the composition root does."""
        with self.db.read() as orm:
            settings = dict(orm.get_one(CalendarRow, self.cal_id).settings)
        creds = google_auth.load_credentials(
            str(settings["credentials_file"]),
            self.cfg.sync.state_dir,
            self.cfg.google.token_uri,
            str(settings["admin_email"]),
        )
        return GoogleBackend(
            str(settings["calendar_id"]),
            creds,
            self.cfg.google.api_endpoint,
            timeout=5.0,
            retry_wait=FAST_RETRIES,
        )

    # -- the daemon's side ----------------------------------------------------------------

    def sync(self) -> CycleReport:
        """One cycle of this calendar (what ``syncd.app.daemon.sync_one`` does)."""
        try:
            backend = self.backend()
        except SyncdError as err:
            return CycleReport(self.cal_id, error=str(err))
        try:
            return sync_calendar(self.ctx, engine_settings(self.cfg), self.cal_id, backend)
        finally:
            backend.close()

    # -- looking ----------------------------------------------------------------------------

    def raw(self, sid: str) -> dict[str, Any]:
        """The event as the fake stores it (tombstones included)."""
        return self.fake.get_event_raw(CAL, self.remote_id(sid))

    def event(self, sid: str) -> RemoteEvent:
        """A fresh GET through the adapter (NotFound when deleted)."""
        backend = self.backend()
        try:
            return backend.get(self.remote_id(sid))
        finally:
            backend.close()

    def calendar(self) -> dict[str, Any]:
        with self.db.read() as orm:
            row = orm.get_one(CalendarRow, self.cal_id)
            return {
                "cursor": row.cursor,
                "tripped": row.breaker_tripped_at is not None,
                "paused_reason": row.paused_reason,
                "last_error": row.last_error,
            }

    def live_events(self) -> dict[str, list[str]]:
        """Non-cancelled events of the fake by ``syncd_session`` (to spot duplicates)."""
        out: dict[str, list[str]] = {}
        for body in self.fake.events(CAL):
            if body.get("status") == "cancelled":
                continue
            private = (body.get("extendedProperties") or {}).get("private") or {}
            out.setdefault(str(private.get("syncd_session")), []).append(str(body["id"]))
        return out
