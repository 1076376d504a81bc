"""``SESSION_LOCKING``: one request of a session at a time, for views that read-modify-write a key.

A lock is a lease in the store (see ``LockingStore``): it names its holder
and lapses, so a process that dies holding it cannot block the session for
ever. A request waits for it with a growing pause, up to
``SESSION_LOCK_TIMEOUT``, then answers 503 rather than hang.
"""

from __future__ import annotations

import logging
import secrets
import time
import typing as t

from flask.globals import request_ctx

from .errors import SessionLocked, StoreUnavailable
from .session import ServerSession

if t.TYPE_CHECKING:
    from .stores.base import LockingStore

log = logging.getLogger("flask_satchel")


class SessionLocks:
    """Takes and gives back session locks of one store."""

    def __init__(self, store: LockingStore, timeout: float, lease: float) -> None:
        self.store = store
        #: How long a request waits for the lock before a 503.
        self.timeout = timeout
        #: How long a lock outlives a holder that never gives it back.
        self.lease = lease

    def acquire(self, key: str) -> tuple[str, str]:
        """Wait for the lock of ``key``: the ``(key, token)`` that releases it; ``SessionLocked`` past the timeout."""
        token = secrets.token_hex(16)
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while not self.store.lock(key, token, self.lease):
            if time.monotonic() >= deadline:
                raise SessionLocked(f"session {key} stayed locked for {self.timeout:g} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.025)
        return key, token

    def release(self, held: tuple[str, str]) -> None:
        """Give a lock back; a lock that lapsed or a store that is down is logged, never raised."""
        try:
            if not self.store.unlock(*held):
                log.warning("A session lock lapsed before its request ended; raise SESSION_LOCK_LEASE")
        except StoreUnavailable as e:
            log.warning("Could not release a session lock (it will lapse): %s", e)


def release_after_request(error: BaseException | None) -> None:
    """``teardown_request`` safety net: release a session lock when the request ended without saving."""
    # Teardown runs inside the request context, whose session Flask opened at its start.
    session = request_ctx.session
    # type() first: ABCs are slow. Nearly every request holds no lock, and pays no call.
    if (type(session) is ServerSession or isinstance(session, ServerSession)) and session._lock is not None:
        session._interface.release(session)
