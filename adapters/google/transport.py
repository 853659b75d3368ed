"""Sending one Calendar API request: error mapping onto the ports, and tenacity retries.

Every request goes out with ``execute(num_retries=0)``; retries are ours (exponential
backoff plus jitter, a few attempts, at least what a ``Retry-After`` asked for) and only for
the calls the caller says are safe to repeat.
"""

from __future__ import annotations

import http.client
import logging
import time
from collections.abc import Callable
from typing import Any

import httplib2
from google.auth.exceptions import RefreshError, TransportError
from googleapiclient.errors import HttpError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from adapters.google.wire import Build, _translate, _Tries
from syncd.ports import AuthRevoked, RateLimited, Transient

log = logging.getLogger("adapters.google.backend")


class Transport:
    """Executes requests on one Calendar API client; ``label`` names the calendar in logs."""

    def __init__(
        self,
        service: Any,
        label: str,
        *,
        max_attempts: int,
        retry_wait: tuple[float, float],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.service = service
        self.label = label
        self.max_attempts = max_attempts
        self.retry_wait = retry_wait
        self._sleep = sleep

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

    def _once(self, what: str, build: Build, if_match: str | None) -> Any:
        request = build(self.service)
        if if_match:
            request.headers["If-Match"] = if_match
        try:
            result = request.execute(num_retries=0)
        except HttpError as err:
            raise _translate(err, what) from err
        except RefreshError as err:
            if getattr(err, "retryable", False):
                raise Transient(f"Google token refresh for {what} failed: {err}") from err
            detail = err.args[0] if err.args else str(err)
            raise AuthRevoked(
                f"Google refused syncd's credentials ({what}): {detail}; "
                "run 'syncd auth google' for this admin again"
            ) from err
        except (TransportError, httplib2.HttpLib2Error, http.client.HTTPException, OSError) as err:
            raise Transient(f"Google Calendar {what}: {type(err).__name__}: {err}") from err
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            # A 200 that is not Google's JSON (a proxy's HTML page, a cut-off body).
            raise Transient(f"Google Calendar {what}: malformed answer: {err}") from err
        if result is not None and result != "" and not isinstance(result, dict):
            raise Transient(f"Google Calendar {what}: malformed answer (a {type(result).__name__})")
        return result

    def call(
        self,
        what: str,
        build: Build,
        *,
        if_match: str | None = None,
        retry: bool = True,
        tries: _Tries | None = None,
    ) -> Any:
        """Execute the request ``build(service)`` returns, with error mapping and retries.

        ``retry=False`` for anything not safe to repeat.
        """
        counter = tries or _Tries()

        def attempt() -> Any:
            counter.n += 1
            return self._once(what, build, if_match)

        def note(state: RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome else None
            log.info("calendar %s: %s failed (%s); retrying", self.label, what, err)

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts if retry else 1),
            wait=self._wait,
            retry=retry_if_exception(self._retryable),
            sleep=self._sleep,
            reraise=True,
            before_sleep=note,
        )
        return retrying(attempt)
