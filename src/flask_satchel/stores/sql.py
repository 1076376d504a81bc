"""Sessions in a table of PostgreSQL, MariaDB/MySQL or SQLite, through SQLAlchemy Core.

The store uses only its own connections and transactions from the engine's
pool, never an application's ORM session, so it can neither commit nor roll
back the application's work. A read is one primary-key ``SELECT``. A change
is first tried as one compare-and-set statement: the delta is merged in
Python onto the data this thread just loaded, and the ``UPDATE`` (or
``DELETE`` when empty) only matches while the row still holds exactly those
bytes. A merge is a pure function of the data it starts from, so when the
bytes match, nothing another request did can be lost, whatever happened in
between. When they do not (another request wrote first, or nothing was
loaded), the change is one short transaction that locks the row
(``SELECT … FOR UPDATE``; on SQLite an ``UPDATE`` first, which takes the
database's write lock), merges onto what is there and writes it back.

Those hot statements (the read, the compare-and-set, ``touch``, ``delete``
and the ``INSERT`` of a new session) are compiled by SQLAlchemy once and run
on a bare DB-API cursor of a pooled connection: ``Connection.execute`` costs
about as much CPU as the round trip itself. Errors, disconnects and
transactions are handled as SQLAlchemy would; but the engine's statement
events (``before_cursor_execute``, ``handle_error``) and its ``echo`` log do
not see these statements. Pool events (checkout, checkin, invalidate) do.
Everything else (the locked change, listing, cleanup, locks, DDL) goes
through SQLAlchemy's ``Connection``.

Engines made from ``SESSION_URL`` run in autocommit mode: a single statement
is its own transaction, so a read costs no ``BEGIN`` before it and no
``ROLLBACK`` after it, and the locked path opens its transaction explicitly.
They do not ping on every checkout either: a pooled connection the server
has dropped fails at once, and the statement is retried once on a fresh one
(see ``_run``).

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

For engines it creates from ``SESSION_URL``, the store bounds every wait on
the database by ``SESSION_STORE_TIMEOUT``: the server cancels slow statements
(``statement_timeout``), and the client gives up on a server that does not
answer at all (a frozen host, a dead link), where a server-side limit cannot
help. Connecting is bounded too, in whole seconds and at least 2 on
PostgreSQL (libpq's rule). An engine handed over in ``SESSION_SQLALCHEMY`` is
used as configured: set its timeouts there.

A session too large for the database is ``SessionTooLarge``, never
``StoreUnavailable``: no retry can store it. MySQL and MariaDB refuse a
statement longer than ``max_allowed_packet`` and close the connection, so
the client mostly sees only "server has gone away", which would otherwise
read as a dead connection and be retried. So the store measures a large
statement before sending it: one whose blobs alone are over the limit is
refused without being sent; one that may or may not fit (written out as
SQL, bytes take up to twice their length) is sent, and the connection dying under it means it was
too large. The connection is invalidated, so the next request gets a fresh
one. The limit is read once, with ``SELECT @@max_allowed_packet``, when the
first session large enough to come near it is written. A compare-and-set carries the old data as well as
the new, so a session near the limit skips it and is changed under the row
lock, sending the new data only. The row is left as it was: a refused
``INSERT`` writes nothing and a refused change is rolled back. The errors
the databases give for "too large" (MySQL's 1153 and 1301, PostgreSQL's
``program_limit_exceeded``, SQLite's "string or blob too big") are
``SessionTooLarge`` too.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import typing as t

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql

from .. import serialization
from ..errors import ConfigError, SatchelError, SessionTooLarge, StoreUnavailable
from .base import Change, LastRead, Record, merge_data, record_from_row, times_after

if t.TYPE_CHECKING:
    from urllib.parse import SplitResult

    from ..settings import Settings

__all__ = ["SQLStore"]

log = logging.getLogger("flask_satchel")

_T = t.TypeVar("_T")

#: The table's name unless ``SESSION_SQLALCHEMY_TABLE`` says otherwise. Not
#: Flask-Session's ``sessions``: an app moving over has that table already.
DEFAULT_TABLE = "satchel_sessions"

#: Rows deleted per transaction by ``cleanup``: short transactions keep locks brief.
CLEANUP_BATCH = 5000

#: A statement that failed because its pooled connection was dead is retried
#: once on a fresh connection, but only if it failed within this many
#: seconds. A connection the server closed (a restart, ``pg_terminate_backend``,
#: ``KILL``, an idle timeout) fails as soon as it is used; a slow failure means
#: the server or the network is in trouble now, and a retry would only make
#: the request wait a second ``SESSION_STORE_TIMEOUT``.
RETRY_WITHIN = 0.25

#: No MySQL or MariaDB release has a smaller ``max_allowed_packet`` by
#: default: a statement this short is sent without looking the limit up.
_SMALLEST_DEFAULT_PACKET = 1024 * 1024
#: Room in a writing statement for all but its blobs: the SQL, key, prefix, user and times.
_STATEMENT_ROOM = 4096

#: Bare URL schemes mapped to the drivers Flask-Satchel's extras install.
_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


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


def _insert_if_absent(table: sa.Table, dialect: str) -> sa.Insert:
    """An INSERT that does nothing, rather than fail, when the primary key is taken.

    It returns the key it inserted where the database can (SQLAlchemy reports
    no row count for psycopg INSERTs); MySQL's INSERT IGNORE counts rows.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing().returning(table.c.key)
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table).on_conflict_do_nothing().returning(table.c.key)
    return sa.insert(table).prefix_with("IGNORE")


# Bounded waits --------------------------------------------------------------------


def _bounded_psycopg_connection() -> type[t.Any]:
    """A psycopg connection class whose every wait on the server is bounded.

    psycopg has no client-side statement timeout: ``statement_timeout`` is
    enforced by the server, which cannot enforce anything while it is frozen
    or unreachable behind a silent network. psycopg funnels every exchange
    through ``Connection.wait``, which accepts a timeout since psycopg 3.3;
    on expiry the connection is closed (its state is unknown) and the error
    is an ``OperationalError``, which SQLAlchemy sees as a disconnect.
    """
    import psycopg

    if not hasattr(psycopg.errors, "_WaitTimeout"):  # before psycopg 3.3: statement_timeout only
        return psycopg.Connection

    class BoundedConnection(psycopg.Connection[t.Any]):
        #: Seconds to wait for any answer from the server.
        answer_timeout: float = 2.0

        def wait(self, gen: t.Any, interval: float = 0.1, timeout: float | None = None) -> t.Any:
            try:
                return super().wait(gen, interval, self.answer_timeout if timeout is None else timeout)
            except psycopg.errors._WaitTimeout:
                self.pgconn.finish()
                raise psycopg.errors.ConnectionTimeout(
                    f"no answer from the database server within {self.answer_timeout:g} s"
                ) from None

    return BoundedConnection


def _make_engine(url: SplitResult, timeout: float) -> sa.Engine:
    """An engine for ``SESSION_URL`` with every wait bounded by ``timeout`` seconds."""
    sa_url = sa.make_url(url.geturl())
    scheme = sa_url.drivername
    sa_url = sa_url.set(drivername=_DRIVERS.get(scheme, scheme))
    backend, driver = sa_url.get_backend_name(), sa_url.get_driver_name()
    query = sa_url.query
    connect_args: dict[str, t.Any] = {}
    connection_class: type[t.Any] | None = None
    if backend == "postgresql" and driver == "psycopg":
        # libpq counts whole seconds, at least 2.
        connect_args["connect_timeout"] = max(2, math.ceil(timeout))
        # Server settings in the URL's ``options`` are kept, after this one:
        # PostgreSQL applies them in order, so the URL still wins for what
        # it names (``?options=-c synchronous_commit=off``, say) without
        # losing the timeout.
        url_options = query.get("options", ())
        connect_args["options"] = " ".join(
            [f"-c statement_timeout={math.ceil(timeout * 1000)}"]
            + ([url_options] if isinstance(url_options, str) else list(url_options))
        )
        # Prepare each statement on its first run rather than its fifth:
        # preparing costs psycopg one extra round trip either way, once per
        # statement and pooled connection, and from then on the server skips
        # parsing and planning. The store runs a dozen statements, all hot.
        connect_args["prepare_threshold"] = 0
        if "prepare_threshold" in query:
            # psycopg wants a number (or None, never prepare); a URL brings text.
            threshold = query["prepare_threshold"]
            sa_url = sa_url.difference_update_query(["prepare_threshold"])
            query = sa_url.query
            try:
                connect_args["prepare_threshold"] = None if str(threshold).lower() == "none" else int(str(threshold))
            except ValueError:
                raise ConfigError(
                    "SESSION_URL", f"prepare_threshold must be a whole number or 'none', not {threshold!r}"
                ) from None
        connection_class = _bounded_psycopg_connection()
    elif backend in ("mysql", "mariadb") and driver == "pymysql":
        connect_args.update(connect_timeout=timeout, read_timeout=timeout, write_timeout=timeout)
    else:
        raise ConfigError(
            "SESSION_URL",
            f"unsupported SQL driver {scheme!r}: use postgresql+psycopg:// or mysql+pymysql:// (mariadb+pymysql://),"
            " or hand an Engine to SESSION_SQLALCHEMY",
        )
    for name in list(connect_args):
        if name in query and name != "options":  # what the URL says explicitly wins
            del connect_args[name]
    try:
        # Autocommit: every statement of the store but the locked change is a
        # transaction of its own, so BEGIN and COMMIT/ROLLBACK would be round
        # trips that buy nothing. Set once per connection at connect time, never
        # switched per checkout: PyMySQL switches with a query, which fails on
        # a broken connection while it is being returned to the pool. No
        # pre-ping: it costs a round trip on every checkout; ``_run`` retries
        # on a dead connection instead.
        engine = sa.create_engine(
            sa_url,
            isolation_level="AUTOCOMMIT",
            skip_autocommit_rollback=True,
            pool_timeout=timeout,
            connect_args=connect_args,
        )
    except ModuleNotFoundError:
        raise  # a driver not installed: ``open_store`` names the extra that installs it
    except (ImportError, sa_exc.ArgumentError) as e:
        raise ConfigError("SESSION_URL", f"cannot use {sa_url.render_as_string()!r}: {e}") from None

    if connection_class is not None:

        @sa.event.listens_for(engine, "do_connect")
        def connect(dialect: t.Any, record: t.Any, cargs: t.Any, cparams: dict[str, t.Any]) -> t.Any:
            conn = connection_class.connect(*cargs, **cparams)
            if hasattr(conn, "answer_timeout"):
                conn.answer_timeout = timeout
            return conn

    return engine


def _engine_of(client: t.Any) -> sa.Engine:
    """The engine in ``SESSION_SQLALCHEMY``: an Engine, or a Flask-SQLAlchemy ``db``'s engine."""
    if isinstance(client, sa.Engine):
        return client
    if type(client).__module__.split(".")[0] == "flask_sqlalchemy":
        try:
            engine = client.engine  # the current app's default engine; needs an app context
        except (RuntimeError, KeyError) as e:
            raise ConfigError(
                "SESSION_SQLALCHEMY", f"cannot get the engine of {client!r} ({e}); call db.init_app(app) first"
            ) from None
        if isinstance(engine, sa.Engine):
            return engine
    raise ConfigError(
        "SESSION_SQLALCHEMY",
        f"expected an SQLAlchemy Engine or a Flask-SQLAlchemy db object, got {type(client).__name__}"
        " (async engines and connections are not supported)",
    )


def _missing_table(error: sa_exc.DBAPIError) -> bool:
    """Whether ``error`` says the table does not exist, in each database's words."""
    orig = error.orig
    if getattr(orig, "sqlstate", None) == "42P01":  # PostgreSQL: undefined_table
        return True
    args = getattr(orig, "args", ())
    if args and args[0] == 1146:  # MySQL/MariaDB: ER_NO_SUCH_TABLE
        return True
    return "no such table" in str(orig)  # SQLite


def _missing_column(error: sa_exc.DBAPIError) -> bool:
    """Whether ``error`` says a column of the store's statements is not in the table: another app's table."""
    orig = error.orig
    if getattr(orig, "sqlstate", None) == "42703":  # PostgreSQL: undefined_column
        return True
    args: tuple[t.Any, ...] = getattr(orig, "args", ())
    if args and args[0] == 1054:  # MySQL/MariaDB: ER_BAD_FIELD_ERROR
        return True
    text = str(orig)
    return "no such column" in text or "has no column named" in text  # SQLite


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


def _refusal(error: BaseException | None) -> str | None:
    """What the database said, if it refused this configuration for good; None for what may pass.

    An unreachable server, or one starting up, gets another try on the next
    request; a wrong password or database name gets the same answer until
    someone changes the configuration or the server.
    """
    orig = getattr(error, "orig", None)
    if orig is None:
        return None
    args: tuple[t.Any, ...] = getattr(orig, "args", ())
    text = str(orig)
    if (
        (bool(args) and args[0] in _MYSQL_REFUSALS)
        or getattr(orig, "sqlstate", None) in _PG_REFUSALS
        or ("FATAL:" in text and any(words in text for words in _PG_REFUSAL_WORDS))
        or "fe_sendauth: no password supplied" in text
    ):
        return f"the database server refuses it: {' '.join(text.split())}"
    return None


def _foreign_table(table: sa.Table, columns: list[str], *, locks: bool) -> ConfigError:
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


def _refused_as_too_large(error: BaseException) -> bool:
    """Whether the database said a value or statement is over its size limit, in each database's words."""
    orig = getattr(error, "orig", error)
    if getattr(orig, "sqlstate", None) == "54000":  # PostgreSQL: program_limit_exceeded
        return True
    args: tuple[t.Any, ...] = getattr(orig, "args", ())
    if args and args[0] in (1153, 1301):  # MySQL/MariaDB: ER_NET_PACKET_TOO_LARGE, ER_WARN_ALLOWED_PACKET_OVERFLOWED
        return True
    text = str(orig)
    return "max_allowed_packet" in text or "string or blob too big" in text  # and SQLite's SQLITE_TOOBIG


def _deadlock(error: BaseException | None) -> bool:
    """Whether ``error`` is the database choosing this transaction as a deadlock victim."""
    orig = getattr(error, "orig", None)
    if getattr(orig, "sqlstate", None) == "40P01":  # PostgreSQL: deadlock_detected
        return True
    args: tuple[t.Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] == 1213  # MySQL/MariaDB: ER_LOCK_DEADLOCK


def _statement(statement: sa.Executable, params: dict[str, t.Any]) -> t.Callable[[sa.Connection], int]:
    """Work for ``SQLStore._run``: run one writing statement and commit; its row count.

    On an autocommit connection the statement has committed itself and
    ``commit()`` only ends SQLAlchemy's bookkeeping (psycopg sends nothing
    when no transaction is open); otherwise it commits the transaction the
    driver began.
    """

    def work(conn: sa.Connection) -> int:
        rowcount = t.cast("sa.CursorResult[t.Any]", conn.execute(statement, params)).rowcount
        conn.commit()
        return rowcount

    return work


class _Hot:
    """One hot statement, compiled by SQLAlchemy once, run on a bare DB-API cursor.

    ``Connection.execute`` costs about 100 µs a statement here (cache key,
    execution context, result metadata): as much as the round trip itself
    to a PostgreSQL on loopback. SQLAlchemy still writes the SQL, so
    quoting, paramstyle and casts are the dialect's; what is left per call
    is what ``execute`` would do too: put the parameters in the statement's
    order and through each type's bind processor, and each column through
    its result processor (on MySQL/MariaDB and SQLite, ``permanent`` comes
    back as 0/1 and becomes a bool; bytes are wrapped in the driver's
    ``Binary``). Compiled on first use, after the engine's first connection
    has told the dialect about the server (MySQL's ``ANSI_QUOTES``, say).
    """

    def __init__(self, statement: sa.ClauseElement) -> None:
        self.statement = statement
        #: The SQL for the DB-API cursor; empty until the first run compiles it.
        self.sql = ""
        #: Whether it changes rows: then a transactional connection commits after it; else its first row is read.
        self.writes = False
        self._dialect: sa.Dialect | None = None
        self._constants: dict[str, t.Any] = {}
        self._processors: list[tuple[str, t.Callable[[t.Any], t.Any]]] = []
        self._order: tuple[str, ...] | None = None
        self._results: list[t.Callable[[t.Any], t.Any] | None] | None = None

    def compile(self, dialect: sa.Dialect, schema_translate_map: dict[str | None, str | None] | None) -> None:
        """Compile for ``dialect``; two threads may both do it, each setting the same values, ``sql`` last."""
        translate: dict[str, t.Any] = {"schema_translate_map": schema_translate_map, "render_schema_translate": True}
        compiled = t.cast(
            "sa.sql.compiler.SQLCompiler",
            self.statement.compile(dialect=dialect, **(translate if schema_translate_map else {})),
        )
        constants: dict[str, t.Any] = {}
        processors: list[tuple[str, t.Callable[[t.Any], t.Any]]] = []
        for bind, name in compiled.bind_names.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if not bind.required:  # a value fixed in the statement, the prefix: bound once
                constants[name] = bind.effective_value if process is None else process(bind.effective_value)
            elif process is not None:
                processors.append((name, process))
        self._dialect, self._constants, self._processors = dialect, constants, processors
        self._order = None if compiled.positiontup is None else tuple(compiled.positiontup)
        self.writes = compiled.isinsert or compiled.isupdate or compiled.isdelete
        self.sql = compiled.string

    def params(self, values: dict[str, t.Any]) -> dict[str, t.Any] | tuple[t.Any, ...]:
        """``values`` with the constants, processed, as the driver's paramstyle wants them."""
        params = {**self._constants, **values}
        for name, process in self._processors:
            params[name] = process(params[name])
        return params if self._order is None else tuple(params[name] for name in self._order)

    def row(self, cursor: t.Any) -> tuple[t.Any, ...] | None:
        """The cursor's first row, each value through its column's result processor."""
        row = cursor.fetchone()
        if row is None:
            return None
        results = self._results
        if results is None:  # the column types the driver reports, known after a first run
            dialect = self._dialect
            assert dialect is not None
            columns = getattr(self.statement, "exported_columns", ())
            results = [
                column.type.dialect_impl(dialect).result_processor(dialect, description[1])
                for column, description in zip(columns, cursor.description, strict=True)
            ]
            self._results = results
        return tuple(value if process is None else process(value) for process, value in zip(results, row, strict=True))


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
        # SQLite has no row locks and no FOR UPDATE: taking its write lock
        # with an UPDATE before reading makes the read-merge-write atomic.
        self._lock_by_update = engine.dialect.name == "sqlite"
        # Per thread, the key and raw data of the last record loaded: the
        # request that loaded it applies its change against exactly those
        # bytes (compare-and-set) without reading the row again.
        self._seen: LastRead[bytes] = LastRead()
        # MySQL and MariaDB refuse statements over max_allowed_packet, read
        # when a session first comes near it (see the module docstring).
        self._packet_limited = engine.dialect.name in ("mysql", "mariadb")
        self._max_packet: int | None = None
        #: The config key that names the database, for errors about it.
        self._source = "SESSION_SQLALCHEMY"
        # The table check that could not run at startup, still to run before
        # the first statement (see ``_prepare``). Only ``from_settings`` sets
        # it: whoever makes a store by hand creates its table by hand.
        self._pending = False
        self._prepare_lock = threading.Lock()
        self._failures = 0  # attempts that failed so far
        self._failure = ""  # what the last one said
        self._build_statements()

    @classmethod
    def from_settings(cls, settings: Settings) -> SQLStore:
        if len(settings.key_prefix) > 128:
            raise ConfigError("SESSION_KEY_PREFIX", "must be at most 128 characters for the sqlalchemy store")
        if settings.client is not None and settings.url is not None:
            raise ConfigError("SESSION_URL", "give either SESSION_URL or SESSION_SQLALCHEMY, not both")
        if settings.client is not None:
            engine, owns_engine = _engine_of(settings.client), False
        elif settings.url is not None:
            engine, owns_engine = _make_engine(settings.url, settings.store_timeout), True
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
            store._source = "SESSION_URL"
        if settings.sqlalchemy_create_table:
            try:
                store._check_table()
            except StoreUnavailable as e:
                # Containers start in any order: the app starts while its
                # database is still coming up, and answers session requests
                # with a 503 until the check has passed on first use.
                store._pending = True
                log.warning(
                    "Session store sqlalchemy: no database at startup, the table check will run on first use: %s", e
                )
            except BaseException:
                store.close()
                raise
        return store

    def _check_table(self) -> None:
        """``create_table``, with what the database refuses for good as a ``ConfigError`` naming the key.

        A wrong password, database or schema, or missing rights, can only be
        seen once the server answers; what remains a ``StoreUnavailable`` is
        a server that did not answer, which the next try may find up.
        """
        try:
            self.create_table()
        except StoreUnavailable as e:
            problem = _refusal(e.__cause__)
            if problem is None:
                raise
            raise ConfigError(self._source, problem) from e.__cause__
        except sa_exc.DBAPIError as e:
            problem = _refusal(e)
            if problem is None:
                raise
            raise ConfigError(self._source, problem) from e

    def _prepare(self) -> None:
        """Run the table check that the database was not there for at startup; until it passes, StoreUnavailable.

        One thread at a time runs it, and it never runs again once it has
        passed. A thread that waited while another one's attempt failed gets
        that failure, rather than waiting on the same server once more. A
        configuration the database refuses is a 503 too, never a 500, with
        the reason in the message that the outage log shows.
        """
        failures = self._failures
        with self._prepare_lock:
            if not self._pending:
                return
            if self._failures != failures:  # an attempt failed while this thread waited
                raise StoreUnavailable(self._failure)
            try:
                self._check_table()
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
            self._pending = False

    def _failed(self, failure: str) -> str:
        """Note a failed table check for the threads waiting on it (under ``_prepare_lock``); ``failure``."""
        self._failure = failure
        self._failures += 1
        return failure

    def _build_statements(self) -> None:
        """Build every statement once: the hot ones for ``_execute``, the rest for ``_run``."""
        c = self.table.c
        pk = sa.and_(c.prefix == self.prefix, c.key == sa.bindparam("b_key"))
        live = sa.and_(c.prefix == self.prefix, c.expires_at > sa.bindparam("b_now"))
        meta = (c.created_at, c.last_seen, c.expires_at, c.permanent, c.user, c.client)
        self._load = _Hot(sa.select(c.data, *meta).where(pk))
        self._insert = _Hot(sa.insert(self.table))
        # After a dead connection the first INSERT may have landed: keys are
        # fresh 256-bit hashes, so a row already there can only be that one.
        self._insert_again = _Hot(_insert_if_absent(self.table, self.engine.dialect.name))
        # Compare-and-set: the row is written only while it holds the bytes
        # the change was merged onto. The user and client columns are left
        # out unless the change sets them, so values another request wrote
        # there are kept; hence one statement per combination.
        unchanged = sa.and_(pk, c.data == sa.bindparam("b_seen"))
        self._delete_if_unchanged = _Hot(sa.delete(self.table).where(unchanged))
        self._update_if_unchanged: dict[tuple[bool, bool], _Hot] = {}
        for sets_user in (False, True):
            for sets_client in (False, True):
                values: dict[str, t.Any] = {
                    "data": sa.bindparam("b_data"),
                    "last_seen": sa.bindparam("b_last_seen"),
                    "expires_at": sa.bindparam("b_expires_at"),
                    "permanent": sa.bindparam("b_permanent"),
                }
                if sets_user:
                    values["user"] = sa.bindparam("b_user")
                if sets_client:
                    values["client"] = sa.bindparam("b_client")
                # Nor over a newer refresh: last_seen only moves forward (the locked path merges it).
                newer = sa.and_(unchanged, c.last_seen <= sa.bindparam("b_last_seen"))
                statement = sa.update(self.table).where(newer).values(values)
                self._update_if_unchanged[sets_user, sets_client] = _Hot(statement)
        self._lock = sa.select(c.data, c.user, c.client, c.last_seen, c.expires_at).where(pk)
        if not self._lock_by_update:
            self._lock = self._lock.with_for_update()
        self._take_lock = sa.update(self.table).where(pk).values(last_seen=c.last_seen)  # writes nothing new
        self._update = (
            sa.update(self.table)
            .where(pk)
            .values(
                data=sa.bindparam("b_data"),
                last_seen=sa.bindparam("b_last_seen"),
                expires_at=sa.bindparam("b_expires_at"),
                permanent=sa.bindparam("b_permanent"),
                user=sa.bindparam("b_user"),
                client=sa.bindparam("b_client"),
            )
        )
        self._touch = _Hot(
            sa.update(self.table)
            .where(pk)
            .values(last_seen=sa.bindparam("b_last_seen"), expires_at=sa.bindparam("b_expires_at"))
        )
        self._delete = sa.delete(self.table).where(pk)  # in the locked change
        self._delete_key = _Hot(self._delete)
        self._list = sa.select(c.key, *meta).where(live)
        self._list_user = self._list.where(c.user == sa.bindparam("b_user"))
        self._count = sa.select(sa.func.count()).select_from(self.table).where(live)
        expired = sa.and_(c.prefix == self.prefix, c.expires_at <= sa.bindparam("b_now"))
        if self.engine.dialect.name in ("mysql", "mariadb"):
            # MySQL refuses LIMIT inside an IN subquery but has DELETE … LIMIT.
            self._cleanup: sa.Delete = (
                sa.delete(self.table)
                .where(expired)
                .with_dialect_options(mysql_limit=CLEANUP_BATCH, mariadb_limit=CLEANUP_BATCH)
            )
        elif self.engine.dialect.name == "postgresql":
            # The batch's row addresses are gathered once (an InitPlan) and
            # deleted by address (a TID scan): linear whatever the statistics.
            # As ``key IN (subquery)`` PostgreSQL may plan a nested-loop
            # semi-join, quadratic in the batch: seconds for 5,000 rows of a
            # table not yet analysed. A row refreshed meanwhile has a new
            # address, and is tested against ``expired`` again anyway.
            ctid: sa.ColumnClause[t.Any] = sa.literal_column("ctid")
            batch = sa.select(ctid).select_from(self.table).where(expired).limit(CLEANUP_BATCH).scalar_subquery()
            still_expired = c.expires_at <= sa.bindparam("b_now")  # no prefix: keeps the planner on the TID scan
            self._cleanup = sa.delete(self.table).where(ctid == sa.any_(sa.func.array(batch)), still_expired)
        else:
            batch = sa.select(c.key).where(expired).limit(CLEANUP_BATCH).scalar_subquery()
            self._cleanup = sa.delete(self.table).where(expired, c.key.in_(batch))
        if self.lock_table is not None:
            lc = self.lock_table.c
            held = sa.and_(lc.prefix == self.prefix, lc.key == sa.bindparam("b_key"))
            self._lock_insert = _insert_if_absent(self.lock_table, self.engine.dialect.name)
            self._lock_steal = (
                sa.update(self.lock_table)
                .where(held, lc.until <= sa.bindparam("b_now"))
                .values(token=sa.bindparam("b_token"), until=sa.bindparam("b_until"))
            )
            # Released locks keep their row, lapsed at once: deleting rows
            # that others are inserting deadlocks InnoDB; cleanup() removes them.
            self._unlock = (
                sa.update(self.lock_table)
                .where(held, lc.token == sa.bindparam("b_token"), lc.until > sa.bindparam("b_now"))
                .values(until=0.0)
            )
            self._lock_cleanup = sa.delete(self.lock_table).where(
                lc.prefix == self.prefix, lc.until <= sa.bindparam("b_now")
            )

    # Sessions too large for the database -----------------------------------------

    def _packet_limit(self, conn: sa.Connection | None) -> int:
        """MySQL's ``max_allowed_packet``, read once, on ``conn`` or a connection of its own."""
        limit = self._max_packet
        if limit is None:
            query = "SELECT @@max_allowed_packet"
            if conn is None:
                value = self._run(lambda conn: conn.exec_driver_sql(query).scalar_one())
            else:
                value = conn.exec_driver_sql(query).scalar_one()
            limit = self._max_packet = int(value)
        return limit

    def _fits(self, blobs: t.Iterable[bytes | None], conn: sa.Connection | None = None) -> bool | None:
        """Whether a statement carrying ``blobs`` fits: True, False, or None when only the database can tell.

        Only MySQL and MariaDB have a limit worth measuring. A blob takes
        between one and two bytes of SQL per byte: PyMySQL writes bytes in
        hex, mysqlclient escapes some of them. Until a session is large
        enough to come near the smallest default limit, the limit is not
        read, so most apps never read it; on a server set below that default,
        a statement over the limit is still recognised when the server's
        error reaches the client, and otherwise looks like a lost connection.
        """
        if not self._packet_limited:
            return True
        present = [blob for blob in blobs if blob]
        raw = sum(map(len, present))
        most = 2 * raw + _STATEMENT_ROOM
        if most <= _SMALLEST_DEFAULT_PACKET and self._max_packet is None:
            return True
        limit = self._packet_limit(conn)
        if most <= limit:
            return True
        return False if raw > limit else None

    def _too_large(self, size: int | None) -> SessionTooLarge:
        limit = self._max_packet if self._packet_limited else None
        what = "The session" if size is None else f"The session, {size} bytes encoded,"
        over = (
            f"is over the database's max_allowed_packet of {limit} bytes in the statement that writes it"
            " (where each byte can take two)"
            if limit is not None
            else "is larger than the database accepts"
        )
        return SessionTooLarge(
            f"{what} {over}, so it was not written; store less in the session"
            + (", or raise max_allowed_packet on the server" if limit is not None else ""),
            size=size,
            limit=limit,
        )

    # Connections and errors -----------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> t.Iterator[None]:
        """Turn "cannot reach the database" into ``StoreUnavailable``; let real bugs through."""
        try:
            yield
        except sa_exc.DBAPIError as e:
            if _refused_as_too_large(e):
                raise self._too_large(None) from e
            if _missing_table(e):
                raise SatchelError(
                    f"the session table {self.table.fullname!r} does not exist: run 'flask session create-table'"
                    " or let Flask-Satchel create it (SESSION_SQLALCHEMY_CREATE_TABLE = True)"
                ) from e
            if _missing_column(e):
                raise StoreUnavailable(
                    f"SQL session store: the table {self.table.fullname!r} is not Flask-Satchel's ({e.orig});"
                    " set SESSION_SQLALCHEMY_TABLE to another table name"
                ) from e
            if isinstance(e, (sa_exc.OperationalError, sa_exc.InterfaceError)) or e.connection_invalidated:
                raise StoreUnavailable(f"SQL session store: {e.orig}") from e
            raise
        except (sa_exc.TimeoutError, sa_exc.DisconnectionError) as e:  # pool exhausted, connect failed
            raise StoreUnavailable(f"SQL session store: {e}") from e
        except self._driver_errors as e:
            # SQLAlchemy wraps what statements raise, but not what the driver
            # raises while the pool resets or closes a connection (a rollback
            # or an isolation reset on a connection that just broke): those
            # are about the connection, never about the store's own SQL.
            raise StoreUnavailable(f"SQL session store: {e}") from e

    @property
    def _driver_errors(self) -> type[BaseException] | tuple[()]:
        """The DB-API driver's base exception class (a pool may raise it unwrapped)."""
        dbapi = self.engine.dialect.dbapi  # None only for a dialect without a driver (a mock engine)
        error = getattr(dbapi, "Error", None)
        return error if isinstance(error, type) and issubclass(error, BaseException) else ()

    def _retried(self, first: t.Callable[[], _T], again: t.Callable[[], _T] | None) -> _T:
        """``first()``; after it failed on a dead pooled connection, ``again()`` once.

        Pinging every connection on checkout costs a round trip per request
        to guard against something rare. Instead, the first statement on a
        connection the server has dropped fails at once; it is invalidated,
        with every pooled connection older than it, and the work gets one
        more try on a new connection (not at all when ``again`` is None:
        work that must not run twice). Only quick failures are retried
        (``RETRY_WITHIN``), so a hung server still costs one timeout, not two.
        """
        with self._errors():
            started = time.monotonic()
            try:
                return first()
            except sa_exc.DBAPIError as e:
                if again is None or not e.connection_invalidated or time.monotonic() - started > RETRY_WITHIN:
                    raise
            return again()

    def _run(
        self,
        work: t.Callable[[sa.Connection], _T],
        *,
        retry: bool = True,
        again: t.Callable[[sa.Connection], _T] | None = None,
    ) -> _T:
        """Run ``work`` on a SQLAlchemy connection from the pool, retried as ``_retried`` says.

        The retry runs ``again`` if given (work that must change to be run
        twice), else ``work`` itself unless ``retry`` is False.
        """

        def attempt(work: t.Callable[[sa.Connection], _T]) -> _T:
            with self.engine.connect() as conn:
                return work(conn)

        return self._retried(lambda: attempt(work), (lambda: attempt(again or work)) if retry else None)

    def _execute(
        self,
        hot: _Hot,
        values: dict[str, t.Any],
        again: _Hot | None = None,
        *,
        size: int | None = None,
        near: bool = False,
    ) -> tuple[int, tuple[t.Any, ...] | None]:
        """Run a hot statement on a pooled DB-API connection: its row count and first row.

        After a dead connection it runs once more, as ``again`` if given.
        ``size`` is the encoded session a write carries, and ``near`` says it
        may be over the database's limit: a dead connection then means it was.
        """
        return self._retried(
            lambda: self._execute_once(hot, values, size, near),
            lambda: self._execute_once(again or hot, values, size, near),
        )

    def _execute_once(
        self, hot: _Hot, values: dict[str, t.Any], size: int | None = None, near: bool = False
    ) -> tuple[int, tuple[t.Any, ...] | None]:
        """What ``Connection.execute`` and ``commit`` would do for ``hot``, without their bookkeeping.

        A write is committed unless the connection commits by itself (no
        COMMIT round trip on an autocommit engine; PyMySQL would send one
        even there). A read on a transactional connection ends with the
        pool's rollback when the connection goes back, as before. Driver
        errors come out as SQLAlchemy's (``IntegrityError``,
        ``OperationalError``…), exactly as ``execute`` raises them; a dead
        connection is invalidated with every pooled connection older than
        it, as SQLAlchemy does, so that the retry gets a new one.
        """
        engine = self.engine
        dialect = engine.dialect
        params: dict[str, t.Any] | tuple[t.Any, ...] | None = None
        cursor = None
        conn = engine.raw_connection()
        try:
            if not hot.sql:  # the first run: the dialect has seen the server now
                hot.compile(dialect, engine.get_execution_options().get("schema_translate_map"))
            params = hot.params(values)
            cursor = conn.cursor()
            cursor.execute(hot.sql, params)
            rowcount = cursor.rowcount
            row = None if hot.writes else hot.row(cursor)  # not ``description``: psycopg builds it on each access
            cursor.close()
            if hot.writes and not self._autocommit(conn.dbapi_connection):
                conn.commit()
            return rowcount, row
        except self._driver_errors as e:
            disconnect = dialect.is_disconnect(e, conn.dbapi_connection, cursor)  # type: ignore[arg-type]
            if _refused_as_too_large(e) or (near and disconnect):
                # MySQL closes the connection after a statement over its limit.
                conn.invalidate(e)
                raise self._too_large(size) from e
            if disconnect:
                engine.pool._invalidate(conn, e)
            raise sa_exc.DBAPIError.instance(
                hot.sql,
                params,
                e,
                dialect.loaded_dbapi.Error,
                hide_parameters=engine.hide_parameters,
                connection_invalidated=disconnect,
                dialect=dialect,
            ) from e
        except BaseException as e:
            if not isinstance(e, Exception):  # interrupted mid-exchange: the connection's state is unknown
                conn.invalidate(e)
            raise
        finally:
            conn.close()  # back to the pool

    def _autocommit(self, dbapi_connection: t.Any) -> bool:
        """Whether the driver commits each statement by itself on ``dbapi_connection`` (no transaction unless asked)."""
        if dbapi_connection is None:  # invalidated: nothing will run on it
            return False
        try:
            return bool(self.engine.dialect.detect_autocommit_setting(dbapi_connection))
        except NotImplementedError:  # a dialect that cannot tell: SQLAlchemy's default, transactional
            return False

    @contextlib.contextmanager
    def _transaction(self, conn: sa.Connection) -> t.Iterator[None]:
        """A real transaction on ``conn``, committed at the end, rolled back on any error.

        On an autocommit connection SQLAlchemy's ``begin()`` only marks a
        transaction, and the database would see each statement on its own:
        the row lock of ``SELECT … FOR UPDATE`` would be gone before the
        ``UPDATE``. So it is opened and closed with explicit SQL. Nothing
        else rolls it back (the pool skips the rollback of autocommit
        connections), so a connection whose ROLLBACK fails is invalidated
        rather than returned to the pool inside a transaction.
        """
        if not self._autocommit(conn.connection.dbapi_connection):
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

    def create_table(self) -> None:
        """Create the table and its indexes if they do not exist; safe to run at every start.

        A table of that name that is not the store's (Flask-Session's own
        is called ``sessions`` too) is a ``ConfigError`` naming
        ``SESSION_SQLALCHEMY_TABLE``: writing to it could only fail.
        """
        with self._errors():
            self._refuse_foreign_tables()
            try:
                self.metadata.create_all(self.engine, checkfirst=True)
            except (sa_exc.ProgrammingError, sa_exc.IntegrityError):
                # Another process (a second worker starting) created it between
                # our check and our CREATE: that is what we wanted.
                if not sa.inspect(self.engine).has_table(self.table.name, self.table.schema):
                    raise
        self._pending = False

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
                raise _foreign_table(table, columns, locks=table is self.lock_table)

    # The Store protocol ---------------------------------------------------------

    def load(self, key: str) -> Record | None:
        if self._pending:
            self._prepare()
        self._seen.keep(key, None)  # a failed read leaves nothing behind
        _, row = self._execute(self._load, {"b_key": key})
        if row is None:
            return None
        self._seen.keep(key, row[0])
        return record_from_row(row)

    def create(self, key: str, record: Record) -> None:
        if self._pending:
            self._prepare()
        data = serialization.pack(record.data)
        client = None if record.client is None else serialization.pack(record.client)
        fits = self._fits((data, client))
        if fits is False:
            raise self._too_large(len(data))
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
        self._execute(self._insert, params, again=self._insert_again, size=len(data), near=fits is None)

    def apply(self, key: str, change: Change) -> int | None:
        if self._pending:
            self._prepare()
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
        if not data:
            rowcount, _ = self._execute(self._delete_if_unchanged, {"b_key": key, "b_seen": expected})
        else:
            packed = serialization.pack(data)
            client = None if change.client is None else serialization.pack(change.client)
            if self._fits((expected, packed, client)) is not True:
                return None  # carrying the old data too, it may not fit: the locked path sends the new only
            params: dict[str, t.Any] = {
                "b_key": key,
                "b_seen": expected,
                "b_data": packed,
                "b_last_seen": change.last_seen,
                "b_expires_at": change.expires_at,
                "b_permanent": change.permanent,
            }
            if change.user_changed:
                params["b_user"] = change.user
            if client is not None:
                params["b_client"] = client
            statement = self._update_if_unchanged[change.user_changed, change.client is not None]
            rowcount, _ = self._execute(statement, params)
        return len(data) if rowcount == 1 else None

    def _apply_locked(self, conn: sa.Connection, key: str, change: Change) -> int | None:
        """Lock the row, merge ``change`` onto what it holds now, write it back; None when it is gone."""
        with self._transaction(conn):
            if self._lock_by_update:
                taken = conn.execute(self._take_lock, {"b_key": key})
                if taken.rowcount == 0:
                    return None
            row = conn.execute(self._lock, {"b_key": key}).first()
            if row is None:
                return None
            raw, user, client, last_seen, expires_at = row
            data = merge_data(serialization.unpack_map(raw), change)
            last_seen, expires_at = times_after(change, last_seen, expires_at)
            if not data:
                conn.execute(self._delete, {"b_key": key})
                return 0
            packed = serialization.pack(data)
            client = client if change.client is None else serialization.pack(change.client)
            fits = self._fits((packed, client), conn)
            if fits is False:
                raise self._too_large(len(packed))  # rolled back: the row keeps its data
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
                conn.execute(self._update, params)
            except sa_exc.DBAPIError as e:
                if _refused_as_too_large(e) or (fits is None and e.connection_invalidated):
                    if not e.connection_invalidated:
                        conn.invalidate(e)  # MySQL closes the connection after a statement over its limit
                    raise self._too_large(len(packed)) from e
                raise
            return len(data)

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        if self._pending:
            self._prepare()
        rowcount, _ = self._execute(self._touch, {"b_key": key, "b_last_seen": last_seen, "b_expires_at": expires_at})
        return rowcount > 0

    def delete(self, key: str) -> bool:
        if self._pending:
            self._prepare()
        rowcount, _ = self._execute(self._delete_key, {"b_key": key})
        return rowcount > 0

    def sessions(self, now: float, user: str | None = None) -> list[tuple[str, Record]]:
        if self._pending:
            self._prepare()
        statement = self._list if user is None else self._list_user
        params = {"b_now": now, "b_user": user}  # b_user is ignored by the statement for everyone
        rows = self._run(lambda conn: conn.execute(statement, params).all())
        return [
            (key, record_from_row((None, *rest)))
            for key, *rest in rows
            # Exact, whatever the column's collation: MySQL's pads trailing spaces.
            if user is None or rest[4] == user
        ]

    def cleanup(self, now: float) -> int:
        if self._pending:
            self._prepare()
        total = 0
        while True:
            deleted = self._run(_statement(self._cleanup, {"b_now": now}))
            total += deleted
            if deleted < CLEANUP_BATCH:
                break
        if self.lock_table is not None:
            # Leases run on the real clock, whatever ``now`` the caller passes.
            self._run(_statement(self._lock_cleanup, {"b_now": time.time()}))
        return total

    def lock(self, key: str, token: str, lease: float) -> bool:
        """Take the lease of ``key`` for ``token``: a released or lapsed lock row, or a new one.

        Each step is its own short transaction, and a deadlock (two
        contenders inserting the same new row on MySQL/MariaDB) means "not
        this time": the caller polls again. Leases run on this host's clock,
        as ``expires_at`` does. Neither step is retried after a dead
        connection: had the first attempt taken the lock, the retry would
        find it held and the request would wait for its own lease to lapse.
        """
        if self.lock_table is None:
            raise SatchelError("this SQLStore was made without locking=True (SESSION_LOCKING)")
        if self._pending:
            self._prepare()
        now = time.time()
        try:
            steal = {"b_key": key, "b_now": now, "b_token": token, "b_until": now + lease}
            if self._run(_statement(self._lock_steal, steal), retry=False) == 1:
                return True

            def insert(conn: sa.Connection) -> bool:
                params = {"prefix": self.prefix, "key": key, "token": token, "until": now + lease}
                result = conn.execute(self._lock_insert, params)
                inserted = (result.first() is not None) if result.returns_rows else (result.rowcount == 1)
                conn.commit()
                return inserted

            return self._run(insert, retry=False)
        except StoreUnavailable as e:
            if _deadlock(e.__cause__):
                return False
            raise

    def unlock(self, key: str, token: str) -> bool:
        """Release ``token``'s lock; False when its lease had run out (or another request took it)."""
        if self.lock_table is None:
            raise SatchelError("this SQLStore was made without locking=True (SESSION_LOCKING)")
        if self._pending:
            self._prepare()
        params = {"b_key": key, "b_token": token, "b_now": time.time()}
        return self._run(_statement(self._unlock, params), retry=False) == 1

    def count(self, now: float) -> int:
        if self._pending:
            self._prepare()
        return int(self._run(lambda conn: conn.execute(self._count, {"b_now": now}).scalar_one()))

    def close(self) -> None:
        """Close the pool's connections if the store made the engine; an app's own engine is left alone."""
        if self._owns_engine:
            self.engine.dispose()
