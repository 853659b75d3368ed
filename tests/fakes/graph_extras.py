"""Faults the Graph fake lacks, for syncd's own tests: failing chosen requests, lost answers.

:class:`FakeGraphPlus` is :class:`tests.fakes.graph_server.FakeGraph` with two more
controls, both matched on (method, request target):

- :meth:`fail_matching`: answer 503 ``ServiceUnavailable`` without serving;
- :meth:`lose_answers`: serve the request (its effect happens), then drop the connection
  before any answer goes out, as a proxy timing out or a network cut would.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from .graph_server import JSON_TYPE, FakeGraph

Match = Callable[[str, str], bool]


class AnswerLost(ConnectionAbortedError):
    """Raised inside the handler: the server closes the connection without answering."""


class FakeGraphPlus(FakeGraph):
    """The Graph fake with request-matched failures and lost answers."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._extra_lock = threading.Lock()
        self._fail: Match | None = None
        self._lose: list[Match] = []
        self.lost = 0

    def fail_matching(self, match: Match | None) -> None:
        """Answer 503 to every request ``match(method, target)`` accepts (None: stop)."""
        with self._extra_lock:
            self._fail = match

    def lose_answers(self, match: Match, n: int = 1) -> None:
        """Serve the next ``n`` requests ``match`` accepts, then drop their answers."""
        with self._extra_lock:
            self._lose.extend([match] * n)

    def handle(
        self, method: str, target: str, headers: dict[str, str], prefer: list[str], raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self._extra_lock:
            fail = self._fail is not None and self._fail(method, target)
        if fail and target.startswith("/v1.0/"):
            body = {"error": {"code": "ServiceUnavailable", "message": "Try again later."}}
            return 503, {"Content-Type": JSON_TYPE}, json.dumps(body).encode()
        result = super().handle(method, target, headers, prefer, raw)
        with self._extra_lock:
            hit = next((m for m in self._lose if m(method, target)), None)
            if hit is not None and result[0] < 500:
                self._lose.remove(hit)
                self.lost += 1
                raise AnswerLost(f"answer to {method} {target} lost")
        return result
