"""Issue 10, item 10: a Google answer that is not Google's JSON is Transient, never a crash.

The request runs through the real googleapiclient stack (HttpRequest, JsonModel) over
``HttpMockSequence``, the library's own canned-HTTP transport: a proxy answering 200 with
an HTML page, or JSON that is not an object.
"""

from __future__ import annotations

from typing import Any

import pytest
from googleapiclient.http import HttpMockSequence, HttpRequest
from googleapiclient.model import JsonModel

from adapters.google.transport import Transport
from syncd.ports import Transient


def answering(body: str) -> Any:
    def build(_service: Any) -> HttpRequest:
        http = HttpMockSequence([({"status": "200", "content-type": "text/html"}, body)])
        return HttpRequest(
            http,
            JsonModel().response,
            "https://www.googleapis.com/calendar/v3/calendars/primary/events",
            method="GET",
        )

    return build


@pytest.mark.parametrize(
    "body", ["<html><body>Proxy login required</body></html>", '"just a string"', "[1, 2]"]
)
def test_a_200_that_is_not_googles_json_is_transient(body: str) -> None:
    transport = Transport(None, "cal", max_attempts=2, retry_wait=(0.0, 0.0), sleep=lambda _: None)
    with pytest.raises(Transient, match="malformed answer"):
        transport.call("events.list", answering(body))
