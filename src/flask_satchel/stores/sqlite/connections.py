"""The SQLite database file of a store: made 0600, in WAL mode, with pooled connections.

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
import typing as t

from ...errors import StoreUnavailable

# A rowid table on purpose: a WITHOUT ROWID table keeps whole rows in its
# interior pages too, so with rows of a kilobyte its tree is several levels
# deeper and a load by key slower, on a larger file (bench/scale.py). Keying
# the table itself by an integer cut from the key walks one tree instead of
# two, but its rows arrive in random order, so its pages fill less: a larger
# file (bench/sqlite_layouts.py). The text key stays, and so the rows stay in
# the order they were created.
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


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> t.Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``: the write lock is taken before the first read."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def failed(error: BaseException) -> bool:
    """Whether ``error`` is SQLite failing on the database, rather than this package misusing the API.

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
    """``with database.checkout() as conn``: take a pooled connection, give it back if all went well.

    A class rather than ``@contextmanager``: a generator-based context
    manager costs more than a class on every operation.
    """

    __slots__ = ("conn", "database")

    def __init__(self, database: Database) -> None:
        self.database = database
        self.conn: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        self.conn = self.database.take()
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        conn = t.cast(sqlite3.Connection, self.conn)
        if kind is None:
            self.database.pool.append(conn)
        elif failed(t.cast(BaseException, error)):
            raise self.database.drop(conn, t.cast(sqlite3.DatabaseError, error)) from error


class Database:
    """One database file and a pool of connections to it."""

    def __init__(self, path: str, timeout: float) -> None:
        #: The database file; its folder is created on first use.
        self.path = path
        self.timeout = timeout
        # A pool rather than one connection per thread: threaded servers start
        # a thread per request, and opening a connection costs far more than a query.
        # A list: ``pop`` and ``append`` are atomic, cheaper than a queue's
        # lock, and hand out the connection used last, whose caches are warm.
        #: Idle connections; give one taken with ``take`` back with ``pool.append``.
        self.pool: list[sqlite3.Connection] = []
        self._ready = False

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

    def take(self) -> sqlite3.Connection:
        """A connection from the pool, or a new one; give it back with ``pool.append``."""
        try:
            return self.pool.pop()
        except IndexError:
            try:
                return self._connect()
            except (OSError, sqlite3.DatabaseError) as e:  # OSError: the folder or file cannot be made
                if not isinstance(e, OSError) and not failed(e):
                    raise
                raise self._unavailable(e) from e

    def drop(self, conn: sqlite3.Connection, error: sqlite3.DatabaseError) -> StoreUnavailable:
        """The error to raise for a connection that failed; it is closed, not pooled again: its state is unknown."""
        # "database is locked" after the busy timeout, a vanished disk, a damaged file, …
        _close(conn)
        return self._unavailable(error)

    def checkout(self) -> _Checkout:
        """A pooled connection for one operation; a failure of SQLite is ``StoreUnavailable``."""
        return _Checkout(self)

    @contextlib.contextmanager
    def write(self) -> t.Iterator[sqlite3.Connection]:
        """A write transaction; IMMEDIATE takes the write lock before the read, so no merge is lost."""
        with self.checkout() as conn, transaction(conn):
            yield conn

    def _unavailable(self, error: BaseException) -> StoreUnavailable:
        """A ``StoreUnavailable`` naming the file, and what to do when the file itself is broken."""
        name = getattr(error, "sqlite_errorname", None)  # Python 3.11+
        if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or type(error) is sqlite3.DatabaseError:
            return StoreUnavailable(
                f"SQLite session store {self.path!r} is damaged or is not an SQLite database ({error});"
                " restore it from a backup, or move it away to start with no sessions"
            )
        return StoreUnavailable(f"SQLite session store {self.path!r}: {error}")

    def close(self) -> None:
        """Close the idle connections."""
        while self.pool:
            self.pool.pop().close()
