"""The end-to-end world on Microsoft Graph: a database, an admin, a "Bookings" calendar in
the Graph fake, and the admin in Outlook (:class:`tests.contract.graph_kit.GraphHuman`).

Everything goes through the real msal (client credentials at the fake's token endpoint) and
httpx over HTTPS with the test CA (``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE`` are set by the
fixture). The calendar row is what ``syncd calendar add EMAIL microsoft --mailbox UPN``
stores; ``[microsoft]`` points at the fake. Like the daemon's pool, the world keeps one
backend across cycles (and opens a new one after a failed cycle), with millisecond retry
waits so that storms of 429 answers stay fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.microsoft.backend import GraphBackend
from syncd import config as config_mod
from syncd.app.daemon import engine_settings
from syncd.app.microsoft_setup import tokens_for
from syncd.engine.runner import CycleReport, sync_calendar
from syncd.errors import SyncdError
from syncd.ports import RemoteEvent
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import CalendarRow
from tests.contract.graph_kit import FAST_RETRIES, UPN, GraphHuman
from tests.dbs import migrated_sqlite
from tests.fakes.graph_extras import FakeGraphPlus
from tests.integration.world import Clock, WorldBase

ADMIN = "coach@example.com"


def start_fake(ca: Any) -> tuple[FakeGraphPlus, str, str]:
    """A started fake with the admin's mailbox and an app: (fake, client id, secret)."""
    fake = FakeGraphPlus(ca).start()
    fake.add_mailbox(UPN, "Coach")
    app = fake.add_app("syncd")
    return fake, app.client_id, fake.add_secret(app.client_id)


@dataclass
class GraphWorld(WorldBase):
    """One admin whose calendar is "Bookings" in the mailbox ``UPN`` of ``fake``."""

    tmp: Path
    fake: FakeGraphPlus
    client_id: str
    secret: str
    settle: str = "0s"
    extra_config: str = ""
    clock: Clock = field(default_factory=Clock)
    kind: str = "microsoft"

    def __post_init__(self) -> None:
        self.db = Database(migrated_sqlite(self.tmp / "world.db"))
        secret_file = self.tmp / "graph-secret"
        secret_file.write_text(self.secret)
        secret_file.chmod(0o600)
        self.config_text = (
            f'[database]\nurl = "sqlite:///{self.tmp}/world.db"\n'
            f'[sync]\nsettle = "{self.settle}"\nstate_dir = "{self.tmp}/state"\n'
            '[web]\npublic_url = "https://book.example.com"\n'
            '[smtp]\nhost = "127.0.0.1"\nport = 9\n'
            f'[microsoft]\nclient_id = "{self.client_id}"\ntenant = "{self.fake.tenant.id}"\n'
            f'client_secret_file = "{secret_file}"\n'
            f'authority_endpoint = "{self.fake.base_url}/"\n'
            f'graph_endpoint = "{self.fake.graph_url}"\n' + self.extra_config
        )
        self.cfg = config_mod.parse(self.config_text, "test")
        self.ctx = Context(self.db, "https://book.example.com", clock=self.clock)
        services.add_admin(self.ctx, ADMIN, "Coach", "Europe/Berlin")
        with self.fake.lock:
            self.graph_calendar = self.fake.mailbox(UPN).create_calendar({"name": "Bookings"}).id
        with self.db.write() as orm:
            cal = CalendarRow(
                admin_id=1,
                backend="microsoft",
                busy_only=False,
                settings={
                    "mailbox": UPN,
                    "calendar_id": self.graph_calendar,
                    "admin_email": ADMIN,
                    "auth": "app",
                },
            )
            orm.add(cal)
            orm.flush()
            self.cal_id = cal.id
        self.human = GraphHuman(self.fake, UPN)
        self._backend: GraphBackend | None = None

    def config_file(self) -> Path:
        """This world's configuration as a file, for the real ``syncd`` CLI."""
        path = self.tmp / "syncd.toml"
        path.write_text(self.config_text)
        return path

    def backend(self) -> GraphBackend:
        """The world's backend (kept across cycles, like the daemon's pool)."""
        if self._backend is None:
            with self.db.read() as orm:
                settings = dict(orm.get_one(CalendarRow, self.cal_id).settings)
            self._backend = GraphBackend(
                str(settings["mailbox"]),
                str(settings["calendar_id"]),
                tokens_for(settings, self.cfg),
                self.cfg.microsoft.graph_endpoint,
                timeout=5.0,
                retry_wait=FAST_RETRIES,
            )
        return self._backend

    def sync(self) -> CycleReport:
        """One cycle of this calendar (what ``syncd.app.daemon.sync_one`` does)."""
        try:
            backend = self.backend()
        except SyncdError as err:
            return CycleReport(self.cal_id, error=str(err))
        report = sync_calendar(self.ctx, engine_settings(self.cfg), self.cal_id, backend)
        if report.error is not None:  # the pool opens a fresh backend after a failure
            backend.close()
            self._backend = None
        return report

    def event(self, sid: str) -> RemoteEvent:
        """A fresh read through the adapter (NotFound when gone)."""
        return self.backend().get(self.remote_id(sid))

    def calendar(self) -> dict[str, Any]:
        with self.db.read() as orm:
            row = orm.get_one(CalendarRow, self.cal_id)
            return {
                "cursor": row.cursor,
                "tripped": row.breaker_tripped_at is not None,
                "paused_reason": row.paused_reason,
                "last_error": row.last_error,
            }

    def graph_events(self) -> list[dict[str, Any]]:
        """The live events of the Bookings calendar, as the fake renders them (UTC)."""
        return self.fake.events(UPN, self.graph_calendar)

    def expire_cursor(self) -> None:
        self.fake.expire_delta_tokens()

    @contextlib.contextmanager
    def reads_fail_after_feed(self) -> Iterator[None]:
        """The delta answers; reads of events fail (503); then nothing answers."""

        def event_reads(method: str, target: str) -> bool:
            path = target.split("?")[0].lower()
            return method == "GET" and "/events" in path and "calendarview" not in path

        self.fake.fail_matching(event_reads)
        try:
            yield
        finally:
            self.fake.fail_matching(lambda _m, _t: True)

    def peer_back(self) -> None:
        self.fake.fail_matching(None)

    def close(self) -> None:
        """Release the backend and the database."""
        if self._backend is not None:
            self._backend.close()
        self.db.dispose()
