"""The default store: one SQLite file, with the standard library's ``sqlite3``.

It needs no server and is safe for several processes (gunicorn workers) and
threads at once: the database runs in WAL mode, so readers never wait for a
writer, and a change is a short ``BEGIN IMMEDIATE`` transaction that reads
the row, merges the delta and writes it back. A read is one primary-key
``SELECT`` on a pooled connection. The file, its mode and its connections
are ``connections``'s.
"""

from __future__ import annotations

import os
import sqlite3
import time
import typing as t

from ... import serialization
from ..base import Change, Record, merge_data, record_from_row, times_after
from .connections import Database, failed, transaction

if t.TYPE_CHECKING:
    from ...settings import StoreSettings

_COLUMNS = "data, created_at, last_seen, expires_at, permanent, user, client"
_LOAD = f"SELECT {_COLUMNS} FROM satchel_sessions WHERE key = ?"
_CLEANUP_BATCH = 5000
#: SQLite's default WAL auto-checkpoint, in pages; cleanup turns it off while it runs.
_AUTOCHECKPOINT = 1000


class SQLiteStore:
    """Sessions in a table of an SQLite database file."""

    def __init__(self, path: str, *, timeout: float = 2.0) -> None:
        self._db = Database(path, timeout)
        # The two that every load runs, bound once.
        self._take = self._db.take
        self._pool = self._db.pool

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> SQLiteStore:
        """A ``sqlite://`` ``SESSION_URL``, else ``flask_satchel.sqlite3`` in the instance folder."""
        return cls(
            settings.local_path(os.path.join(settings.instance_path, "flask_satchel.sqlite3")), timeout=settings.timeout
        )

    @property
    def path(self) -> str:
        """The database file; its folder is created on first use."""
        return self._db.path

    #: ``count`` is one query on the expiry index: telemetry may report live sessions from it.
    counts_cheaply = True

    def describe(self) -> dict[str, str | int]:
        return {"db.system": "sqlite", "db.namespace": self.path}

    @property
    def timeout(self) -> float:
        """How long a change waits for another process's write lock before it is a 503."""
        return self._db.timeout

    def load(self, key: str) -> Record | None:
        # Every read of a session runs this: the checkout written out, a
        # context manager being a large share of the cost of the SELECT.
        conn = self._take()
        try:
            row = conn.execute(_LOAD, (key,)).fetchone()
        except sqlite3.DatabaseError as e:
            if not failed(e):
                raise
            raise self._db.drop(conn, e) from e
        self._pool.append(conn)
        return None if row is None else record_from_row(row)

    def create(self, key: str, record: Record) -> None:
        with self._db.checkout() as conn:
            conn.execute(
                f"INSERT INTO satchel_sessions (key, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    serialization.pack(record.data),
                    record.created_at,
                    record.last_seen,
                    record.expires_at,
                    record.permanent,
                    record.user,
                    None if record.client is None else serialization.pack(record.client),
                ),
            )

    def apply(self, key: str, change: Change) -> int | None:
        with self._db.write() as conn:
            row = conn.execute(
                "SELECT data, last_seen, expires_at FROM satchel_sessions WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            data = merge_data(serialization.unpack_map(row[0]), change)
            last_seen, expires_at = times_after(change, row[1], row[2])
            if not data:
                conn.execute("DELETE FROM satchel_sessions WHERE key = ?", (key,))
                return 0
            conn.execute(
                "UPDATE satchel_sessions SET data = ?, last_seen = ?, expires_at = ?, permanent = ?,"
                " user = CASE WHEN ? THEN ? ELSE user END, client = COALESCE(?, client) WHERE key = ?",
                (
                    serialization.pack(data),
                    last_seen,
                    expires_at,
                    change.permanent,
                    change.user_changed,
                    change.user,
                    None if change.client is None else serialization.pack(change.client),
                    key,
                ),
            )
            return len(data)

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        with self._db.checkout() as conn:
            cursor = conn.execute(
                "UPDATE satchel_sessions SET last_seen = ?, expires_at = ? WHERE key = ?",
                (last_seen, expires_at, key),
            )
        return cursor.rowcount > 0

    def delete(self, key: str) -> bool:
        with self._db.checkout() as conn:
            cursor = conn.execute("DELETE FROM satchel_sessions WHERE key = ?", (key,))
        return cursor.rowcount > 0

    def sessions(self, now: float, user: str | None = None) -> list[tuple[str, Record]]:
        query = f"SELECT key, NULL, {_COLUMNS.partition(', ')[2]} FROM satchel_sessions WHERE expires_at > ?"
        params: tuple[t.Any, ...] = (now,)
        if user is not None:
            query += " AND user = ?"
            params += (user,)
        with self._db.checkout() as conn:
            rows = conn.execute(query, params).fetchall()
        return [(row[0], record_from_row(row[1:])) for row in rows]

    def cleanup(self, now: float) -> int:
        # Bounded batches keep each write lock short, so requests are not held
        # up. WAL checkpoints wait for the end: one per batch (SQLite's
        # default, every 1,000 pages) rewrote the same index pages into the
        # database again and again, two thirds of the time of a large cleanup.
        total = 0
        with self._db.checkout() as conn:
            conn.execute("PRAGMA wal_autocheckpoint=0")
            try:
                while True:
                    with transaction(conn):
                        deleted = conn.execute(
                            "DELETE FROM satchel_sessions WHERE key IN"
                            " (SELECT key FROM satchel_sessions WHERE expires_at <= ? LIMIT ?)",
                            (now, _CLEANUP_BATCH),
                        ).rowcount
                    total += deleted
                    if deleted < _CLEANUP_BATCH:
                        break
            finally:
                conn.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT}")
            if total:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # takes no lock that requests wait for
        return total

    def count(self, now: float) -> int:
        with self._db.checkout() as conn:
            return int(conn.execute("SELECT count(*) FROM satchel_sessions WHERE expires_at > ?", (now,)).fetchone()[0])

    def lock(self, key: str, token: str, lease: float) -> bool:
        now = time.time()
        with self._db.checkout() as conn:
            # Insert, or take over a lapsed lease; a live one makes the upsert a no-op.
            cursor = conn.execute(
                "INSERT INTO satchel_locks (key, token, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at"
                " WHERE satchel_locks.expires_at <= ?",
                (key, token, now + lease, now),
            )
        return cursor.rowcount > 0

    def unlock(self, key: str, token: str) -> bool:
        with self._db.checkout() as conn:
            cursor = conn.execute(
                "DELETE FROM satchel_locks WHERE key = ? AND token = ? RETURNING expires_at", (key, token)
            )
            row = cursor.fetchone()
        return row is not None and row[0] > time.time()

    def close(self) -> None:
        self._db.close()
