"""The SQL store: the Store protocol on one table, every statement through SQLAlchemy's ``Connection``.

The store uses only its own connections and transactions from the engine's
pool, never an application's ORM session, so it can neither commit nor roll
back the application's work. Each statement runs with
``Connection.execute`` on a connection from ``engine.connect()``, so the
engine's events (``before_cursor_execute``, ``handle_error``), its ``echo``
log and instrumentation that listens to them (OpenTelemetry's) see every
statement of the store.

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

import logging
import typing as t

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ... import serialization
from ...errors import ConfigError, SatchelError, StoreUnavailable
from ..base import Change, LastRead, Record, merge_data, record_from_row, times_after
from .connections import Connections
from .engines import engine_of, make_engine
from .locks import Locks
from .schema import DEFAULT_TABLE, TableCheck, make_lock_table, make_table
from .statements import CLEANUP_BATCH, Statements

if t.TYPE_CHECKING:
    from ...settings import Settings

__all__ = ["SQLStore"]

log = logging.getLogger("flask_satchel")


class SQLStore:
    """Sessions in one table of an SQL database, through an SQLAlchemy engine."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        prefix: str = "session:",
        locking: bool = False,
        owns_engine: bool = False,
    ) -> None:
        #: The engine; the store only checks connections out of its pool.
        self.engine = engine
        #: Holds :attr:`table`; hand it to Alembic's ``target_metadata`` to manage migrations.
        self.metadata = sa.MetaData()
        #: The sessions table.
        self.table = make_table(table, schema, self.metadata)
        #: The locks of ``SESSION_LOCKING``, in a table of their own (a lock may
        #: be taken before its session has a row); None when locking is off.
        self.lock_table = make_lock_table(table, schema, self.metadata) if locking else None
        #: This app's ``SESSION_KEY_PREFIX``, the first half of each row's key.
        self.prefix = prefix
        self._owns_engine = owns_engine
        self._sql = sql = Statements(self.table, self.lock_table, prefix, engine.dialect.name)
        # Only ``from_settings`` sets its check pending: whoever makes a store
        # by hand creates its table by hand.
        self._tables = TableCheck(engine, self.metadata, self.table, self.lock_table)
        self._connections = connections = Connections(engine, self._tables)
        self._run = connections.run
        self._write = connections.write
        self._limit = connections.limit
        self._locks = None if self.lock_table is None else Locks(connections, sql, prefix)
        # Per thread, the key and raw data of the last record loaded: the
        # request that loaded it applies its change against exactly those
        # bytes (compare-and-set) without reading the row again.
        self._seen: LastRead[bytes] = LastRead()

    @classmethod
    def from_settings(cls, settings: Settings) -> SQLStore:
        if len(settings.key_prefix) > 128:
            raise ConfigError("SESSION_KEY_PREFIX", "must be at most 128 characters for the sqlalchemy store")
        if settings.client is not None and settings.url is not None:
            raise ConfigError("SESSION_URL", "give either SESSION_URL or SESSION_SQLALCHEMY, not both")
        if settings.client is not None:
            engine, owns_engine = engine_of(settings.client), False
        elif settings.url is not None:
            engine, owns_engine = make_engine(settings.url, settings.store_timeout), True
        else:
            raise ConfigError(
                "SESSION_SQLALCHEMY",
                "SESSION_TYPE 'sqlalchemy' needs an Engine or a Flask-SQLAlchemy db here, or a SESSION_URL",
            )
        store = cls(
            engine,
            table=settings.sqlalchemy_table,
            schema=settings.sqlalchemy_schema,
            prefix=settings.key_prefix,
            locking=settings.locking,
            owns_engine=owns_engine,
        )
        if settings.url is not None:
            store._tables.source = "SESSION_URL"
        if settings.sqlalchemy_create_table:
            try:
                store._tables.check()
            except StoreUnavailable as e:
                # Containers start in any order: the app starts while its
                # database is still coming up, and answers session requests
                # with a 503 until the check has passed on first use.
                store._tables.pending = True
                log.warning(
                    "Session store sqlalchemy: no database at startup, the table check will run on first use: %s", e
                )
            except BaseException:
                store.close()
                raise
        return store

    def create_table(self) -> None:
        """Create the table and its indexes if they do not exist; safe to run at every start.

        A table of that name that is not the store's (Flask-Session's own
        is called ``sessions`` too) is a ``ConfigError`` naming
        ``SESSION_SQLALCHEMY_TABLE``: writing to it could only fail.
        """
        self._tables.create()

    # The Store protocol ---------------------------------------------------------------

    def load(self, key: str) -> Record | None:
        self._seen.keep(key, None)  # a failed read leaves nothing behind
        statement, params = self._sql.load, {"b_key": key}
        row = self._run(lambda conn: conn.execute(statement, params).first())
        if row is None:
            return None
        self._seen.keep(key, row[0])
        return record_from_row(row)

    def create(self, key: str, record: Record) -> None:
        data = serialization.pack(record.data)
        client = None if record.client is None else serialization.pack(record.client)
        fits = self._limit.fits((data, client))
        if fits is False:
            raise self._limit.too_large(len(data))
        params = {
            "prefix": self.prefix,
            "key": key,
            "data": data,
            "created_at": record.created_at,
            "last_seen": record.last_seen,
            "expires_at": record.expires_at,
            "permanent": record.permanent,
            "user": record.user,
            "client": client,
        }
        size, near = len(data), fits is None
        write, sql = self._connections.write_sized, self._sql
        self._run(
            lambda conn: write(conn, sql.insert, params, size, near),
            again=lambda conn: write(conn, sql.insert_again, params, size, near),
        )

    def apply(self, key: str, change: Change) -> int | None:
        # Each step is idempotent: after a dead connection, the first attempt
        # may have written; then the retry's compare fails, and the locked
        # path sets the same keys to the same values again.
        expected = self._seen.take(key)
        if expected is not None:
            done = self._apply_if_unchanged(key, change, expected)
            if done is not None:
                return done
        return self._run(lambda conn: self._apply_locked(conn, key, change))

    def _apply_if_unchanged(self, key: str, change: Change, expected: bytes) -> int | None:
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
            if self._limit.fits((expected, packed, client)) is not True:
                return None  # carrying the old data too, it may not fit: the locked path sends the new only
            params["b_data"], params["b_permanent"] = packed, change.permanent
            params["b_last_seen"], params["b_expires_at"] = change.last_seen, change.expires_at
            if change.user_changed:
                params["b_user"] = change.user
            if client is not None:
                params["b_client"] = client
            statement = self._sql.update_if_unchanged[change.user_changed, client is not None]
        rowcount = self._run(lambda conn: self._write(conn, statement, params))
        return len(data) if rowcount == 1 else None

    def _apply_locked(self, conn: sa.Connection, key: str, change: Change) -> int | None:
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
            fits = self._limit.fits((packed, client), conn)
            if fits is False:
                raise self._limit.too_large(len(packed))  # rolled back: the row keeps its data
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

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        params = {"b_key": key, "b_last_seen": last_seen, "b_expires_at": expires_at}
        return self._run(lambda conn: self._write(conn, self._sql.touch, params)) > 0

    def delete(self, key: str) -> bool:
        params = {"b_key": key}
        return self._run(lambda conn: self._write(conn, self._sql.delete, params)) > 0

    def sessions(self, now: float, user: str | None = None) -> list[tuple[str, Record]]:
        statement = self._sql.list if user is None else self._sql.list_user
        params = {"b_now": now, "b_user": user}  # b_user is ignored by the statement for everyone
        rows = self._run(lambda conn: conn.execute(statement, params).all())
        return [
            (key, record_from_row((None, *rest)))
            for key, *rest in rows
            # Exact, whatever the column's collation: MySQL's pads trailing spaces.
            if user is None or rest[4] == user
        ]

    def cleanup(self, now: float) -> int:
        total = 0
        while True:
            deleted = self._run(lambda conn: self._write(conn, self._sql.cleanup, {"b_now": now}))
            total += deleted
            if deleted < CLEANUP_BATCH:
                break
        if self._locks is not None:
            self._locks.cleanup()
        return total

    def lock(self, key: str, token: str, lease: float) -> bool:
        """Take the lease of ``key`` for ``token`` if it is free or lapsed (``SESSION_LOCKING``); never waits."""
        return self._locking().lock(key, token, lease)

    def unlock(self, key: str, token: str) -> bool:
        """Release ``token``'s lock; False when its lease had run out (or another request took it)."""
        return self._locking().unlock(key, token)

    def _locking(self) -> Locks:
        if self._locks is None:
            raise SatchelError("this SQLStore was made without locking=True (SESSION_LOCKING)")
        return self._locks

    def count(self, now: float) -> int:
        return int(self._run(lambda conn: conn.execute(self._sql.count, {"b_now": now}).scalar_one()))

    def close(self) -> None:
        """Close the pool's connections if the store made the engine; an app's own engine is left alone."""
        if self._owns_engine:
            self.engine.dispose()
