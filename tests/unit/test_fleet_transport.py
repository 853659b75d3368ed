"""Calendars of one account on one server share one HTTP session (issue 11).

Each session's connection pool runs a background thread (urllib3-future's idle watch):
a session per calendar made 10,000 calendars 10,000 threads and connections.
"""

from __future__ import annotations

from adapters.caldav.transport import Transport, _sessions


def _t(url: str, user: str = "u", password: str = "p") -> Transport:
    return Transport(url.rsplit("/cal", 1)[0], url, user, password, 5.0, "syncd-test")


def test_calendars_of_one_account_share_a_session_until_the_last_closes() -> None:
    a, b = _t("http://127.0.0.1:9/cal/1/"), _t("http://127.0.0.1:9/cal/2/")
    other_account = _t("http://127.0.0.1:9/cal/3/", user="v")
    try:
        assert a._client.session is b._client.session
        assert other_account._client.session is not a._client.session
        a.close()
        a.close()  # twice is once
        assert ("http://127.0.0.1:9", "u", "p") in _sessions  # b still uses it
    finally:
        b.close()
        other_account.close()
    assert ("http://127.0.0.1:9", "u", "p") not in _sessions
    assert ("http://127.0.0.1:9", "v", "p") not in _sessions
