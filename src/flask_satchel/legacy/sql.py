"""Flask-Session's SQL table, through SQLAlchemy Core on Flask-Satchel's own engine.

Flask-Session keeps one row per session in a table of its own (by default
``sessions``; here ``SESSION_FLASK_SESSION_TABLE``, since
``SESSION_SQLALCHEMY_TABLE`` names Flask-Satchel's table, in
``SESSION_SQLALCHEMY_SCHEMA``), with the columns ``id``, ``session_id``
(``SESSION_KEY_PREFIX + sid``), ``data`` (the encoded session) and
``expiry`` (a naive UTC ``DATETIME``). It is read on the engine of
Flask-Satchel's store: for a table on a Flask-SQLAlchemy bind
(``SESSION_SQLALCHEMY_BIND_KEY``), hand that bind's engine over as
``SESSION_SQLALCHEMY``.

A take is one statement where the database has ``DELETE … RETURNING``
(PostgreSQL, SQLite 3.35+, MariaDB): the row is deleted and read at once, so
of two requests racing with the same old cookie only one gets it. Elsewhere
(MySQL) it is a ``SELECT`` and a ``DELETE`` of that row's id, and only the
request whose ``DELETE`` removed it imports it. Neither needs a
transaction around it, so where the driver switches to autocommit without
asking the server (psycopg, pysqlite), or the engine is in autocommit
already (one Flask-Satchel made from ``SESSION_URL``), a cookie that names
nothing costs one round trip; PyMySQL on an engine that is not in
autocommit adds its ``BEGIN`` and ``COMMIT``. Both run on the engine
Flask-Satchel's store uses, in a connection of its pool.

A table that is not there, or not Flask-Session's (no ``session_id``
column), means nothing to import: one warning on the ``flask_satchel``
logger, and no session is imported until the table is there.
"""

from __future__ import annotations

import datetime as dt
import typing as t

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ..errors import ConfigError, StoreUnavailable
from ..stores.sql.errors import missing_column, missing_table
from . import BaseImporter, Taken, log

if t.TYPE_CHECKING:
    from flask import Flask

    from ..settings import Settings
    from ..stores.base import Store
    from ..stores.sql import SQLStore

#: Flask-Session's default table name (its ``SESSION_SQLALCHEMY_TABLE``).
DEFAULT_TABLE = "sessions"
#: Drivers that switch a connection to autocommit by an attribute, without a round trip.
_CLIENT_SIDE_AUTOCOMMIT = frozenset({"psycopg", "psycopg2", "pysqlite"})


def flask_session_table(name: str = DEFAULT_TABLE, schema: str | None = None) -> sa.Table:
    """Flask-Session 0.8's session table, as its ``create_session_model`` declares it."""
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("session_id", sa.String(255), unique=True),
        sa.Column("data", sa.LargeBinary()),
        sa.Column("expiry", sa.DateTime()),
        schema=schema,
    )


def _not_the_table(error: sa_exc.DBAPIError) -> bool:
    """Whether ``error`` says the table, or its ``session_id`` column, does not exist."""
    return missing_table(error) or missing_column(error)


def _timestamp(expiry: dt.datetime) -> float:
    if expiry.tzinfo is None:  # Flask-Session writes datetime.utcnow()
        expiry = expiry.replace(tzinfo=dt.timezone.utc)
    return expiry.timestamp()


class SQLImporter(BaseImporter):
    """Takes Flask-Session's row with ``DELETE … RETURNING``, or a ``SELECT`` and a ``DELETE`` by id."""

    backend = "sqlalchemy"

    def __init__(self, settings: Settings, app: Flask, store: Store) -> None:
        super().__init__(settings, app)
        name = app.config.get("SESSION_FLASK_SESSION_TABLE", DEFAULT_TABLE)
        if not isinstance(name, str) or not name:
            raise ConfigError("SESSION_FLASK_SESSION_TABLE", f"expected Flask-Session's table name, got {name!r}")
        #: The engine the table is on: Flask-Satchel's store's, whose pool it shares.
        sql_store = t.cast("SQLStore", store)
        self.engine: sa.Engine = sql_store.engine
        #: Flask-Session's table.
        self.table = table = flask_session_table(name, sql_store.table.schema)
        named = table.c.session_id == sa.bindparam("sid")
        self._take = sa.delete(table).where(named).returning(table.c.data, table.c.expiry)
        self._find = sa.select(table.c.id, table.c.data, table.c.expiry).where(named)
        self._delete = sa.delete(table).where(table.c.id == sa.bindparam("row"))
        self._warned = False

    def _connection(self) -> t.ContextManager[sa.Connection]:
        """A connection whose one statement is its own transaction, at the least cost in round trips.

        Either way takes one statement that needs no transaction around it
        (see the module docstring). Where the driver switches to autocommit
        without asking the server (psycopg, psycopg2, pysqlite), the switch
        saves the ``BEGIN`` and ``COMMIT`` round trips of an engine that is
        not in autocommit already, a Flask-SQLAlchemy engine say; PyMySQL
        would send a query to switch, and again to switch back, so there the
        statement runs in a transaction of its own.
        """
        if self.engine.dialect.driver in _CLIENT_SIDE_AUTOCOMMIT:
            return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self.engine.begin()

    def take_record(self, store_id: str, now: float, lifetime: float) -> Taken | None:
        row: t.Any  # a Row of two or three columns, or None
        try:
            with self._connection() as conn:
                if conn.dialect.delete_returning:
                    row = conn.execute(self._take, {"sid": store_id}).first()
                else:
                    row = conn.execute(self._find, {"sid": store_id}).first()
                    if row is not None and conn.execute(self._delete, {"row": row.id}).rowcount != 1:
                        row = None  # another request deleted it first
        except sa_exc.DBAPIError as e:
            if not _not_the_table(e):
                raise StoreUnavailable(f"SQL session store: {e.orig}") from e
            if not self._warned:
                self._warned = True
                log.warning(
                    "SESSION_MIGRATE_FLASK_SESSION: no Flask-Session table %r with a session_id column"
                    " (SESSION_FLASK_SESSION_TABLE); no Flask-Session session is imported until it is there: %s",
                    self.table.fullname,
                    e.orig,
                )
            return None
        except sa_exc.SQLAlchemyError as e:  # the pool's timeout, a connection that cannot be made
            raise StoreUnavailable(f"SQL session store: {e}") from e
        if row is None:
            return None
        data, expiry = row.data, row.expiry
        if expiry is None or _timestamp(expiry) <= now:
            return None  # expired: Flask-Session deletes it on read, as this did
        if not data:
            return None
        return Taken(bytes(data) if not isinstance(data, str) else data, _timestamp(expiry))
