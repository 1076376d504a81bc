"""What a request sees, and what the log says, when the store cannot serve it.

A store that is down fails every request that touches a session, often
hundreds a second. Each of them gets a 503 with ``Retry-After``; the log
gets one line per store every few seconds, saying how many failures it
stands for, so an outage is visible without drowning the log.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t

if t.TYPE_CHECKING:
    from flask import Response

    from .errors import StoreUnavailable

log = logging.getLogger("flask_satchel")


class OutageLog:
    """Logs ``StoreUnavailable`` errors of one store, at most one line every ``interval`` seconds."""

    #: The shortest time between two lines; failures in between are counted, not logged.
    interval: float = 5.0
    #: The clock; tests replace it instead of sleeping.
    clock: t.Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, store_name: str) -> None:
        self.store_name = store_name
        self._lock = threading.Lock()
        self._quiet_until = 0.0
        self._folded = 0

    def report(self, error: StoreUnavailable) -> None:
        """Log ``error``, or count it when a line went out less than ``interval`` seconds ago."""
        now = self.clock()
        with self._lock:
            if now < self._quiet_until:
                self._folded += 1
                return
            folded, self._folded = self._folded, 0
            self._quiet_until = now + self.interval
        if folded:
            log.error(
                "Session store %s unavailable: %s (%d more failures since the last report)",
                self.store_name,
                error,
                folded,
            )
        else:
            log.error("Session store %s unavailable: %s", self.store_name, error)

    def handler(self, error: StoreUnavailable) -> tuple[str, int, dict[str, str]]:
        """The app's error handler for ``StoreUnavailable`` raised by a view (a failed read): a 503."""
        self.report(error)
        return error.message, 503, _headers(error)

    def answer(self, response: Response, error: StoreUnavailable) -> None:
        """Turn ``response`` into a 503 for a failed save.

        Flask turns errors raised after the view into a 500 and ignores error
        handlers, so the 503 is made here, on the response itself.
        """
        self.report(error)
        response.status_code = 503
        response.headers.update(_headers(error))
        response.set_data(error.message)


def _headers(error: StoreUnavailable) -> dict[str, str]:
    return {"Retry-After": str(error.retry_after), "Content-Type": "text/plain; charset=utf-8"}
