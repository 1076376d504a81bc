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
    """The session is larger than its store can keep, so it was not written.

    Memcached's item size, MariaDB's ``max_allowed_packet`` and the 4,093
    bytes a browser keeps of a cookie are limits no retry can get past, so
    this is not a ``StoreUnavailable``: the record in the store stays as it
    was, and the app has to store less (or pick a store without the limit).
    """

    def __init__(self, message: str, *, size: int | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        #: The encoded size of the session, in bytes, when known.
        self.size = size
        #: The store's limit, in bytes, when known.
        self.limit = limit


class SerializationError(SatchelError, TypeError):
    """A session value Flask-Satchel will not store (it would need pickle); names the key and the type."""
