"""Each thread's kept connection, on an engine the store made.

Checking a connection out of the pool and wrapping it in a ``Connection``
costs about as much CPU as the statement it runs (``bench/README.md``). So
on an engine the store made from ``SESSION_URL`` (autocommit, a pool of its
own) each thread keeps the connection it used, up to the pool's size of
threads; the others check one out per statement. A kept connection goes
back to the pool when its thread ends, when work on it fails (it may be
dead, or inside a transaction), and on ``close``; the pool's checkout and
checkin events fire once a thread then, not once a statement. On an app's
engine (``SESSION_SQLALCHEMY``) each statement checks a connection out and
back: that pool is the app's, and a transactional connection kept between
requests would keep its transaction, and its snapshot, open.
"""

from __future__ import annotations

import threading
import typing as t
import weakref

import sqlalchemy as sa

__all__ = ["Kept"]

_T = t.TypeVar("_T")


class _Held:
    """One thread's connection; back to the pool when the thread ends (and this goes), or on ``close``."""

    __slots__ = ("__weakref__", "close", "conn", "generation")

    def __init__(self, conn: sa.Connection, generation: int, released: t.Callable[[], None]) -> None:
        self.conn = conn
        self.generation = generation
        self.close = weakref.finalize(self, _release, conn, released)
        self.close.atexit = False  # at exit the engine is going too


def _release(conn: sa.Connection, released: t.Callable[[], None]) -> None:
    try:
        conn.close()
    finally:
        released()


class Kept:
    """Runs work on this thread's kept connection, else on one from the pool, kept if there is room."""

    def __init__(self, engine: sa.Engine, *, keep: bool) -> None:
        self.engine = engine
        pool = engine.pool
        #: How many threads may keep a connection at once: the pool's size, or 0.
        self.at_most = pool.size() if keep and isinstance(pool, sa.pool.QueuePool) else 0
        self._count = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._generation = 0

    def run(self, work: t.Callable[[sa.Connection], _T]) -> _T:
        """``work`` on a connection: this thread's, or one checked out (and kept if there is room).

        A connection whose work failed is not kept: it may be dead, or in
        the middle of something.
        """
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None:
            if held.generation == self._generation:
                try:
                    return work(held.conn)
                except BaseException:
                    self._local.held = None
                    held.close()
                    raise
            self._local.held = None  # kept before ``close``
            held.close()
        conn = self.engine.connect()
        try:
            result = work(conn)
        except BaseException:
            conn.close()
            raise
        if self._count < self.at_most and self._take_room():
            self._local.held = _Held(conn, self._generation, self._released)
        else:
            conn.close()
        return result

    def _take_room(self) -> bool:
        with self._lock:
            if self._count >= self.at_most:
                return False
            self._count += 1
            return True

    def _released(self) -> None:
        with self._lock:
            self._count -= 1

    def release(self) -> None:
        """Give this thread's connection back to the pool (the next statement checks one out again)."""
        held: _Held | None = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            held.close()

    def close(self) -> None:
        """Give back this thread's connection; other threads give theirs back on their next use."""
        self._generation += 1
        self.release()
