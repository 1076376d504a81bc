"""A connection per thread for a request's commands, on the pool of a client the Redis store made."""

from __future__ import annotations

import os
import threading
import weakref

import redis


class PerThread:
    """One redis-py client per thread, each holding one connection of a pool: for a request's commands.

    A pooled command takes a connection from the pool and gives it back,
    with a lock, a readiness poll and bookkeeping each time (see
    ``bench/README.md`` for what that costs a request). A client made with
    redis-py's ``single_connection_client`` keeps its connection and skips
    all that, but sends one command at a time; one per thread, so threads
    never wait for each other's round trips. Only for clients this store
    made: an app's own client may have a bounded pool, which connections
    held for good would drain.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._local = threading.local()
        _PER_THREAD.add(self)

    def get(self) -> redis.Redis:
        """This thread's client; made (and connected) on first use."""
        try:
            mine: redis.Redis = self._local.client
            return mine
        except AttributeError:
            client = redis.Redis(connection_pool=self._pool, single_connection_client=True)
            self._local.client = client
            return client

    def forget(self) -> None:
        """Drop every thread's client; their connections go back to the pool (or, after a fork, are closed)."""
        self._local = threading.local()


_PER_THREAD: weakref.WeakSet[PerThread] = weakref.WeakSet()


def _forget_parent_connections() -> None:
    """In a forked child (gunicorn's workers), the parent's connections are not ours to share.

    redis-py's pool notices a fork itself; a client holding one connection
    does not, so the child drops those clients and makes its own. A hook
    rather than a ``getpid()`` on every command.
    """
    for clients in list(_PER_THREAD):
        clients.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_connections)
