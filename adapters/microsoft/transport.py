"""Sending one Graph request: the bearer token, ``Prefer``, per-mailbox concurrency, retries.

Outlook allows about 4 concurrent requests per app and mailbox: every request holds a slot
of a process-wide semaphore for its mailbox (:data:`MAILBOX_CONCURRENCY`), however many
workers and backends the process runs. Retries (tenacity, exponential backoff with jitter,
at least what a ``Retry-After`` asked for) only for calls the caller says are safe to repeat;
a 401 drops msal's cached token and asks once more before it is :class:`AuthRevoked`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from adapters.microsoft.auth import TokenSource
from adapters.microsoft.wire import PREFER, translate
from syncd.ports import AuthRevoked, RateLimited, Transient

log = logging.getLogger("adapters.microsoft")

MAILBOX_CONCURRENCY = 4
_slots: dict[str, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def mailbox_slots(mailbox: str) -> threading.BoundedSemaphore:
    """The process-wide semaphore of one mailbox (by lower-case UPN or id)."""
    key = mailbox.strip().lower()
    with _slots_lock:
        slot = _slots.get(key)
        if slot is None:
            slot = _slots[key] = threading.BoundedSemaphore(MAILBOX_CONCURRENCY)
        return slot


class Tries:
    """How many attempts one call took (a write retried after a lost answer may have landed)."""

    n = 0


class Transport:
    """Requests to one Graph endpoint on behalf of one mailbox."""

    def __init__(
        self,
        graph_endpoint: str,
        mailbox: str,
        tokens: TokenSource,
        *,
        timeout: float,
        max_attempts: int,
        retry_wait: tuple[float, float],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base = graph_endpoint.rstrip("/") + "/"
        self.mailbox = mailbox
        self.tokens = tokens
        self.max_attempts = max(1, max_attempts)
        self.retry_wait = retry_wait
        self._sleep = sleep
        self._slots = mailbox_slots(mailbox)
        self._timeout = timeout
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()

    def _client(self) -> httpx.Client:
        with self._http_lock:
            if self._http is None:  # trusts SSL_CERT_FILE like any httpx client
                self._http = httpx.Client(timeout=self._timeout)
            return self._http

    def close(self) -> None:
        """Release connections (a later request opens new ones)."""
        with self._http_lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def _retryable(self, err: BaseException) -> bool:
        if isinstance(err, RateLimited) and err.retry_after is not None:
            return err.retry_after <= self.retry_wait[1]  # a long wait is the caller's
        return isinstance(err, Transient)

    def _wait(self, state: RetryCallState) -> float:
        lo, hi = self.retry_wait
        backoff = (wait_exponential(multiplier=lo, max=hi) + wait_random(0, lo))(state)
        err = state.outcome.exception() if state.outcome is not None else None
        asked = err.retry_after if isinstance(err, RateLimited) and err.retry_after else 0.0
        return max(backoff, min(asked, hi))

    def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        body: Any,
        headers: dict[str, str],
    ) -> httpx.Response:
        headers = {**headers, "Authorization": f"Bearer {self.tokens.token()}"}
        with self._slots:
            return self._client().request(method, url, params=params, json=body, headers=headers)

    def _once(
        self,
        what: str,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        body: Any,
        headers: dict[str, str],
    ) -> httpx.Response:
        try:
            resp = self._send(method, url, params, body, headers)
            if resp.status_code == 401:  # msal may hold a token Graph no longer takes
                log.info("mailbox %s: %s answered 401; getting a new token", self.mailbox, what)
                self.tokens.drop()
                resp = self._send(method, url, params, body, headers)
        except httpx.HTTPError as err:
            raise Transient(f"Microsoft Graph {what}: {type(err).__name__}: {err}") from err
        if resp.status_code >= 400:
            failure = translate(resp, what)
            if isinstance(failure, AuthRevoked):
                failure = AuthRevoked(
                    f"{failure}; run 'syncd auth microsoft' (or check the app's consent)"
                )
            raise failure
        return resp

    def request(
        self,
        what: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        if_match: str | None = None,
        prefer: str = "",
        retry: bool = True,
        tries: Tries | None = None,
    ) -> httpx.Response:
        """One request (``path`` relative to the endpoint, or an absolute ``@odata`` link)."""
        url = path if path.startswith(("https://", "http://")) else self.base + path.lstrip("/")
        headers = {"Prefer": PREFER + (f", {prefer}" if prefer else "")}
        if if_match:
            headers["If-Match"] = if_match
        counter = tries or Tries()

        def attempt() -> httpx.Response:
            counter.n += 1
            return self._once(what, method, url, params, body, headers)

        def note(state: RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome else None
            log.info("mailbox %s: %s failed (%s); retrying", self.mailbox, what, err)

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts if retry else 1),
            wait=self._wait,
            retry=retry_if_exception(self._retryable),
            sleep=self._sleep,
            reraise=True,
            before_sleep=note,
        )
        result: httpx.Response = retrying(attempt)
        return result

    def json(self, what: str, method: str, path: str, **kw: Any) -> dict[str, Any]:
        """:meth:`request`, the answer's JSON object ({} for an empty answer)."""
        resp = self.request(what, method, path, **kw)
        if not resp.content:
            return {}
        try:
            doc = resp.json()
        except ValueError as err:
            raise Transient(f"Microsoft Graph {what}: an answer that is not JSON") from err
        if not isinstance(doc, dict):
            raise Transient(f"Microsoft Graph {what}: an answer that is not a JSON object")
        return doc
