"""Peak memory of a daemon over 100,000 sessions: in one calendar, or over 1,000.

Goal (issue 11): peak RSS <= 150 MB. A seeding process books the sessions (bulk inserts)
and mirrors them through the real runner into an in-memory calendar; a second, fresh
process then opens the database as a daemon would and runs the cycles of a quiet day:
three idle cycles per calendar, then a reconciliation (the daily full listing), against
a backend that answers like a server where nothing changed (an empty delta; a listing
whose etags all match). The server's memory is not the daemon's, so that backend keeps
nothing. Then a catch-up on every session (as after the upgrade to 0005), and last a full
listing: every cursor expired, and the server answers with every event (as Google and
Graph do), the ones syncd wrote while seeding, read back from a file as an adapter parses
its answer. The second process's VmHWM after each step is the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

from sqlalchemy import insert, select, update

from bench.world import ADMIN, BenchWorld
from syncd import config as config_mod
from syncd.app.daemon import engine_settings
from syncd.engine.runner import sync_calendar
from syncd.ports import ChangeSet, CursorExpired, EventContent, ListingPage, RemoteEvent
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import AdminRow, CalendarRow
from tests.fakes.memory_backend import MemoryBackend, MemoryCalendar


class QuietServer(MemoryBackend):
    """A calendar where nothing changed: empty deltas, listings that match syncd's mirror."""

    def changes(self, cursor: str | None, known: Mapping[str, str]) -> ChangeSet:
        if cursor is not None:
            return ChangeSet((), (), cursor)
        # A reconciliation: the adapter holds the server's etag listing (as CalDAV's does)
        # and finds every etag equal to syncd's.
        listing = {href: etag for href, etag in known.items()}
        differ = [href for href, etag in listing.items() if known.get(href) != etag]
        assert not differ
        return ChangeSet((), (), "1", reconciled=True)


class ListingServer(QuietServer):
    """Every cursor expired; a full listing holds the events syncd wrote while seeding,
    handed over page by page as an adapter parses them (``PAGE`` events a page)."""

    PAGE = 250

    def __init__(self, cal: MemoryCalendar, file: Path) -> None:
        super().__init__(cal)
        self.file = file

    def changes(self, cursor: str | None, known: Mapping[str, str]) -> ChangeSet:
        if cursor == "expired":
            raise CursorExpired("token too old")
        if cursor is not None:
            return ChangeSet((), (), cursor)
        return self.full_listing(known).gathered()

    def full_listing(self, known: Mapping[str, str]) -> ChangeSet:
        return ChangeSet((), (), None, full=True, pages=self._pages())

    def _pages(self) -> Iterator[ListingPage]:
        page: list[RemoteEvent] = []
        for event in _read_listing(self.file):
            page.append(event)
            if len(page) == self.PAGE:
                yield ListingPage(tuple(page))
                page = []
        yield ListingPage(tuple(page), last=True, cursor="1")


def _write_listing(file: Path, backend: MemoryBackend) -> None:
    with file.open("w") as out:
        for e in backend.cal.events.values():
            c = e.content
            row = [e.remote_id, e.etag, c.start.isoformat(), c.end.isoformat(), c.status,
                   c.summary, c.description, c.uid, c.session_id, c.sequence]  # fmt: skip
            out.write(json.dumps(row) + "\n")


def _read_listing(file: Path) -> Iterator[RemoteEvent]:
    """The server's answer as an adapter parses it: one event object per line."""
    with file.open() as f:
        for line in f:
            rid, etag, start, end, status, summary, desc, uid, sid, seq = json.loads(line)
            content = EventContent(
                start=datetime.fromisoformat(start),
                end=datetime.fromisoformat(end),
                status=status,
                summary=summary,
                description=desc,
                uid=uid,
                session_id=sid,
                sequence=seq,
            )
            yield RemoteEvent(rid, etag, content)


def _seed(path: Path, sessions: int, calendars: int) -> None:
    world = BenchWorld(path, {}, backend="memory")
    per = sessions // calendars
    world.seed(per)
    cal_ids = [world.cal_id]
    with world.db.write() as orm:
        for i in range(1, calendars):
            admin_id = orm.execute(
                insert(AdminRow).returning(AdminRow.id),
                [{**_admin_values(orm), "email": f"coach{i}@example.com"}],
            ).scalar_one()
            cal_ids.append(
                orm.execute(
                    insert(CalendarRow).returning(CalendarRow.id),
                    [{"admin_id": admin_id, "backend": "memory", "busy_only": False,
                      "settings": {}}],
                ).scalar_one()
            )  # fmt: skip
    for cal_id in cal_ids[1:]:
        world.admin_id = _admin_of(world, cal_id)
        world.seed(per)
    for cal_id in cal_ids:
        world.cal_id = cal_id
        backend = MemoryBackend(MemoryCalendar())
        for _ in range(2):
            report = world.sync(backend)
            assert report.error is None, report.error
        _write_listing(path / f"listing-{cal_id}.jsonl", backend)
    world.close()
    (path / "calendars.json").write_text(json.dumps(cal_ids))


def _admin_values(orm) -> dict[str, object]:  # type: ignore[no-untyped-def]
    row = orm.scalars(select(AdminRow).where(AdminRow.email == ADMIN)).one()
    return {
        c.name: getattr(row, c.name) for c in AdminRow.__table__.columns if c.name not in ("id",)
    }


def _admin_of(world: BenchWorld, cal_id: int) -> int:
    with world.db.read() as orm:
        return orm.get_one(CalendarRow, cal_id).admin_id


def _peak_mib() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not carried over from the parent
    that forked it before the exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _daemon_day(path: Path) -> dict[str, float]:
    """Run in the fresh process: idle cycles, then a reconciliation; RSS in MiB."""
    db = Database(f"sqlite:///{path}/bench.db")
    ctx = Context(db, "https://book.example.com")
    settings = engine_settings(config_mod.parse(BenchWorld.CONFIG, "bench"))
    cal_ids = json.loads((path / "calendars.json").read_text())
    backend = QuietServer(MemoryCalendar())
    for _ in range(3):
        for cal_id in cal_ids:
            assert sync_calendar(ctx, settings, cal_id, backend).error is None
    idle = _peak_mib()
    with db.write() as orm:
        orm.execute(update(CalendarRow).values(reconciled_at=None))
    for cal_id in cal_ids:
        report = sync_calendar(ctx, settings, cal_id, backend)
        assert report.error is None and report.reconciled, report
    peak = _peak_mib()
    with db.write() as orm:  # as after the upgrade to 0005: a catch-up on every session
        orm.execute(update(CalendarRow).values(synced_revision=None))
    for cal_id in cal_ids:
        assert sync_calendar(ctx, settings, cal_id, backend).error is None
    whole = _peak_mib()
    # Last, as VmHWM only grows: every cursor expired, a full listing of every event.
    with db.write() as orm:
        orm.execute(update(CalendarRow).values(cursor="expired"))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for cal_id in cal_ids:
        lister = ListingServer(MemoryCalendar(), path / f"listing-{cal_id}.jsonl")
        report = sync_calendar(ctx, settings, cal_id, lister)
        assert report.error is None and report.resynced and report.writes == 0, report
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    with db.read() as orm:
        rows = orm.execute(select(CalendarRow.cursor, CalendarRow.synced_rules)).all()
        assert all(c == "1" and not (r or "~").startswith("~") for c, r in rows), rows
    listing = _peak_mib()
    db.dispose()
    out = {"idle": idle, "peak": peak, "whole": whole, "listing": listing}
    return {**out, "listing_cpu": cpu, "listing_wall": wall}


def measure(sessions: int, calendars: int) -> dict[str, float]:
    """Peak RSS (MiB) after idle cycles and after a reconciliation, in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        _seed(Path(tmp), sessions, calendars)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        out = subprocess.run(
            [sys.executable, "-m", "bench.rss", tmp],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def rows(quick: bool = False) -> list[tuple[str, str]]:
    """Benchmark rows for the results table."""
    shapes = ((200, 2),) if quick else ((100_000, 1), (100_000, 1_000))
    out = []
    for sessions, calendars in shapes:
        r = measure(sessions, calendars)
        out.append(
            (
                f"peak RSS, {sessions:,} sessions in {calendars:,} calendar(s) (goal <= 150 MB)",
                f"{r['idle']:.0f} MiB after idle cycles, {r['peak']:.0f} MiB with a reconcile, "
                f"{r['whole']:.0f} MiB catching up on every session (as after the upgrade), "
                f"{r['listing']:.0f} MiB comparing a full listing (every cursor expired; "
                f"those cycles {r['listing_cpu']:.1f} s CPU, {r['listing_wall']:.1f} s wall)",
            )
        )
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.rss [--sessions N] [--calendars C]``: one measure, as JSON.

    (With a directory instead, the second process of :func:`measure` runs in it.)
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1 and Path(args[0]).is_dir():
        print(json.dumps(_daemon_day(Path(args[0]))))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.rss", description=__doc__)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--calendars", type=int, default=1)
    ns = parser.parse_args(args)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    r = measure(ns.sessions, ns.calendars)
    r["load"] = os.getloadavg()[0]
    r["bench_wall"], r["bench_cpu_parent"] = time.perf_counter() - wall0, time.process_time() - cpu0
    print(json.dumps({"sessions": ns.sessions, "calendars": ns.calendars, **r}))


if __name__ == "__main__":
    main()
