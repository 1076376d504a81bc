"""The store's tables, and the check that they are there and are the store's.

Several apps can share one table: each row carries the app's
``SESSION_KEY_PREFIX`` in a ``prefix`` column, part of the primary key, and
every query filters on it. With ``SESSION_LOCKING`` the locks live in a
second table, ``<table>_locks``, created only then.

At startup (``SESSION_SQLALCHEMY_CREATE_TABLE``, the default) the store
checks its table and creates it if missing. A table of that name that is not
the store's, such as Flask-Session's, is a ``ConfigError``, and so is a
configuration the database refuses (a wrong password or database). A
database that does not answer yet does not stop the app: the check runs
before the first statement instead, once, and until it passes each session
request is a ``StoreUnavailable`` (a 503) whose message says why. The hot
path pays one attribute test for it.
"""

from __future__ import annotations

import threading

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql

from ...errors import ConfigError, StoreUnavailable
from . import errors

__all__ = ["DEFAULT_TABLE", "TableCheck", "make_lock_table", "make_table"]

#: The table's name unless ``SESSION_SQLALCHEMY_TABLE`` says otherwise. Not
#: Flask-Session's ``sessions``: an app moving over has that table already.
DEFAULT_TABLE = "satchel_sessions"


def _text(length: int) -> sa.types.TypeEngine[str]:
    # Compare byte for byte on MySQL/MariaDB too, whose default collations
    # ignore case and trailing spaces: user "Alice" is not user "alice ".
    binary = mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin")
    return sa.String(length).with_variant(binary, "mysql", "mariadb")


def _blob() -> sa.types.TypeEngine[bytes]:
    # MySQL's BLOB stops at 64 KiB; sessions may be larger.
    return sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def make_table(name: str = DEFAULT_TABLE, schema: str | None = None, metadata: sa.MetaData | None = None) -> sa.Table:
    """The sessions table, on ``metadata`` (a new one by default) for Alembic or ``create_all``."""
    return sa.Table(
        name,
        sa.MetaData() if metadata is None else metadata,
        sa.Column("prefix", _text(128), primary_key=True),
        sa.Column("key", _text(128), primary_key=True),
        sa.Column("data", _blob(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("last_seen", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("permanent", sa.Boolean(), nullable=False),
        sa.Column("user", _text(255), nullable=True),
        sa.Column("client", sa.LargeBinary(), nullable=True),
        sa.Index(f"{name}_expires", "prefix", "expires_at"),
        sa.Index(f"{name}_user", "prefix", "user"),
        schema=schema,
    )


def make_lock_table(
    name: str = DEFAULT_TABLE, schema: str | None = None, metadata: sa.MetaData | None = None
) -> sa.Table:
    """The ``<name>_locks`` table of ``SESSION_LOCKING``: one row per held lock, each a lease."""
    return sa.Table(
        f"{name}_locks",
        sa.MetaData() if metadata is None else metadata,
        sa.Column("prefix", _text(128), primary_key=True),
        sa.Column("key", _text(128), primary_key=True),
        sa.Column("token", _text(128), nullable=False),
        sa.Column("until", sa.Double(), nullable=False),
        schema=schema,
    )


def foreign_table(table: sa.Table, columns: list[str], *, locks: bool) -> ConfigError:
    """The error for a table that has the name of one of the store's (``locks``: the lock table) but not its columns."""
    what = "the SESSION_LOCKING table" if locks else "the table"
    names = {name.lower() for name in columns}
    listed = ", ".join(columns)
    if {"session_id", "data", "expiry"} <= names:
        whose = (
            f"it looks like Flask-Session's session table (columns {listed}). Set SESSION_SQLALCHEMY_TABLE to"
            f" another table name, such as the default {DEFAULT_TABLE!r}, for Flask-Satchel to create; to move"
            f" the sessions in this one over, name it in SESSION_FLASK_SESSION_TABLE with"
            " SESSION_MIGRATE_FLASK_SESSION = True"
        )
    else:
        whose = (
            f"it looks like another app's table (columns {listed}). Set SESSION_SQLALCHEMY_TABLE to another table"
            " name, one that no other app uses, for Flask-Satchel to create"
        )
    return ConfigError(
        "SESSION_SQLALCHEMY_TABLE", f"{what} {table.fullname!r} exists but is not Flask-Satchel's: {whose}"
    )


class TableCheck:
    """Creates the store's tables, refuses ones that are not its own, and runs late if the database was not up."""

    def __init__(self, engine: sa.Engine, metadata: sa.MetaData, table: sa.Table, lock_table: sa.Table | None) -> None:
        self.engine = engine
        self.metadata = metadata
        self.table = table
        self.lock_table = lock_table
        #: The config key that names the database, for errors about it.
        self.source = "SESSION_SQLALCHEMY"
        #: The check could not run at startup and still has to, before the first statement.
        self.pending = False
        self._lock = threading.Lock()
        self._failures = 0  # attempts that failed so far
        self._failure = ""  # what the last one said
        error = errors.driver_error(engine)
        self._caught: tuple[type[BaseException], ...] = (sa_exc.SQLAlchemyError,) + (() if error is None else (error,))

    def create(self) -> None:
        """Create the tables and their indexes if they do not exist; safe to run at every start.

        A table of that name that is not the store's (Flask-Session's own
        is called ``sessions`` too) is a ``ConfigError`` naming
        ``SESSION_SQLALCHEMY_TABLE``: writing to it could only fail.
        """
        try:
            self._refuse_foreign_tables()
            try:
                self.metadata.create_all(self.engine, checkfirst=True)
            except (sa_exc.ProgrammingError, sa_exc.IntegrityError):
                # Another process (a second worker starting) created it between
                # our check and our CREATE: that is what we wanted.
                if not sa.inspect(self.engine).has_table(self.table.name, self.table.schema):
                    raise
        except self._caught as e:
            problem = errors.unavailable(e, self.table)
            if problem is None:
                raise
            raise problem from e
        self.pending = False

    def _refuse_foreign_tables(self) -> None:
        """A ``ConfigError`` when a table with one of the store's names lacks any of its columns."""
        inspector = sa.inspect(self.engine)
        translate = self.engine.get_execution_options().get("schema_translate_map") or {}
        for table in self.metadata.sorted_tables:
            try:
                found = inspector.get_columns(table.name, translate.get(table.schema, table.schema))
            except sa_exc.NoSuchTableError:
                continue
            columns = [str(column["name"]) for column in found]
            if {column.name for column in table.columns} - {name.lower() for name in columns}:
                raise foreign_table(table, columns, locks=table is self.lock_table)

    def check(self) -> None:
        """``create``, with what the database refuses for good as a ``ConfigError`` naming the key.

        A wrong password, database or schema, or missing rights, can only be
        seen once the server answers; what remains a ``StoreUnavailable`` is
        a server that did not answer, which the next try may find up.
        """
        try:
            self.create()
        except StoreUnavailable as e:
            problem = errors.refusal(e.__cause__)
            if problem is None:
                raise
            raise ConfigError(self.source, problem) from e.__cause__
        except sa_exc.DBAPIError as e:
            problem = errors.refusal(e)
            if problem is None:
                raise
            raise ConfigError(self.source, problem) from e

    def prepare(self) -> None:
        """Run the check that the database was not there for at startup; until it passes, StoreUnavailable.

        One thread at a time runs it, and it never runs again once it has
        passed. A thread that waited while another one's attempt failed gets
        that failure, rather than waiting on the same server once more. A
        configuration the database refuses is a 503 too, never a 500, with
        the reason in the message that the outage log shows.
        """
        failures = self._failures
        with self._lock:
            if not self.pending:
                return
            if self._failures != failures:  # an attempt failed while this thread waited
                raise StoreUnavailable(self._failure)
            try:
                self.check()
            except StoreUnavailable as e:
                self._failed(str(e))
                raise
            except ConfigError as e:
                raise StoreUnavailable(
                    self._failed(f"SQL session store: {e} (sessions are refused until this is fixed)")
                ) from e
            except sa_exc.DBAPIError as e:
                raise StoreUnavailable(
                    self._failed(f"SQL session store: checking the table {self.table.fullname!r} failed: {e.orig}")
                ) from e

    def _failed(self, failure: str) -> str:
        """Note a failed check for the threads waiting on it (under the lock); ``failure``."""
        self._failure = failure
        self._failures += 1
        return failure
