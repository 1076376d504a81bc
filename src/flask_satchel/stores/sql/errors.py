"""What the databases' errors mean for a session store, in each database's words.

SQLAlchemy wraps what a driver raises in its own ``DBAPIError`` classes and
says whether the connection died (``connection_invalidated``); the driver's
original is ``orig``, whose SQLSTATE (PostgreSQL), error number
(MySQL/MariaDB) or message (SQLite) tells the rest. ``unavailable`` maps
them onto the store's errors: ``StoreUnavailable`` (a 503: the next request
may succeed), ``SessionTooLarge`` (no retry can store it), a
``SatchelError`` naming the fix for a missing table; anything else is a bug
and propagates as it is.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ...errors import SatchelError, StoreUnavailable

__all__ = ["deadlock", "refusal", "too_large", "unavailable"]

#: MySQL/MariaDB errors that no retry fixes: access denied (to the server,
#: the database, a command) and no such database.
_MYSQL_REFUSALS = frozenset({1044, 1045, 1049, 1142, 1698})
#: PostgreSQL's: insufficient privilege, no such schema, a read-only server.
_PG_REFUSALS = frozenset({"42501", "3F000", "25006"})
#: PostgreSQL refuses a connection before any statement runs, with no
#: SQLSTATE on the client side: these are its words for what no retry fixes
#: (a server still starting up or out of connection slots says otherwise).
_PG_REFUSAL_WORDS = (
    "does not exist",  # the database or the role
    "authentication failed",  # password, peer, ident…
    "no pg_hba.conf entry",
    "no password supplied",
    "permission denied",
)


def _code(orig: object) -> object:
    """MySQL's error number: the first argument of a PyMySQL error."""
    args: tuple[t.Any, ...] = getattr(orig, "args", ())
    return args[0] if args else None


def _says(
    error: BaseException | None, sqlstates: tuple[str, ...], codes: tuple[int, ...], words: tuple[str, ...]
) -> bool:
    """Whether the driver's error in ``error`` has one of the SQLSTATEs, MySQL codes or words given."""
    orig = getattr(error, "orig", error)
    if getattr(orig, "sqlstate", None) in sqlstates or _code(orig) in codes:
        return True
    text = str(orig)
    return any(word in text for word in words)


def missing_table(error: sa_exc.DBAPIError) -> bool:
    """Whether ``error`` says the table does not exist."""
    # PostgreSQL's undefined_table, MySQL's ER_NO_SUCH_TABLE, SQLite's words.
    return _says(error, ("42P01",), (1146,), ("no such table",))


def missing_column(error: sa_exc.DBAPIError) -> bool:
    """Whether ``error`` says a column of the store's statements is not in the table: another app's table."""
    # PostgreSQL's undefined_column, MySQL's ER_BAD_FIELD_ERROR, SQLite's words.
    return _says(error, ("42703",), (1054,), ("no such column", "has no column named"))


def too_large(error: BaseException) -> bool:
    """Whether the database said a value or statement is over its size limit."""
    # PostgreSQL's program_limit_exceeded; MySQL's ER_NET_PACKET_TOO_LARGE and
    # ER_WARN_ALLOWED_PACKET_OVERFLOWED, or its words; SQLite's SQLITE_TOOBIG.
    return _says(error, ("54000",), (1153, 1301), ("max_allowed_packet", "string or blob too big"))


def deadlock(error: BaseException | None) -> bool:
    """Whether ``error`` is the database choosing this transaction as a deadlock victim."""
    # PostgreSQL's deadlock_detected, MySQL's ER_LOCK_DEADLOCK.
    return error is not None and _says(error, ("40P01",), (1213,), ())


def refusal(error: BaseException | None) -> str | None:
    """What the database said, if it refused this configuration for good; None for what may pass.

    An unreachable server, or one starting up, gets another try on the next
    request; a wrong password or database name gets the same answer until
    someone changes the configuration or the server.
    """
    orig = getattr(error, "orig", None)
    if orig is None:
        return None
    text = str(orig)
    if (
        _code(orig) in _MYSQL_REFUSALS
        or getattr(orig, "sqlstate", None) in _PG_REFUSALS
        or ("FATAL:" in text and any(words in text for words in _PG_REFUSAL_WORDS))
        or "fe_sendauth: no password supplied" in text
    ):
        return f"the database server refuses it: {' '.join(text.split())}"
    return None


def driver_error(engine: sa.Engine) -> type[BaseException] | None:
    """The DB-API driver's base exception class (a pool may raise it unwrapped); None without a driver."""
    error = getattr(engine.dialect.dbapi, "Error", None)
    return error if isinstance(error, type) and issubclass(error, BaseException) else None


def unavailable(error: BaseException, table: sa.Table) -> SatchelError | None:
    """The store's error for ``error``, raised by SQLAlchemy or the driver; None for a bug, raised as it is.

    ``SessionTooLarge`` is the caller's: it knows the size and the limit.
    """
    if isinstance(error, sa_exc.DBAPIError):
        if missing_table(error):
            return SatchelError(
                f"the session table {table.fullname!r} does not exist: run 'flask session create-table'"
                " or let Flask-Satchel create it (SESSION_SQLALCHEMY_CREATE_TABLE = True)"
            )
        if missing_column(error):
            return StoreUnavailable(
                f"SQL session store: the table {table.fullname!r} is not Flask-Satchel's ({error.orig});"
                " set SESSION_SQLALCHEMY_TABLE to another table name"
            )
        if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)) or error.connection_invalidated:
            return StoreUnavailable(f"SQL session store: {error.orig}")
        return None
    if isinstance(error, (sa_exc.TimeoutError, sa_exc.DisconnectionError)):  # pool exhausted, connect failed
        return StoreUnavailable(f"SQL session store: {error}")
    if isinstance(error, sa_exc.SQLAlchemyError):
        return None
    # SQLAlchemy wraps what statements raise, but not what the driver raises
    # while the pool resets or closes a connection (a rollback or an
    # isolation reset on a connection that just broke): those are about the
    # connection, never about the store's own SQL.
    return StoreUnavailable(f"SQL session store: {error}")
