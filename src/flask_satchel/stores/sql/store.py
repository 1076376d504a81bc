"""The SQL store: the Store protocol on one table, every statement through SQLAlchemy's ``Connection``.

The store uses only its own connections and transactions from the engine's
pool, never an application's ORM session, so it can neither commit nor roll
back the application's work. Each statement runs with
``Connection.execute`` on a connection from ``engine.connect()``, so the
engine's events (``before_cursor_execute``, ``handle_error``), its ``echo``
log and instrumentation that listens to them (OpenTelemetry's) see every
statement of the store.

A read is one primary-key ``SELECT``; a change is one compare-and-set
statement, or a short transaction under the row lock (``changes``).
"""

from __future__ import annotations

import logging
import typing as t

import sqlalchemy as sa

from ... import serialization
from ...errors import ConfigError, SatchelError, StoreUnavailable
from ..base import Change, LastRead, Record, record_from_row
from .changes import Changes
from .connections import Connections
from .engines import engine_of, make_engine
from .locks import Locks
from .schema import DEFAULT_TABLE, TableCheck, make_lock_table, make_table
from .statements import CLEANUP_BATCH, Statements

if t.TYPE_CHECKING:
    from ...settings import StoreSettings

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
        self._connections = connections = Connections(engine, self._tables, keep=owns_engine)
        self._run = connections.run
        self._write = connections.write
        self._limit = connections.limit
        self._changes = Changes(connections, sql)
        self._locks = None if self.lock_table is None else Locks(connections, sql, prefix)
        # Per thread, the key and raw data of the last record loaded: the
        # request that loaded it applies its change against exactly those
        # bytes (compare-and-set) without reading the row again.
        self._seen: LastRead[bytes] = LastRead()

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> SQLStore:
        """``SESSION_SQLALCHEMY`` or ``SESSION_URL``, and the ``SESSION_SQLALCHEMY_*`` keys of the table."""
        if len(settings.key_prefix) > 128:
            raise ConfigError("SESSION_KEY_PREFIX", "must be at most 128 characters for the sqlalchemy store")
        client = settings.client("SESSION_SQLALCHEMY")
        table = settings.config.get("SESSION_SQLALCHEMY_TABLE", DEFAULT_TABLE)
        if not isinstance(table, str) or not table:
            raise ConfigError("SESSION_SQLALCHEMY_TABLE", f"expected a table name, got {table!r}")
        schema = settings.config.get("SESSION_SQLALCHEMY_SCHEMA")
        if schema is not None and not isinstance(schema, str):
            raise ConfigError("SESSION_SQLALCHEMY_SCHEMA", f"expected a schema name or None, got {schema!r}")
        create_table = settings.flag("SESSION_SQLALCHEMY_CREATE_TABLE", True)
        if client is not None:
            engine, owns_engine = engine_of(client), False
        elif settings.url is not None:
            engine, owns_engine = make_engine(settings.url, settings.timeout), True
        else:
            raise ConfigError(
                "SESSION_SQLALCHEMY",
                "SESSION_TYPE 'sqlalchemy' needs an Engine or a Flask-SQLAlchemy db here, or a SESSION_URL",
            )
        store = cls(
            engine,
            table=table,
            schema=schema,
            prefix=settings.key_prefix,
            locking=settings.locking,
            owns_engine=owns_engine,
        )
        if settings.url is not None:
            store._tables.source = "SESSION_URL"
        if create_table:
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

    #: ``count`` is one query on the expiry index: telemetry may report live sessions from it.
    counts_cheaply = True

    def describe(self) -> dict[str, str | int]:
        url = self.engine.url
        described: dict[str, str | int] = {"db.system": self.engine.dialect.name, "db.collection.name": self.table.name}
        if url.host:
            described["server.address"] = url.host
        if url.port:
            described["server.port"] = url.port
        if url.database:
            described["db.namespace"] = url.database
        return described

    # The Store protocol ---------------------------------------------------------------

    def load(self, key: str) -> Record | None:
        statement, params = self._sql.load, {"b_key": key}
        try:
            row = self._run(lambda conn: conn.execute(statement, params).first())
        except BaseException:
            self._seen.keep(key, None)  # a failed read leaves nothing behind
            raise
        if row is None:
            self._seen.keep(key, None)
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
        return self._changes.apply(key, change, self._seen.take(key))

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
        self._connections.kept.close()
        if self._owns_engine:
            self.engine.dispose()
