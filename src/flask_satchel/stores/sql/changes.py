"""Applying a change to a stored session: compare-and-set, else under the row lock.

A read is one primary-key ``SELECT``. A change is first tried as one
compare-and-set statement: the delta is merged in Python onto the data this
thread just loaded, and the ``UPDATE`` (or ``DELETE`` when empty) only
matches while the row still holds exactly those bytes. A merge is a pure
function of the data it starts from, so when the bytes match, nothing
another request did can be lost, whatever happened in between. When they do
not (another request wrote first, or nothing was loaded), the change is one
short transaction that locks the row (``SELECT … FOR UPDATE``; on SQLite an
``UPDATE`` first, which takes the database's write lock), merges onto what
is there and writes it back.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ... import serialization
from ..base import Change, merge_data, times_after
from .connections import Connections
from .statements import Statements

__all__ = ["Changes"]


class Changes:
    """Applies changes to the rows of one store."""

    def __init__(self, connections: Connections, statements: Statements) -> None:
        self._connections = connections
        self._sql = statements

    def apply(self, key: str, change: Change, expected: bytes | None) -> int | None:
        """Apply ``change`` to the row of ``key``, which held ``expected`` when this thread loaded it (if it did).

        The number of keys the row holds afterwards (0: deleted), or None
        when the row is gone. Each step is idempotent: after a dead
        connection, the first attempt may have written; then the retry's
        compare fails, and the locked path sets the same keys to the same
        values again.
        """
        if expected is not None:
            done = self._if_unchanged(key, change, expected)
            if done is not None:
                return done
        return self._connections.run(lambda conn: self._locked(conn, key, change))

    def _if_unchanged(self, key: str, change: Change, expected: bytes) -> int | None:
        """One statement: ``change`` merged onto ``expected``, written only if the row still holds it.

        Returns the number of keys written, or None when the row holds
        something else or is gone (the caller then takes the locked path,
        which tells the two apart).
        """
        data = merge_data(serialization.unpack_map(expected), change)
        params: dict[str, t.Any] = {"b_key": key, "b_seen": expected}
        statement: sa.Executable
        if not data:
            statement = self._sql.delete_if_unchanged
        else:
            packed = serialization.pack(data)
            client = None if change.client is None else serialization.pack(change.client)
            if self._connections.limit.fits((expected, packed, client)) is not True:
                return None  # carrying the old data too, it may not fit: the locked path sends the new only
            params["b_data"], params["b_permanent"] = packed, change.permanent
            params["b_last_seen"], params["b_expires_at"] = change.last_seen, change.expires_at
            if change.user_changed:
                params["b_user"] = change.user
            if client is not None:
                params["b_client"] = client
            statement = self._sql.update_if_unchanged[change.user_changed, client is not None]
        connections = self._connections
        rowcount = connections.run(lambda conn: connections.write(conn, statement, params))
        return len(data) if rowcount == 1 else None

    def _locked(self, conn: sa.Connection, key: str, change: Change) -> int | None:
        """Lock the row, merge ``change`` onto what it holds now, write it back; None when it is gone."""
        sql, connections = self._sql, self._connections
        with connections.transaction(conn):
            if sql.lock_by_update and conn.execute(sql.take_lock, {"b_key": key}).rowcount == 0:
                return None
            row = conn.execute(sql.lock, {"b_key": key}).first()
            if row is None:
                return None
            raw, user, client, last_seen, expires_at = row
            data = merge_data(serialization.unpack_map(raw), change)
            last_seen, expires_at = times_after(change, last_seen, expires_at)
            if not data:
                conn.execute(sql.delete, {"b_key": key})
                return 0
            packed = serialization.pack(data)
            client = client if change.client is None else serialization.pack(change.client)
            fits = self._connections.limit.fits((packed, client), conn)
            if fits is False:
                raise self._connections.limit.too_large(len(packed))  # rolled back: the row keeps its data
            params = {
                "b_key": key,
                "b_data": packed,
                "b_last_seen": last_seen,
                "b_expires_at": expires_at,
                "b_permanent": change.permanent,
                "b_user": change.user if change.user_changed else user,
                "b_client": client,
            }
            try:
                conn.execute(sql.update, params)
            except sa_exc.DBAPIError as e:
                problem = connections.refused(conn, e, len(packed), fits is None)
                if problem is None:
                    raise
                raise problem from e
            return len(data)
