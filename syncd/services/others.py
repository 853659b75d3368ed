"""A transition made against only the other sessions it can need (issue 11).

A booking or a move must not read every session the admin ever had: the rules look at the
other live sessions only to refuse an overlap, so :func:`transition` reads none when the
rules do not look at them, and else only those overlapping the one interval in question.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import SupportsIndex, overload

from sqlalchemy.orm import Session as Orm

from syncd.domain.model import Admin, Session, Transition
from syncd.store.repo import live_sessions_of


class Probe(list[Session]):
    """An empty list of other sessions that remembers whether the rules looked at it.

    Every way of reading a list marks it (iterating, its length or truth, membership,
    indexing, comparing, copying, adding to it).
    """

    looked = False

    def __iter__(self) -> Iterator[Session]:
        self.looked = True
        return super().__iter__()

    def __len__(self) -> int:
        self.looked = True
        return super().__len__()

    def __contains__(self, item: object) -> bool:
        self.looked = True
        return super().__contains__(item)

    def __reversed__(self) -> Iterator[Session]:
        self.looked = True
        return super().__reversed__()

    def __eq__(self, other: object) -> bool:
        self.looked = True
        return super().__eq__(other)

    __hash__ = None  # a list: unhashable, as before

    def __add__(self, other: list[Session]) -> list[Session]:  # type: ignore[override]
        self.looked = True
        return super().__add__(other)

    def copy(self) -> list[Session]:
        self.looked = True
        return super().copy()

    @overload
    def __getitem__(self, i: SupportsIndex) -> Session: ...

    @overload
    def __getitem__(self, i: slice) -> list[Session]: ...

    def __getitem__(self, i: SupportsIndex | slice) -> Session | list[Session]:
        self.looked = True
        return super().__getitem__(i)


def transition(
    orm: Orm,
    admin_id: int,
    session: Session,
    admin: Admin,
    make: Callable[[Session, Admin, list[Session]], Transition],
) -> Transition:
    """``make`` against the admin's other live sessions, reading only those it can need.

    The rules are pure and use the other sessions only to refuse an overlap (directly, or
    as a slot no longer offered, which depends only on the sessions overlapping it). So a
    trial against none of them decides: if the rules never looked at the others (an admin's
    move, a cancel, "let customer choose"), the trial is the transition, or its refusal is
    the refusal, and nothing more is read; else the trial names the one interval to check,
    and only the sessions overlapping it are read (issue 11: not every session the admin
    ever had). A trial that looked and was refused anyway is decided against all of them,
    worded as before.
    """
    probe = Probe()
    try:
        trial = make(session, admin, probe)
    except Exception:
        if not probe.looked:
            raise
        return make(session, admin, live_sessions_of(orm, admin_id, exclude=session.id))
    if not probe.looked or not trial.after.live:
        return trial  # the others were not read, or a session that is not live has none
    window = (trial.after.start, trial.after.end)
    others = live_sessions_of(orm, admin_id, exclude=session.id, overlapping=window)
    return make(session, admin, others)
