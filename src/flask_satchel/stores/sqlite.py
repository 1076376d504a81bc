"""The default store: one SQLite file, with the standard library's ``sqlite3``.

It needs no server and is safe for several processes (gunicorn workers) and
threads at once: the database runs in WAL mode, so readers never wait for a
writer, and a change is a short ``BEGIN IMMEDIATE`` transaction that reads
the row, merges the delta and writes it back. A read is one primary-key
``SELECT`` on a pooled connection, a few microseconds.

Session values are secrets, so the database file is created readable by
its owner only (0600), whatever the umask; SQLite gives its ``-wal`` and
``-shm`` files the mode of the database file. A file that already exists
keeps the mode it has: whoever made it may have chosen it on purpose.

Every error SQLite reports about the database (locked past the timeout, a
full or vanished disk, a damaged file, a file that is not a database) is a
``StoreUnavailable`` naming the file, so the client gets a 503 and the log
says which file to look at, never a 500.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import typing as t

from .. import serialization
from ..errors import StoreUnavailable
from .base import Change, Record, merge_data, record_from_row, times_after

if t.TYPE_CHECKING:
    from ..settings import Settings

# A rowid table on purpose: a WITHOUT ROWID table keeps whole rows in its
# interior pages too, so with rows of a kilobyte its tree is several levels
# deeper. At 1,000,000 sessions a load by key took half again as long that
# way, on a file a fifth larger (bench/scale.py). Keying the table itself by
# an integer cut from the key walks one tree instead of two and loaded a
# quarter faster at that size, but its rows arrive in random order, so its
# pages fill less: a file 37% larger (bench/sqlite_layouts.py). The text key
# stays, and so the rows stay in the order they were created.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS satchel_sessions (
    key TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    created_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    expires_at REAL NOT NULL,
    permanent INTEGER NOT NULL,
    user TEXT,
    client BLOB
);
CREATE INDEX IF NOT EXISTS satchel_sessions_expires ON satchel_sessions (expires_at);
CREATE INDEX IF NOT EXISTS satchel_sessions_user ON satchel_sessions (user) WHERE user IS NOT NULL;
CREATE TABLE IF NOT EXISTS satchel_locks (
    key TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
"""
_COLUMNS = "data, created_at, last_seen, expires_at, permanent, user, client"
_LOAD = f"SELECT {_COLUMNS} FROM satchel_sessions WHERE key = ?"
_CLEANUP_BATCH = 5000
#: SQLite's default WAL auto-checkpoint, in pages; cleanup turns it off while it runs.
_AUTOCHECKPOINT = 1000


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> t.Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def _failed(error: BaseException) -> bool:
    """Whether ``error`` is SQLite failing on the database, rather than this module misusing the API.

    ``ProgrammingError`` (a closed connection, wrong bindings) is a bug here,
    which no retry mends: it keeps its traceback.
    """
    return isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.ProgrammingError)


def _close(conn: sqlite3.Connection) -> None:
    """Close a connection that failed; a damaged database may fail the rollback as well."""
    with contextlib.suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.rollback()
    with contextlib.suppress(sqlite3.Error):
        conn.close()


class _Checkout:
    """``with store._conn() as conn``: take a pooled connection, give it back if all went well.

    A class rather than ``@contextmanager``: a generator-based context manager
    cost a third as much as the primary-key ``SELECT`` of every load.
    """

    __slots__ = ("conn", "store")

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.conn: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        self.conn = self.store._take()
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        conn = t.cast(sqlite3.Connection, self.conn)
        if kind is None:
            self.store._pool.append(conn)
        elif _failed(t.cast(BaseException, error)):
            raise self.store._drop(conn, t.cast(sqlite3.DatabaseError, error)) from error


class SQLiteStore:
    """Sessions in a table of an SQLite database file."""

    def __init__(self, path: str, *, timeout: float = 2.0) -> None:
        #: The database file; its folder is created on first use.
        self.path = path
        self.timeout = timeout
        # A pool rather than one connection per thread: threaded servers start
        # a thread per request, and opening a connection costs far more than a query.
        # A list: ``pop`` and ``append`` are atomic, cheaper than a queue's
        # lock, and hand out the connection used last, whose caches are warm.
        self._pool: list[sqlite3.Connection] = []
        self._ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SQLiteStore:
        return cls(settings.sqlite_path, timeout=settings.store_timeout)

    def _create_file(self) -> bool:
        """Create the database file 0600 unless it exists, before SQLite opens it with its own 0644; True if made."""
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False  # its mode is its owner's choice
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)  # a umask may have taken the owner's write bit too
        finally:
            os.close(fd)
        return True

    def _connect(self) -> sqlite3.Connection:
        # On every new connection, not only the first: a file that was moved
        # away while the app runs (a damaged one, say) is made again, 0600 and
        # with its tables, so service resumes without a restart.
        created = self._create_file()
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across application crashes in WAL mode; only a
            # power loss can drop the last commits, which for sessions is a re-login.
            conn.execute("PRAGMA synchronous=NORMAL")
            # A large cleanup grows the WAL; once checkpointed, it shrinks back to this.
            conn.execute("PRAGMA journal_size_limit=67108864")
            if created or not self._ready:
                conn.executescript(_SCHEMA)
                self._ready = True
        except BaseException:
            _close(conn)  # "file is not a database" fails the first PRAGMA
            raise
        return conn

    def _take(self) -> sqlite3.Connection:
        """A connection from the pool, or a new one; give it back with ``_pool.append``."""
        try:
            return self._pool.pop()
        except IndexError:
            try:
                return self._connect()
            except (OSError, sqlite3.DatabaseError) as e:  # OSError: the folder or file cannot be made
                if not isinstance(e, OSError) and not _failed(e):
                    raise
                raise self._unavailable(e) from e

    def _drop(self, conn: sqlite3.Connection, error: sqlite3.DatabaseError) -> StoreUnavailable:
        """The error to raise for a connection that failed; it is closed, not pooled again: its state is unknown."""
        # "database is locked" after the busy timeout, a vanished disk, a damaged file, …
        _close(conn)
        return self._unavailable(error)

    def _conn(self) -> _Checkout:
        """A pooled connection for one operation; a failure of SQLite is ``StoreUnavailable``."""
        return _Checkout(self)

    def _unavailable(self, error: BaseException) -> StoreUnavailable:
        """A ``StoreUnavailable`` naming the file, and what to do when the file itself is broken."""
        name = getattr(error, "sqlite_errorname", None)  # Python 3.11+
        if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or type(error) is sqlite3.DatabaseError:
            return StoreUnavailable(
                f"SQLite session store {self.path!r} is damaged or is not an SQLite database ({error});"
                " restore it from a backup, or move it away to start with no sessions"
            )
        return StoreUnavailable(f"SQLite session store {self.path!r}: {error}")

    @contextlib.contextmanager
    def _write(self) -> t.Iterator[sqlite3.Connection]:
        """A write transaction; IMMEDIATE takes the write lock before the read, so no merge is lost."""
        with self._conn() as conn, _transaction(conn):
            yield conn

    def load(self, key: str) -> Record | None:
        # Every read of a session runs this: the checkout of ``_conn`` written
        # out, since the context manager cost about 4k instructions a load,
        # against 29k for the SELECT itself (callgrind).
        conn = self._take()
        try:
            row = conn.execute(_LOAD, (key,)).fetchone()
        except sqlite3.DatabaseError as e:
            if not _failed(e):
                raise
            raise self._drop(conn, e) from e
        self._pool.append(conn)
        return None if row is None else record_from_row(row)

    def create(self, key: str, record: Record) -> None:
        with self._conn() as conn:
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
        with self._write() as conn:
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
        with self._conn() as conn:
            cursor = conn.execute(
                "UPDATE satchel_sessions SET last_seen = ?, expires_at = ? WHERE key = ?",
                (last_seen, expires_at, key),
            )
        return cursor.rowcount > 0

    def delete(self, key: str) -> bool:
        with self._conn() as conn:
            cursor = conn.execute("DELETE FROM satchel_sessions WHERE key = ?", (key,))
        return cursor.rowcount > 0

    def sessions(self, now: float, user: str | None = None) -> list[tuple[str, Record]]:
        query = f"SELECT key, NULL, {_COLUMNS.partition(', ')[2]} FROM satchel_sessions WHERE expires_at > ?"
        params: tuple[t.Any, ...] = (now,)
        if user is not None:
            query += " AND user = ?"
            params += (user,)
        with self._conn() as conn:
            rows = conn.execute(query, params).fetchall()
        return [(row[0], record_from_row(row[1:])) for row in rows]

    def cleanup(self, now: float) -> int:
        # Bounded batches keep each write lock short, so requests are not held
        # up. WAL checkpoints wait for the end: one per batch (SQLite's
        # default, every 1,000 pages) rewrote the same index pages into the
        # database again and again, two thirds of the time of a large cleanup.
        total = 0
        with self._conn() as conn:
            conn.execute("PRAGMA wal_autocheckpoint=0")
            try:
                while True:
                    with _transaction(conn):
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
        with self._conn() as conn:
            return int(conn.execute("SELECT count(*) FROM satchel_sessions WHERE expires_at > ?", (now,)).fetchone()[0])

    def lock(self, key: str, token: str, lease: float) -> bool:
        now = time.time()
        with self._conn() as conn:
            # Insert, or take over a lapsed lease; a live one makes the upsert a no-op.
            cursor = conn.execute(
                "INSERT INTO satchel_locks (key, token, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at"
                " WHERE satchel_locks.expires_at <= ?",
                (key, token, now + lease, now),
            )
        return cursor.rowcount > 0

    def unlock(self, key: str, token: str) -> bool:
        with self._conn() as conn:
            cursor = conn.execute(
                "DELETE FROM satchel_locks WHERE key = ? AND token = ? RETURNING expires_at", (key, token)
            )
            row = cursor.fetchone()
        return row is not None and row[0] > time.time()

    def close(self) -> None:
        while self._pool:
            self._pool.pop().close()
