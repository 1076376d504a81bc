"""Which of redis-py's errors mean "Redis cannot serve us now", and which mean "the settings are wrong".

A Redis that cannot serve now is a 503, not a 500: one that is out of
memory under ``noeviction`` (reads still work), a read-only replica, one
loading its data, busy with a script, without its master or its replicas,
unable to persist, or a cluster moving slots. Credentials the server
refuses, or a database it does not have, are a misconfiguration: no retry
mends them, so at startup they are a ``ConfigError`` and later a 503 whose
message names the key to fix. Every other error reply is a bug and is
raised as it is.
"""

from __future__ import annotations

import re
import typing as t

import redis
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    ClusterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)

from ...errors import StoreUnavailable

#: Errors that mean Redis cannot serve us right now. A read-only replica
#: answering writes, a cluster moving slots and a full memory are states
#: that pass (a failover, an operator), not bugs, so they are outages too.
#: ``ConnectionError`` covers ``BusyLoadingError`` (LOADING), and
#: ``ClusterDownError`` covers ``MasterDownError`` (MASTERDOWN).
_DOWN: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
    OutOfMemoryError,
)

#: The same, told by the code word that starts Redis's reply: for the codes
#: redis-py has no class for (BUSY: a long script; NOREPLICAS:
#: min-replicas-to-write; MISCONF: a failed RDB save stops writes), and for
#: an error a script met, which Redis before 7 wraps ("...: -OOM command ...").
_REFUSED = re.compile(r"(?:^|: -)(?:OOM|READONLY|LOADING|MASTERDOWN|BUSY|TRYAGAIN|CLUSTERDOWN|NOREPLICAS|MISCONF) ")


def misconfiguration(error: BaseException) -> str | None:
    """What is wrong with the store's settings when ``error`` is Redis saying so; None for any other error.

    Unlike an outage, no retry mends these: someone has to change the URL,
    the client, or the server's users.
    """
    if isinstance(error, (AuthenticationError, AuthenticationWrongNumberOfArgsError)):
        return f"Redis refused the store's credentials ({error})"
    if isinstance(error, NoPermissionError):
        return f"the Redis user may not run the session store's commands ({error})"
    if isinstance(error, ResponseError):
        text = str(error)
        if "DB index is out of range" in text:  # SELECT's answer, on connecting
            return f"the server has no database of that number ({error})"
        if "SELECT is not allowed in cluster mode" in text:
            return f"the server is a Redis Cluster node: use a redis+cluster:// URL or a RedisCluster ({error})"
    return None


class Unavailable:
    """Turns redis-py's errors that mean "Redis cannot serve us" into ``StoreUnavailable``.

    One per store: its messages name the server, and for a misconfiguration
    the key to fix. A class rather than ``@contextlib.contextmanager``: it
    wraps the commands of every request, and a generator-based context
    manager costs several times more than ``__enter__``/``__exit__``.
    """

    __slots__ = ("after_timeout", "key", "where")

    def __init__(self, where: str, key: str, after_timeout: t.Callable[[], object] | None = None) -> None:
        #: The server, for messages: never its credentials.
        self.where = where
        #: The configuration key that set the store up.
        self.key = key
        #: Run when a command timed out: its reply may still come, and must reach no later command.
        self.after_timeout = after_timeout

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: t.Any) -> t.Literal[False]:
        if error is not None:
            unavailable = self.handle(error)
            if unavailable is not None:
                raise unavailable from error
        return False

    def handle(self, error: BaseException) -> StoreUnavailable | None:
        """``error_for(error)``, after the clean-up a timeout needs."""
        if self.after_timeout is not None and isinstance(error, redis.TimeoutError):
            self.after_timeout()
        return self.error_for(error)

    def error_for(self, error: BaseException) -> StoreUnavailable | None:
        """The ``StoreUnavailable`` that ``error`` means, or None for an error that is a bug."""
        problem = misconfiguration(error)  # first: an AuthenticationError is a ConnectionError too
        if problem is not None:
            return StoreUnavailable(f"Redis session store {self.where}: {problem}; check {self.key}")
        if isinstance(error, _DOWN) or (isinstance(error, ResponseError) and _REFUSED.search(str(error))):
            return StoreUnavailable(f"Redis session store {self.where} is unavailable: {error}")
        # Raised, among other things, when no node of a cluster answers.
        if isinstance(error, RedisClusterException) and "connect" in str(error).lower():
            return StoreUnavailable(f"Redis Cluster session store {self.where} is unavailable: {error}")
        return None
