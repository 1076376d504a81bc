"""Work on the engine's connections: retried once after a dead one, its errors as the store's.

Every statement runs with ``Connection.execute`` on a connection from
``engine.connect()``, so the engine's events, its ``echo`` log and the
instrumentation that listens to them see it. A write on an autocommit
connection has committed itself; on a transactional one it is committed
right after, so each statement but those of the locked change is its own
transaction. On an engine the store made, a thread keeps the connection it
used (``kept``).
"""

from __future__ import annotations

import contextlib
import time
import typing as t

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from . import errors
from .kept import Kept
from .limits import PacketLimit

if t.TYPE_CHECKING:
    from ...errors import SessionTooLarge
    from .schema import TableCheck

__all__ = ["RETRY_WITHIN", "Connections"]

_T = t.TypeVar("_T")

#: A statement that failed because its pooled connection was dead is retried
#: once on a fresh connection, but only if it failed within this many
#: seconds. A connection the server closed (a restart, ``pg_terminate_backend``,
#: ``KILL``, an idle timeout) fails as soon as it is used; a slow failure means
#: the server or the network is in trouble now, and a retry would only make
#: the request wait a second ``SESSION_STORE_TIMEOUT``.
RETRY_WITHIN = 0.25


class Connections:
    """Runs the store's work on connections of ``engine``'s pool, after the table check."""

    def __init__(self, engine: sa.Engine, tables: TableCheck, *, keep: bool = False) -> None:
        """``keep``: threads may keep a connection (an autocommit engine with a pool of the store's own)."""
        self.engine = engine
        self.tables = tables
        #: Each thread's kept connection, where threads keep one.
        self.kept = Kept(engine, keep=keep)
        #: MySQL's ``max_allowed_packet``, and what a statement's size says about it.
        self.limit = PacketLimit(engine, self.run)
        error = errors.driver_error(engine)
        self._caught: tuple[type[BaseException], ...] = (sa_exc.SQLAlchemyError,) + (() if error is None else (error,))

    def run(
        self,
        work: t.Callable[[sa.Connection], _T],
        *,
        retry: bool = True,
        again: t.Callable[[sa.Connection], _T] | None = None,
    ) -> _T:
        """Run ``work`` on a connection from the pool; database errors as the store's.

        Pinging every connection on checkout costs a round trip per request
        to guard against something rare. Instead, the first statement on a
        connection the server has dropped fails at once; SQLAlchemy
        invalidates it, with every pooled connection older than it, and the
        work gets one more try on a new connection: as ``again`` if given
        (work that must change to be run twice), else ``work`` itself unless
        ``retry`` is False (work that must not run twice). Only quick
        failures are retried (``RETRY_WITHIN``), so a hung server still
        costs one timeout, not two.
        """
        if self.tables.pending:
            self.tables.prepare()
        started = time.monotonic()
        try:
            try:
                return self.kept.run(work)
            except sa_exc.DBAPIError as e:
                if not (retry and e.connection_invalidated) or time.monotonic() - started > RETRY_WITHIN:
                    raise
            return self.kept.run(again or work)
        except self._caught as e:
            if errors.too_large(e):
                raise self.limit.too_large(None) from e
            problem = errors.unavailable(e, self.tables.table)
            if problem is None:
                raise
            raise problem from e

    def autocommits(self, conn: sa.Connection) -> bool:
        """Whether the driver commits each statement by itself on ``conn`` (no transaction unless asked)."""
        dbapi_connection = conn.connection.dbapi_connection
        if dbapi_connection is None:  # invalidated: nothing will run on it
            return False
        try:
            return bool(self.engine.dialect.detect_autocommit_setting(dbapi_connection))
        except NotImplementedError:  # a dialect that cannot tell: SQLAlchemy's default, transactional
            return False

    def commit(self, conn: sa.Connection) -> None:
        """Commit the statement just run, unless the connection committed it by itself.

        On an autocommit connection PyMySQL would still send a ``COMMIT``, a
        round trip for nothing.
        """
        if not self.autocommits(conn):
            conn.commit()

    def write(self, conn: sa.Connection, statement: sa.Executable, params: dict[str, t.Any]) -> int:
        """Run one writing statement and commit it; its row count."""
        rowcount = t.cast("sa.CursorResult[t.Any]", conn.execute(statement, params)).rowcount
        self.commit(conn)
        return rowcount

    def write_sized(
        self, conn: sa.Connection, statement: sa.Executable, params: dict[str, t.Any], size: int, near: bool
    ) -> int:
        """``write`` of a session of ``size`` bytes; ``near``: it may be over the database's limit.

        A dead connection then means it was.
        """
        try:
            return self.write(conn, statement, params)
        except sa_exc.DBAPIError as e:
            problem = self.refused(conn, e, size, near)
            if problem is None:
                raise
            raise problem from e

    def refused(self, conn: sa.Connection, error: sa_exc.DBAPIError, size: int, near: bool) -> SessionTooLarge | None:
        """``SessionTooLarge`` if ``error`` says a write of ``size`` bytes was too large, else None.

        MySQL closes the connection after a statement over its limit: one
        it did not close yet is invalidated, so the pool never hands it out.
        """
        if errors.too_large(error) or (near and error.connection_invalidated):
            if not error.connection_invalidated:
                conn.invalidate(error)
            return self.limit.too_large(size)
        return None

    @contextlib.contextmanager
    def transaction(self, conn: sa.Connection) -> t.Iterator[None]:
        """A real transaction on ``conn``, committed at the end, rolled back on any error.

        On an autocommit connection SQLAlchemy's ``begin()`` only marks a
        transaction, and the database would see each statement on its own:
        the row lock of ``SELECT … FOR UPDATE`` would be gone before the
        ``UPDATE``. So it is opened and closed with explicit SQL. Nothing
        else rolls it back (the pool skips the rollback of autocommit
        connections), so a connection whose ROLLBACK fails is invalidated
        rather than returned to the pool inside a transaction.
        """
        if not self.autocommits(conn):
            with conn.begin():
                yield
            return
        conn.exec_driver_sql("BEGIN")
        try:
            yield
            conn.exec_driver_sql("COMMIT")
        except BaseException:
            try:
                conn.exec_driver_sql("ROLLBACK")
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.invalidate()
            raise
