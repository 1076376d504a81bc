"""The exceptions Flask-Satchel raises: one base class, three kinds."""

from __future__ import annotations


class SatchelError(Exception):
    """Base class of every error Flask-Satchel raises on purpose."""


class ConfigError(SatchelError, ValueError):
    """The configuration cannot work; raised by ``init_app`` naming the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        #: The configuration key that is wrong.
        self.key = key


class NotSupported(SatchelError):
    """A manager operation this store cannot do honestly (say, counting memcached)."""


class StoreUnavailable(SatchelError):
    """The store cannot be reached, or did not answer within ``SESSION_STORE_TIMEOUT``.

    Flask-Satchel turns it into an HTTP 503 with ``Retry-After``; the next
    request tries the store again, so service resumes by itself.
    """

    #: Seconds a client is asked to wait before retrying.
    retry_after: int = 1
    #: What the 503 response says.
    message = "The session store is unavailable; please retry shortly.\n"


class SessionLocked(StoreUnavailable):
    """Another request held this session's lock for longer than ``SESSION_LOCK_TIMEOUT``."""

    message = "This session is busy with another request; please retry shortly.\n"


class TooManySessions(SatchelError):
    """A login past ``SESSION_MAX_PER_USER`` with the "refuse" policy; raised where the view sets the user."""


class SessionTooLarge(SatchelError, ValueError):
    """The cookie store's session would not fit in a cookie browsers keep (4,093 bytes)."""
