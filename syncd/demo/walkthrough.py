"""``syncd demo --walkthrough``: what an admin does in a calendar app, against a running demo.

It finds the running demo through ``demo.json``, then, with plain CalDAV requests (a
``calendar-query`` REPORT to list the events, PUT with ``If-Match`` of an edited ICS,
DELETE), drags one event to the next day, deletes one, writes ``reschedule: …`` into a
third one's notes and ``cancel: …`` into a fourth one's title. It waits for syncd to act
on each, opens the "choose a new time" link from the email the SMTP catcher kept and picks
a slot like the customer would (GET the page, POST the form with its CSRF field and
cookie), and prints the story: every session before and after, the calendar, the emails.

Exit 0 when every outcome is the expected one, 1 when something differed (each difference
is printed), 4 when no demo is running.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select

from syncd.demo.driver import (
    Demo,
    choose_as_customer,
    connect,
    next_day_slot,
    pick_sessions,
    wait_for,
)
from syncd.demo.mail import MailView
from syncd.demo.seed import short_time
from syncd.domain.model import Session, Status
from syncd.errors import PeerUnavailable
from syncd.services import booking as services
from syncd.store.models import OutboxRow

RESCHEDULE_MESSAGE = "Something came up on that day, sorry! Could you pick another time?"
CANCEL_REASON = "I'm ill this week, sorry. Let's book again when I'm back."
LINK = re.compile(r"https?://\S+/choose/[A-Za-z0-9_\-]+")


@dataclass
class Story:
    """What the walkthrough prints, and what differed from the expected outcome."""

    problems: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def say(self, line: str = "") -> None:
        print(line, flush=True)

    def check(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.t0:4.0f} s"


def _state_line(demo: Demo, s: Session, before: Session | None = None) -> str:
    tz = demo.admin.tz
    head = f"  {s.customer.name:<13} {s.status.value:<18}"
    if s.status is Status.CANCELED:
        return f"{head} reason: {s.cancel_reason}"
    moved = before is not None and before.start != s.start
    was = f"  (was {short_time(before.start, tz)})" if moved and before else ""
    return f"{head} {short_time(s.start, tz)}{was}"


def _history(s: Session, since: int) -> str:
    return ", then ".join(f"{h.actor.value}: {h.action}" for h in s.history[since:]) or "—"


def _mail_kinds(demo: Demo, mails: list[MailView]) -> dict[str, tuple[str, str | None]]:
    """Message-ID → (outbox kind, session id), for the mails syncd sent."""
    ids = [m.message_id for m in mails]
    with demo.ctx.db.read() as orm:
        rows = orm.scalars(select(OutboxRow).where(OutboxRow.message_id.in_(ids)))
        return {r.message_id: (r.kind, r.session_id) for r in rows}


def run_walkthrough(root_arg: str) -> int:
    """The walkthrough (see the module docstring); the exit code."""
    try:
        return _run(connect(root_arg), Story())
    except OSError as err:
        raise PeerUnavailable(f"The demo stopped answering: {err}") from err


def _run(demo: Demo, story: Story) -> int:  # noqa: C901 - one story, told in order
    say, tz = story.say, demo.admin.tz
    say(f"syncd demo walkthrough — doing what {demo.admin.name} would do in a calendar app")
    say(
        f"Calendar {demo.cal.url} (user {demo.cal.auth[0]}); syncd polls every "
        f"{demo.poll:g} s and acts once a change has stayed {demo.settle:g} s."
    )
    say()
    moved, deleted, chooser, canceled = picks = pick_sessions(demo, say)
    before = {s.id: s for s in picks}
    marks = {s.id: len(s.history) for s in picks}
    mail_mark = max(demo.mail.numbers(), default=0)
    say(f"Before (times in {tz}):")
    for s in picks:
        say(f"{_state_line(demo, s)}  {s.id}")
    say()

    events = demo.events()
    others = [s for s in services.list_sessions(demo.ctx, demo.admin.email) if s.id != moved.id]
    new_start = next_day_slot(demo, moved, others)
    new_end = new_start + (moved.end - moved.start)
    ev = {s.id: events[demo.ctx.uid(s.id)] for s in picks}
    name = {s.id: s.customer.name for s in picks}
    demo.cal.drag(ev[moved.id], new_start, new_end, tz)
    say(
        f"1. Drag    {name[moved.id]}'s event from {short_time(moved.start, tz)} to "
        f"{short_time(new_start, tz)}  (PUT, If-Match)"
    )
    demo.cal.delete(ev[deleted.id])
    say(f"2. Delete  {name[deleted.id]}'s event on {short_time(deleted.start, tz)}  (DELETE)")
    demo.cal.add_note_line(ev[chooser.id], f"reschedule: {RESCHEDULE_MESSAGE}")
    say(f'3. Notes   {name[chooser.id]}\'s event: "reschedule: {RESCHEDULE_MESSAGE}"')
    demo.cal.set_title(ev[canceled.id], f"cancel: {CANCEL_REASON}")
    say(f'4. Title   {name[canceled.id]}\'s event: "cancel: {CANCEL_REASON}"')
    say()
    say("Waiting for syncd …")
    timeout = max(60.0, demo.settle + 4 * demo.poll + 20)
    pending = {s.id for s in picks}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for sid in sorted(pending):
            s = demo.show(sid)
            if len(s.history) > marks[sid]:
                pending.discard(sid)
                h = s.history[-1]
                say(f"  after {story.elapsed()}  {name[sid]:<13} {h.action} (by {h.actor.value})")
        time.sleep(0.5)
    for sid in pending:
        story.check(False, f"{name[sid]}: syncd did not act within {timeout:.0f} s")

    s = demo.show(chooser.id)
    story.check(
        s.status is Status.AWAITING_CUSTOMER and s.choose_message == RESCHEDULE_MESSAGE,
        f"{name[chooser.id]}: expected awaiting_customer with the message, got {s.status.value}",
    )
    link = ""

    def find_link() -> bool:
        nonlocal link
        for m in demo.mail.all(mail_mark):
            if chooser.customer.email in m.to and (found := LINK.search(m.text)):
                link = found.group(0)
                return True
        return False

    if s.status is Status.AWAITING_CUSTOMER and wait_for("choose mail", find_link, 30):
        say()
        say(f"5. {name[chooser.id]} opens the link in the email and picks a new time:")
        picked, log = choose_as_customer(
            link, demo.ctx.clock() + timedelta(days=1), chooser.customer.tz
        )
        for line in log:
            say(f"     {line}")
        wait_for(
            "confirmed",
            lambda: demo.show(chooser.id).status is Status.BOOKED,
            10 + 2 * demo.poll,
        )
        h = demo.show(chooser.id).history[-1]
        say(f"  after {story.elapsed()}  {name[chooser.id]:<13} {h.action} (by {h.actor.value})")
    else:
        picked = None
        story.check(False, f"{name[chooser.id]}: no email with a choose link arrived")

    # The outcomes, session by session.
    after = {sid: demo.show(sid) for sid in before}
    m, d, c, x = (after[s.id] for s in picks)
    story.check(
        m.status is Status.BOOKED
        and (m.start, m.end) == (new_start, new_end)
        and _history(m, marks[m.id]) == "admin-calendar: rescheduled",
        f"{name[m.id]}: expected booked at {short_time(new_start, tz)} by admin-calendar, "
        f"got {m.status.value} at {short_time(m.start, tz)} ({_history(m, marks[m.id])})",
    )
    default_reason = demo.admin.policy.default_cancel_reason
    for sess, reason in ((d, default_reason), (x, CANCEL_REASON)):
        story.check(
            sess.status is Status.CANCELED
            and sess.cancel_reason == reason
            and _history(sess, marks[sess.id]) == "admin-calendar: canceled",
            f"{name[sess.id]}: expected canceled by admin-calendar with {reason!r}, got "
            f"{sess.status.value} ({sess.cancel_reason!r}; {_history(sess, marks[sess.id])})",
        )
    story.check(
        c.status is Status.BOOKED
        and picked is not None
        and c.start == picked
        and _history(c, marks[c.id])
        == "admin-calendar: let_customer_choose, then customer: chose_new_time",
        f"{name[c.id]}: expected awaiting_customer, then booked at the picked time; got "
        f"{c.status.value} ({_history(c, marks[c.id])})",
    )

    # The calendar follows.
    def calendar_ok() -> bool:
        now = demo.events()
        ev_m, ev_c = now.get(demo.ctx.uid(m.id)), now.get(demo.ctx.uid(c.id))
        return (
            ev_m is not None
            and ev_m.start == m.start
            and demo.ctx.uid(d.id) not in now
            and demo.ctx.uid(x.id) not in now
            and ev_c is not None
            and ev_c.start == c.start
            and ev_c.status.upper() == "CONFIRMED"
        )

    cal_ok = wait_for("calendar", calendar_ok, 10 + 3 * demo.poll)
    story.check(cal_ok, "the calendar does not show the final state of the four sessions")

    # The emails.
    expected = {
        (m.id, "rescheduled"),
        (d.id, "canceled"),
        (c.id, "choose"),
        (c.id, "confirmed"),
        (c.id, "customer_chose"),  # the coach hears that Carla picked a time
        (x.id, "canceled"),
    }

    def mails() -> list[tuple[MailView, str, str | None]]:
        got = demo.mail.all(mail_mark)
        kinds = _mail_kinds(demo, got)
        return [(v, *kinds.get(v.message_id, ("?", None))) for v in got]

    wait_for("emails", lambda: expected <= {(sid, k) for _, k, sid in mails()}, 20)
    got = mails()
    ours = [(v, k, sid) for v, k, sid in got if sid in before]
    seen = [(sid, k) for _, k, sid in ours if sid is not None]
    for sid, kind in sorted(expected - set(seen)):
        story.check(False, f"{name[sid]}: no {kind!r} email arrived")
    for sid, kind in seen:
        if (sid, kind) not in expected or seen.count((sid, kind)) > 1:
            story.check(False, f"{name[sid]}: unexpected {kind!r} email")
            break

    say()
    say(f"After (times in {tz}):")
    for s in picks:
        a = after[s.id]
        say(f"{_state_line(demo, a, s)}  [{_history(a, marks[s.id])}]")
    say()
    say("The calendar:" + ("" if cal_ok else "  (not as expected)"))
    say(f"  {name[m.id]}'s event is at {short_time(m.start, tz)}")
    say(f"  {name[d.id]}'s and {name[x.id]}'s events are gone")
    say(f"  {name[c.id]}'s event is at {short_time(c.start, tz)}, confirmed")
    say()
    say(f"Emails sent (read them at {demo.state['mail_url']}/):")
    for v, kind, about in got:
        mark = "" if about in before else "  (not from this walkthrough)"
        say(f"  → {v.to:<34} {kind:<12} {v.subject}{mark}")
    say()
    if story.problems:
        say("Not as expected:")
        for p in story.problems:
            say(f"  - {p}")
        return 1
    say(f"Every outcome is the expected one ({story.elapsed().strip()}).")
    return 0
