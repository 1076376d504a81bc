"""``SESSION_LOCKING`` on SQL: one row per held lock in ``<table>_locks``, each a lease."""

from __future__ import annotations

import time

import sqlalchemy as sa

from ...errors import StoreUnavailable
from . import errors
from .connections import Connections
from .statements import Statements

__all__ = ["Locks"]


class Locks:
    """Takes and releases the leases of one store's sessions."""

    def __init__(self, connections: Connections, statements: Statements, prefix: str) -> None:
        self._connections = connections
        self._sql = statements
        self._prefix = prefix

    def lock(self, key: str, token: str, lease: float) -> bool:
        """Take the lease of ``key`` for ``token``: a released or lapsed lock row, or a new one.

        Each step is its own short transaction, and a deadlock (two
        contenders inserting the same new row on MySQL/MariaDB) means "not
        this time": the caller polls again. Leases run on this host's clock,
        as ``expires_at`` does. Neither step is retried after a dead
        connection: had the first attempt taken the lock, the retry would
        find it held and the request would wait for its own lease to lapse.
        """
        connections, sql = self._connections, self._sql
        now = time.time()
        steal = {"b_key": key, "b_now": now, "b_token": token, "b_until": now + lease}
        row = {"prefix": self._prefix, "key": key, "token": token, "until": now + lease}

        def insert(conn: sa.Connection) -> bool:
            result = conn.execute(sql.lock_insert, row)
            inserted = (result.first() is not None) if result.returns_rows else (result.rowcount == 1)
            connections.commit(conn)
            return inserted

        try:
            if connections.run(lambda conn: connections.write(conn, sql.lock_steal, steal), retry=False) == 1:
                return True
            return connections.run(insert, retry=False)
        except StoreUnavailable as e:
            if errors.deadlock(e.__cause__):
                return False
            raise

    def unlock(self, key: str, token: str) -> bool:
        """Release ``token``'s lock; False when its lease had run out (or another request took it)."""
        connections, sql = self._connections, self._sql
        params = {"b_key": key, "b_token": token, "b_now": time.time()}
        return connections.run(lambda conn: connections.write(conn, sql.unlock, params), retry=False) == 1

    def cleanup(self) -> None:
        """Delete the rows of released and lapsed locks."""
        connections, sql = self._connections, self._sql
        # Leases run on the real clock, whatever ``now`` the store's cleanup is given.
        connections.run(lambda conn: connections.write(conn, sql.lock_cleanup, {"b_now": time.time()}))
