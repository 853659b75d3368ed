"""GoogleBackend, google_auth and google_push against the faithful fake, through the real
googleapiclient + google-auth stack (OAuth refresh included)."""

from __future__ import annotations

import argparse
import json
import queue
import re
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from adapters.google import auth as google_auth
from adapters.google import bodies
from adapters.google import push as google_push
from adapters.google.backend import GoogleBackend
from syncd.app import google_setup
from syncd.app.google_setup import google_options
from syncd.config import Config, GoogleConfig, SyncConfig
from syncd.domain.eventtext import notes_block
from syncd.errors import ConfigError
from syncd.ports import (
    AuthRevoked,
    ChangeNotifier,
    ChangeSet,
    CursorExpired,
    NotFound,
    Notification,
    PreconditionFailed,
    RateLimited,
    RemoteEvent,
    Transient,
)
from syncd.services.booking import add_admin
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import CalendarRow
from tests.contract.google_human import GoogleHuman, bogus_cursor, make_backend
from tests.contract.samples import END, START, desired
from tests.fakes.google_calendar import (
    DEFAULT_REFRESH_TOKEN,
    RATE_LIMIT_403,
    RATE_LIMIT_429,
    USER_RATE_LIMIT_403,
    FakeGoogleCalendar,
    RequestInfo,
)

LATER = START + timedelta(days=2, hours=3)
CAL = "primary"
ADMIN = "admin@example.com"


@pytest.fixture
def fake() -> Iterator[FakeGoogleCalendar]:
    with FakeGoogleCalendar(owner=ADMIN) as f:
        f.latency = 0.0
        yield f
        assert f.internal_errors == []


@pytest.fixture
def backend(fake: FakeGoogleCalendar) -> Iterator[GoogleBackend]:
    b: GoogleBackend = make_backend(fake, max_attempts=8)
    yield b
    b.close()


@pytest.fixture
def human(fake: FakeGoogleCalendar) -> GoogleHuman:
    return GoogleHuman(fake)


def by_id(changes: ChangeSet) -> dict[str, RemoteEvent]:
    ids = [ev.remote_id for ev in changes.changed]
    assert len(ids) == len(set(ids))
    return {ev.remote_id: ev for ev in changes.changed}


def live(fake: FakeGoogleCalendar) -> list[dict[str, Any]]:
    return [e for e in fake.events(CAL) if e.get("status") != "cancelled"]


def only(op: str) -> Callable[[RequestInfo], bool]:
    """A fault matcher for one API method."""
    return lambda info: info.op == op


# -- ids, create, get --------------------------------------------------------------------------


def test_remote_id_is_deterministic_and_valid(backend: GoogleBackend) -> None:
    a = backend.remote_id_for("syncd-s_1@book.example.com", "s_1")
    assert a == backend.remote_id_for("syncd-s_1@book.example.com", "s_1")
    assert a != backend.remote_id_for("syncd-s_2@book.example.com", "s_2")
    assert re.fullmatch(r"[a-v0-9]{5,1024}", a)


def test_create_then_get_round_trips(backend: GoogleBackend, fake: FakeGoogleCalendar) -> None:
    want = desired("s_round", status="tentative", transparent=True, sequence=3)
    created = backend.create(want)
    assert created.remote_id == backend.remote_id_for(want.uid, want.session_id)
    got = backend.get(created.remote_id)
    assert got == created
    c = got.content
    assert (c.start, c.end) == (START, END) and c.start.utcoffset() == timedelta(0)
    assert (c.status, c.summary, c.description) == ("tentative", want.summary, want.notes_block)
    assert (c.uid, c.session_id, c.all_day, c.recurring) == (want.uid, "s_round", False, False)
    raw = fake.get_event_raw(CAL, created.remote_id)
    assert raw["transparency"] == "transparent" and raw["sequence"] == 3
    assert raw["extendedProperties"]["private"] == {"syncd_session": "s_round"}
    assert fake.send_updates_of(CAL, created.remote_id) == "none"


def test_create_twice_is_precondition_failed(backend: GoogleBackend) -> None:
    backend.create(desired("s_twice"))
    with pytest.raises(PreconditionFailed):
        backend.create(desired("s_twice", summary="other"))


def test_create_revives_a_tombstone(backend: GoogleBackend, fake: FakeGoogleCalendar) -> None:
    first = backend.create(desired("s_revive"))
    backend.delete(first.remote_id, first.etag)
    again = backend.create(desired("s_revive", LATER, LATER + timedelta(hours=1)))
    assert again.remote_id == first.remote_id
    assert again.content.status == "confirmed" and again.content.start == LATER
    assert backend.get(first.remote_id).etag == again.etag
    assert len(fake.events(CAL)) == 1


def test_get_of_deleted_event_is_not_found_also_after_purge(
    backend: GoogleBackend, fake: FakeGoogleCalendar, human: GoogleHuman
) -> None:
    a = backend.create(desired("s_gone_a"))
    b = backend.create(desired("s_gone_b", LATER, LATER + timedelta(hours=1)))
    human.delete(a.remote_id)
    backend.delete(b.remote_id, b.etag)
    for rid in (a.remote_id, b.remote_id):
        with pytest.raises(NotFound):
            backend.get(rid)
    fake.purge(CAL, a.remote_id, status=404)
    fake.purge(CAL, b.remote_id, status=410)
    for rid in (a.remote_id, b.remote_id):
        with pytest.raises(NotFound):
            backend.get(rid)
    with pytest.raises(NotFound):
        backend.get(backend.remote_id_for("never", "never"))


# -- update -----------------------------------------------------------------------------------


def test_update_keeps_admin_fields_strips_command_and_untimes(
    backend: GoogleBackend, fake: FakeGoogleCalendar, human: GoogleHuman
) -> None:
    rid = backend.create(desired("s_keep")).remote_id
    human.add_alarm(rid)
    human.add_note_line(rid, "Bring the slides")
    human.add_note_line(rid, "cancel: flu")
    human.edit_title(rid, "reschedule: next week please")
    human.make_all_day(rid)
    human.make_recurring(rid)
    seen = backend.get(rid)
    assert seen.content.all_day and seen.content.recurring
    sequence_before = fake.get_event_raw(CAL, rid)["sequence"]
    block = notes_block(["Session s_keep", "Moved by the admin"])
    want = desired(
        "s_keep",
        LATER,
        LATER + timedelta(hours=1),
        notes_block=block,
        status="tentative",
        transparent=True,
        strip_prefixes=("cancel:", "reschedule:"),
    )
    updated = backend.update(rid, want, seen.etag)
    raw = fake.get_event_raw(CAL, rid)
    assert updated.etag == raw["etag"] == backend.get(rid).etag
    c = updated.content
    assert (c.start, c.end, c.all_day, c.recurring) == (want.start, want.end, False, False)
    assert "recurrence" not in raw and "date" not in raw["start"] and "date" not in raw["end"]
    assert c.status == "tentative" and raw["transparency"] == "transparent"
    assert c.summary == want.summary  # the consumed command title falls back
    assert "cancel:" not in c.description and "Bring the slides" in c.description
    assert block in c.description and "Booked by Ada" not in c.description
    assert c.description.count("-- syncd --") == 1
    assert raw["reminders"]["overrides"] == [{"method": "popup", "minutes": 15}]
    assert raw["colorId"] == "11" and raw["location"] == "Room 2"
    assert raw["attendees"] == [{"email": "assistant@example.org"}]
    assert raw["extendedProperties"]["private"] == {"syncd_session": "s_keep", "human_flag": "kept"}
    assert raw["sequence"] >= sequence_before  # never below the server's
    assert fake.send_updates_of(CAL, rid) == "none"


def test_update_keeps_the_admins_title_unless_empty(
    backend: GoogleBackend, fake: FakeGoogleCalendar, human: GoogleHuman
) -> None:
    rid = backend.create(desired("s_title")).remote_id
    human.edit_title(rid, "Ada (room 2)")
    got = backend.update(rid, desired("s_title"), backend.get(rid).etag)
    assert got.content.summary == "Ada (room 2)"
    human.edit_title(rid, "")
    got = backend.update(rid, desired("s_title"), backend.get(rid).etag)
    assert got.content.summary == "Session s_title"


def test_update_with_stale_etag_writes_nothing(
    backend: GoogleBackend, fake: FakeGoogleCalendar, human: GoogleHuman
) -> None:
    created = backend.create(desired("s_stale"))
    human.edit_title(created.remote_id, "renamed")
    fake.reset_log()
    with pytest.raises(PreconditionFailed):
        backend.update(created.remote_id, desired("s_stale", LATER, LATER), created.etag)
    assert fake.count("events.patch") == 0
    assert backend.get(created.remote_id).content.start == START


def test_update_of_deleted_event_is_not_found(backend: GoogleBackend, human: GoogleHuman) -> None:
    created = backend.create(desired("s_upd_gone"))
    human.delete(created.remote_id)
    with pytest.raises(NotFound):
        backend.update(created.remote_id, desired("s_upd_gone"), created.etag)


# -- delete ------------------------------------------------------------------------------------


def test_delete_conditional_and_idempotent(
    backend: GoogleBackend, fake: FakeGoogleCalendar, human: GoogleHuman
) -> None:
    backend.delete(backend.remote_id_for("never", "never"), None)
    a = backend.create(desired("s_del_a"))
    human.edit_title(a.remote_id, "renamed")
    with pytest.raises(PreconditionFailed):
        backend.delete(a.remote_id, a.etag)
    assert backend.get(a.remote_id).content.summary == "renamed"
    b = backend.create(desired("s_del_b", LATER, LATER + timedelta(hours=1)))
    backend.delete(b.remote_id, b.etag)
    assert fake.get_event_raw(CAL, b.remote_id)["status"] == "cancelled"
    assert fake.send_updates_of(CAL, b.remote_id) == "none"
    backend.delete(b.remote_id, b.etag)
    backend.delete(b.remote_id, None)
    fake.purge(CAL, b.remote_id)
    backend.delete(b.remote_id, None)


# -- change feed -------------------------------------------------------------------------------


def test_changes_pages_full_then_incremental(fake: FakeGoogleCalendar, human: GoogleHuman) -> None:
    backend = make_backend(fake, page_size=2)
    made = [
        backend.create(desired(f"s_page{i}", START + timedelta(days=i), END + timedelta(days=i)))
        for i in range(5)
    ]
    fake.reset_log()
    listing = backend.changes(None, {})
    assert listing.full and listing.removed == () and listing.cursor
    assert listing.cursor.startswith("v1:")
    assert fake.count("events.list") == 3  # 2 + 2 + 1
    assert {r.remote_id: r.etag for r in listing.changed} == {m.remote_id: m.etag for m in made}
    full_query = fake.requests[0].query
    assert full_query["singleEvents"] == ["false"] and "timeMin" in full_query

    idle = backend.changes(listing.cursor, {})
    assert idle.changed == () and idle.removed == () and not idle.full

    moved, gone = made[0], made[1]
    human.move(moved.remote_id, LATER, LATER + timedelta(minutes=30), "UTC")
    human.delete(gone.remote_id)
    fresh = backend.create(desired("s_page_new"))
    human.edit_title(made[2].remote_id, "renamed")
    fake.reset_log()
    feed = backend.changes(idle.cursor, {m.remote_id: m.etag for m in made})
    assert fake.count("events.list") == 2
    assert not feed.full
    seen = by_id(feed)
    assert set(seen) == {moved.remote_id, fresh.remote_id, made[2].remote_id}
    assert seen[moved.remote_id].content.start == LATER
    assert seen[fresh.remote_id].etag == fresh.etag
    assert feed.removed == (gone.remote_id,)
    assert all("syncToken" in r.query and "timeMin" not in r.query for r in fake.requests)

    after = backend.changes(feed.cursor, {})
    assert after.changed == () and after.removed == ()


def test_changes_survive_an_empty_first_page(fake: FakeGoogleCalendar) -> None:
    backend = make_backend(fake)
    a = backend.create(desired("s_short"))
    fake.short_pages = True
    listing = backend.changes(None, {})
    assert [e.remote_id for e in listing.changed] == [a.remote_id]


def test_full_listing_skips_old_events(backend: GoogleBackend) -> None:
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    backend.create(desired("s_old", past, past + timedelta(hours=1)))
    recent = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    keep = backend.create(desired("s_recent", recent, recent + timedelta(hours=1)))
    assert [e.remote_id for e in backend.changes(None, {}).changed] == [keep.remote_id]


def test_expired_and_unknown_cursors_are_cursor_expired(
    backend: GoogleBackend, fake: FakeGoogleCalendar
) -> None:
    backend.create(desired("s_cursor"))
    cursor = backend.changes(None, {}).cursor
    assert cursor is not None
    fake.expire_sync_tokens(CAL)
    for bad in (cursor, bogus_cursor(), "v0:" + cursor[3:], "garbage", "v1:", "v1:%%%"):
        with pytest.raises(CursorExpired):
            backend.changes(bad, {})
    assert backend.changes(None, {}).full


def test_drag_in_another_zone_has_utc_instants(
    backend: GoogleBackend, fake: FakeGoogleCalendar
) -> None:
    created = backend.create(desired("s_ny"))
    cursor = backend.changes(None, {}).cursor
    fake.human_move(
        CAL,
        created.remote_id,
        "2031-03-12T11:30:00",
        "2031-03-12T12:15:00",
        tz="America/New_York",
    )
    raw = fake.get_event_raw(CAL, created.remote_id)
    assert raw["start"]["dateTime"].endswith("-04:00")  # DST began on 9 March 2031
    moved = by_id(backend.changes(cursor, {}))[created.remote_id]
    assert moved.content.start == datetime(2031, 3, 12, 15, 30, tzinfo=UTC)
    assert moved.content.end == datetime(2031, 3, 12, 16, 15, tzinfo=UTC)
    assert moved.content.start.utcoffset() == timedelta(0)
    assert moved.content.session_id == "s_ny" and moved.etag != created.etag


def test_reserialization_changes_etag_not_content(
    backend: GoogleBackend, human: GoogleHuman
) -> None:
    created = backend.create(desired("s_noise"))
    cursor = backend.changes(None, {}).cursor
    human.reserialize(created.remote_id)
    noise = by_id(backend.changes(cursor, {}))[created.remote_id]
    assert noise.etag != created.etag and noise.content == created.content


def test_undo_by_restore(backend: GoogleBackend, human: GoogleHuman) -> None:
    created = backend.create(desired("s_undo"))
    raw = human.snapshot(created.remote_id)
    cursor = backend.changes(None, {}).cursor
    human.delete(created.remote_id)
    human.restore(created.remote_id, raw)
    feed = backend.changes(cursor, {})
    assert feed.removed == () and created.remote_id in by_id(feed)
    assert backend.get(created.remote_id).content.start == START


# -- busy --------------------------------------------------------------------------------------


def test_busy_reports_opaque_timed_events(backend: GoogleBackend, fake: FakeGoogleCalendar) -> None:
    backend.create(desired("s_opaque"))
    free = START + timedelta(hours=3)
    backend.create(desired("s_free", free, free + timedelta(hours=1), transparent=True))
    later = START + timedelta(hours=5)
    backend.create(desired("s_cxl", later, later + timedelta(hours=1), status="cancelled"))
    outside = START + timedelta(days=3)
    backend.create(desired("s_out", outside, outside + timedelta(hours=1)))
    seven = timedelta(hours=7)
    day_event = backend.create(desired("s_day", START + seven, END + seven))
    fake.human_make_all_day(CAL, day_event.remote_id, START.date())
    weekly = backend.create(
        desired("s_weekly", START - timedelta(days=7, hours=-2), END - timedelta(days=7, hours=-2))
    )
    fake.human_make_recurring(CAL, weekly.remote_id, "FREQ=WEEKLY;COUNT=3")
    day = START.replace(hour=0)
    assert backend.busy(day, day + timedelta(days=1)) == [
        (START, END),
        (START + timedelta(hours=2), END + timedelta(hours=2)),
    ]


# -- failures ----------------------------------------------------------------------------------


def test_revoked_refresh_token_is_auth_revoked_never_not_found(
    backend: GoogleBackend, fake: FakeGoogleCalendar
) -> None:
    created = backend.create(desired("s_auth"))
    cursor = backend.changes(None, {}).cursor
    fake.expire_access_tokens()  # a plain expiry refreshes silently
    assert backend.get(created.remote_id).etag == created.etag
    fake.revoke(DEFAULT_REFRESH_TOKEN)
    calls: list[Callable[[], object]] = [
        lambda: backend.changes(cursor, {}),
        lambda: backend.changes(None, {}),
        lambda: backend.get(created.remote_id),
        lambda: backend.delete(created.remote_id, created.etag),
    ]
    for call in calls:
        with pytest.raises(AuthRevoked) as caught:
            call()
        assert not isinstance(caught.value, NotFound)
    assert fake.get_event_raw(CAL, created.remote_id)["status"] == "confirmed"


def test_rate_limit_storm_applies_each_write_once(fake: FakeGoogleCalendar) -> None:
    backend = make_backend(fake, max_attempts=12)
    fake.inject_errors(0.3, [RATE_LIMIT_429, RATE_LIMIT_403, USER_RATE_LIMIT_403], seed=20310310)
    created = [
        backend.create(desired(f"s_storm{i}", START + timedelta(hours=i), END + timedelta(hours=i)))
        for i in range(6)
    ]
    updated = [
        backend.update(
            c.remote_id,
            desired(f"s_storm{i}", LATER + timedelta(hours=i), LATER + timedelta(hours=i + 1)),
            c.etag,
        )
        for i, c in enumerate(created)
    ]
    for u in updated[:3]:
        backend.delete(u.remote_id, u.etag)
    listing = backend.changes(None, {})
    fake.clear_faults()
    assert sum(fake.request_log.values()) > 6 + 6 * 2 + 3 + 1  # the storm did hit
    events = fake.events(CAL)
    assert len(events) == 6 and len({e["iCalUID"] for e in events}) == 6
    assert [e["status"] for e in events] == ["cancelled"] * 3 + ["confirmed"] * 3
    for i, u in enumerate(updated[3:], start=3):
        raw = fake.get_event_raw(CAL, u.remote_id)
        assert raw["etag"] == u.etag  # no write after ours
        assert u.content.start == LATER + timedelta(hours=i)
    assert {e.remote_id for e in listing.changed} == {u.remote_id for u in updated[3:]}


def test_lost_answers_of_landed_writes_are_adopted(
    backend: GoogleBackend, fake: FakeGoogleCalendar
) -> None:
    """The write lands but its answer is lost (503): the retry sees 409/412 and adopts it."""
    want = desired("s_lost")
    rid = backend.remote_id_for(want.uid, want.session_id)

    def land_insert(info: RequestInfo) -> bool:
        if info.op != "events.insert":
            return False
        fake.state.insert_event(CAL, bodies.new_body(rid, want), "none")
        return True

    fake.fail_next(1, 503, match=land_insert)
    created = backend.create(want)
    assert len(fake.events(CAL)) == 1 and created.etag == fake.get_event_raw(CAL, rid)["etag"]

    moved = desired("s_lost", LATER, LATER + timedelta(hours=1))
    patch = bodies.patch_body(fake.get_event_raw(CAL, rid), moved)

    def land_patch(info: RequestInfo) -> bool:
        if info.op != "events.patch":
            return False
        fake.state.write_event(CAL, rid, patch, replace=False, send_updates="none")
        return True

    fake.fail_next(1, 503, match=land_patch)
    updated = backend.update(rid, moved, created.etag)
    assert updated.content.start == LATER
    assert updated.etag == fake.get_event_raw(CAL, rid)["etag"]


def test_quota_exceeded_is_rate_limited_without_retry(
    backend: GoogleBackend, fake: FakeGoogleCalendar
) -> None:
    created = backend.create(desired("s_quota"))
    fake.reset_log()
    fake.fail_next(1, 403, "quotaExceeded")
    with pytest.raises(RateLimited) as caught:
        backend.get(created.remote_id)
    assert caught.value.retry_after is not None and caught.value.retry_after >= 600
    assert fake.count("events.get") == 1


def test_server_errors_are_retried(backend: GoogleBackend, fake: FakeGoogleCalendar) -> None:
    created = backend.create(desired("s_5xx"))
    fake.reset_log()
    fake.fail_next(2, 503)
    assert backend.get(created.remote_id).etag == created.etag
    assert fake.count("events.get") == 3
    fake.fail_next(2, 500, "backendError", match=only("events.patch"))
    fake.reset_log()
    updated = backend.update(
        created.remote_id, desired("s_5xx", LATER, LATER + timedelta(hours=1)), created.etag
    )
    assert fake.count("events.patch") == 3
    assert fake.get_event_raw(CAL, created.remote_id)["etag"] == updated.etag
    fake.fail_next(1, 503, match=only("events.insert"))
    again = backend.create(desired("s_5xx_b"))
    assert backend.get(again.remote_id) == again


def test_persistent_failures_are_transient(fake: FakeGoogleCalendar) -> None:
    backend = make_backend(fake, max_attempts=3)
    created = backend.create(desired("s_down"))
    fake.fail_next(3, 503)
    with pytest.raises(Transient) as caught:
        backend.get(created.remote_id)
    assert not isinstance(caught.value, NotFound)
    slow = make_backend(fake, max_attempts=2, timeout=0.2)
    fake.latency = 0.5
    with pytest.raises(Transient):
        slow.get(created.remote_id)
    fake.latency = 0.0


def test_stopped_server_is_transient() -> None:
    fake = FakeGoogleCalendar().start()
    backend = make_backend(fake, max_attempts=2)
    created = backend.create(desired("s_stopped"))
    cursor = backend.changes(None, {}).cursor
    fake.stop()
    backend.close()  # the fake's handler threads keep serving open keep-alive connections
    calls: list[Callable[[], object]] = [
        lambda: backend.get(created.remote_id),
        lambda: backend.changes(cursor, {}),
        lambda: backend.delete(created.remote_id, None),
    ]
    for call in calls:
        with pytest.raises(Transient) as caught:
            call()
        assert not isinstance(caught.value, NotFound)


# -- credentials and settings ------------------------------------------------------------------


def make_config(fake: FakeGoogleCalendar, tmp_path: Path, secrets: str = "") -> Config:
    return Config(
        google=GoogleConfig(
            api_endpoint=fake.base_url, token_uri=fake.token_uri, client_secrets_file=secrets
        ),
        sync=SyncConfig(state_dir=str(tmp_path / "state")),
    )


def test_from_settings_default_file_and_token_uri(fake: FakeGoogleCalendar, tmp_path: Path) -> None:
    cfg = make_config(fake, tmp_path)
    path = google_auth.default_credentials_path(cfg.sync.state_dir, "Admin@Example.com")
    assert path == tmp_path / "state" / "google" / "admin@example.com.json"
    with pytest.raises(ConfigError, match="syncd auth google"):
        GoogleBackend.from_settings({"calendar_id": CAL, "admin_email": ADMIN}, google_options(cfg))
    info = fake.authorized_user_info()
    del info["token_uri"]  # falls back to [google] token_uri
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(info))
    backend = GoogleBackend.from_settings(
        {"calendar_id": CAL, "credentials_file": "", "admin_email": ADMIN}, google_options(cfg)
    )
    assert backend.create(desired("s_settings")).content.session_id == "s_settings"
    explicit = tmp_path / "elsewhere.json"
    explicit.write_text(json.dumps(fake.authorized_user_info()))  # its own token_uri wins
    other = GoogleBackend.from_settings(
        {"calendar_id": CAL, "credentials_file": str(explicit)},
        google_options(Config(google=GoogleConfig(api_endpoint=fake.base_url))),
    )
    assert other.changes(None, {}).full
    explicit.write_text("{}")
    with pytest.raises(ConfigError):
        GoogleBackend.from_settings(
            {"calendar_id": CAL, "credentials_file": str(explicit)}, google_options(cfg)
        )


class FakeFlow:
    """Stands in for InstalledAppFlow: the 'browser' returns the fake's credentials."""

    def __init__(self, fake: FakeGoogleCalendar) -> None:
        self.fake = fake
        self.scopes: list[str] = []
        self.runs: list[tuple[int, bool]] = []

    def factory(self, secrets_file: str, scopes: Any) -> FakeFlow:
        assert Path(secrets_file).is_file()
        self.scopes = list(scopes)
        return self

    def run_local_server(self, *, port: int, open_browser: bool) -> Any:
        self.runs.append((port, open_browser))
        return google_auth.UserCredentials(
            None, token_uri=self.fake.token_uri, **self.fake.credentials_kwargs()
        )


def test_authorize_stores_token_and_creates_bookings_calendar(
    fake: FakeGoogleCalendar, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "client_secret.json"
    secrets.write_text("{}")
    cfg = make_config(fake, tmp_path, str(secrets))
    db = Database(sqlite_url)
    ctx = Context(db=db)
    add_admin(ctx, ADMIN, "Ada", "Europe/Berlin")
    flow = FakeFlow(fake)
    monkeypatch.setattr(google_auth, "FLOW_FACTORY", flow.factory)

    def rt(calendar_id: str = "") -> Any:
        args = argparse.Namespace(email=ADMIN, calendar_id=calendar_id, no_browser=True, json=False)
        return SimpleNamespace(args=args, config=cfg, ctx=ctx)

    assert google_setup.authorize(rt()) == 0
    assert flow.scopes == [google_auth.SCOPE_APP_CREATED]
    assert flow.runs == [(0, False)]
    path = tmp_path / "state" / "google" / f"{ADMIN}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stored = json.loads(path.read_text())
    assert stored["refresh_token"] == DEFAULT_REFRESH_TOKEN
    assert stored["token_uri"] == fake.token_uri
    bookings = [c for c in fake.state.calendars.values() if c.summary == "Bookings"]
    assert len(bookings) == 1 and bookings[0].time_zone == "Europe/Berlin"
    with db.read() as orm:
        rows = orm.scalars(select(CalendarRow)).all()
        assert [(r.backend, r.busy_only) for r in rows] == [("google", False)]
        settings = dict(rows[0].settings)
    assert settings["calendar_id"] == bookings[0].id
    assert settings["credentials_file"] == str(path) and settings["admin_email"] == ADMIN

    backend = GoogleBackend.from_settings(settings, google_options(cfg))
    created = backend.create(desired("s_auth_flow"))
    assert created.remote_id in fake.state.calendars[bookings[0].id].events

    assert google_setup.authorize(rt()) == 0  # re-authorizing reuses the calendar
    assert len([c for c in fake.state.calendars.values() if c.summary == "Bookings"]) == 1
    assert google_setup.authorize(rt("primary")) == 0
    assert flow.scopes == [google_auth.SCOPE_EVENTS]
    with db.read() as orm:
        ids = sorted(r.settings["calendar_id"] for r in orm.scalars(select(CalendarRow)))
    assert ids == sorted([bookings[0].id, "primary"])
    db.dispose()


def test_authorize_without_client_secrets_is_a_config_error(
    fake: FakeGoogleCalendar, tmp_path: Path, sqlite_url: str
) -> None:
    ctx = Context(db=Database(sqlite_url))
    add_admin(ctx, ADMIN, "Ada", "UTC")
    args = argparse.Namespace(email=ADMIN, calendar_id="", no_browser=True, json=False)
    rt = SimpleNamespace(args=args, config=make_config(fake, tmp_path), ctx=ctx)
    with pytest.raises(ConfigError, match="client_secrets_file"):
        google_setup.authorize(rt)  # type: ignore[arg-type]
    ctx.db.dispose()


# -- push --------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[tuple[str, queue.Queue[dict[str, str]]]]:
    got: queue.Queue[dict[str, str]] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.put(dict(self.headers.items()))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/google", got
    server.shutdown()
    server.server_close()


def test_watch_notifies_and_the_reader_finds_channel_and_token(
    backend: GoogleBackend,
    fake: FakeGoogleCalendar,
    receiver: tuple[str, queue.Queue[dict[str, str]]],
) -> None:
    assert isinstance(backend, ChangeNotifier)
    address, got = receiver
    token = "s3cret-channel-token"
    channel = backend.open_channel(address, token, timedelta(hours=1))
    assert channel.expiration is not None
    assert timedelta(minutes=59) < channel.expiration - datetime.now(UTC) <= timedelta(hours=1)
    sync = got.get(timeout=5)
    assert sync["X-Goog-Resource-State"] == "sync"
    backend.create(desired("s_push"))
    note = got.get(timeout=5)
    assert note["X-Goog-Resource-State"] == "exists"
    assert note["X-Goog-Resource-ID"] == channel.resource_id
    reader = google_push.GoogleNotificationReader()
    expected = (Notification(channel_id=channel.channel_id, secret=token),)
    assert reader.read(note, {}, b"").notifications == expected
    lower = {k.lower(): v for k, v in note.items()}
    assert reader.read(lower, {}, b"").notifications == expected
    missing = {k: v for k, v in note.items() if k != "X-Goog-Channel-Token"}
    assert reader.read(missing, {}, b"").notifications == ()
    assert reader.read({}, {}, b"").notifications == ()
    backend.stop_channel(channel)
    assert fake.channels == {}
    backend.stop_channel(channel)  # already gone
