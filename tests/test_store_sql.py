"""The SQLAlchemy store on PostgreSQL, MariaDB and SQLite, against the real databases.

Each database gets one table with a unique name for the test run, dropped at
the end; each test works under its own key prefix in it, so a test starts
with no sessions and never touches another test's rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import threading
import time
import typing as t
import uuid

import pytest
import sqlalchemy as sa
from conftest import require, value_app
from flask import Flask, session

from flask_satchel import ConfigError, SatchelError, Session
from flask_satchel.manager import SessionManager
from flask_satchel.settings import load
from flask_satchel.stores.base import Change, Record
from flask_satchel.stores.sql import CLEANUP_BATCH, SQLStore, make_lock_table, make_table
from flask_satchel.testing.contract import AppContract, StoreContract

POSTGRESQL_URL = os.environ.get("SATCHEL_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("SATCHEL_TEST_MARIADB", "mysql://root@127.0.0.1:3306/test")
#: The table every test of this run shares, each under its own prefix.
TABLE = f"satchel_test_{uuid.uuid4().hex[:10]}"
HOUR = 3600.0


@dataclasses.dataclass
class Backend:
    """One database: how the app config selects it, and an engine for checking it."""

    name: str
    #: ``SESSION_URL`` or ``SESSION_SQLALCHEMY`` selecting the database.
    config: dict[str, t.Any]
    engine: sa.Engine

    def store(self, prefix: str, **config: t.Any) -> SQLStore:
        settings = load(
            {"SESSION_TYPE": "sqlalchemy", "SESSION_SQLALCHEMY_TABLE": TABLE, "SESSION_KEY_PREFIX": prefix}
            | self.config
            | config,
            "/nonexistent",
        )
        return SQLStore.from_settings(settings.store)

    def drop(self, table: str) -> None:
        metadata = sa.MetaData()
        make_table(table, metadata=metadata)
        make_lock_table(table, metadata=metadata)
        metadata.drop_all(self.engine, checkfirst=True)


def _server_backend(name: str, url: str) -> t.Iterator[Backend]:
    driver = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}
    sa_url = sa.make_url(url)
    sa_url = sa_url.set(drivername=driver.get(sa_url.drivername, sa_url.drivername))
    engine = sa.create_engine(sa_url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect():
            pass
    except sa.exc.DBAPIError as e:
        engine.dispose()
        require(False, f"{name} is not reachable at {url}: {e.orig}")
    backend = Backend(name, {"SESSION_URL": url}, engine)
    yield backend
    backend.drop(TABLE)
    engine.dispose()


@pytest.fixture(scope="session")
def postgresql() -> t.Iterator[Backend]:
    yield from _server_backend("PostgreSQL", POSTGRESQL_URL)


@pytest.fixture(scope="session")
def mariadb() -> t.Iterator[Backend]:
    yield from _server_backend("MariaDB", MARIADB_URL)


@pytest.fixture(scope="session")
def mariadb_dialect() -> t.Iterator[Backend]:
    """MariaDB again, through SQLAlchemy's ``mariadb`` dialect rather than ``mysql``."""
    yield from _server_backend("MariaDB", MARIADB_URL.replace("mysql://", "mariadb://", 1))


@pytest.fixture(scope="session")
def sqlite(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Backend]:
    engine = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('sql') / 'sessions.sqlite3'}")
    yield Backend("SQLite", {"SESSION_SQLALCHEMY": engine}, engine)
    engine.dispose()


@pytest.fixture(params=["postgresql", "mariadb", "mariadb_dialect", "sqlite"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return t.cast(Backend, request.getfixturevalue(request.param))


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> Backend:
    """A database server reached through ``SESSION_URL``: an engine the store makes itself."""
    return t.cast(Backend, request.getfixturevalue(request.param))


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"


def _record(now: float, user: str | None = None, expires_at: float | None = None) -> Record:
    return Record(
        data={"a": b"\x01"},
        created_at=now,
        last_seen=now,
        expires_at=now + HOUR if expires_at is None else expires_at,
        user=user,
    )


# What the database sees ----------------------------------------------------------------


@dataclasses.dataclass
class Checkout:
    """What one use of a pooled connection sent the database."""

    #: The first word of each statement, in order; on MariaDB, whose counters
    #: keep no order, in the order of ``_MARIADB_COUNTERS``, then ``OTHER``.
    statements: list[str]
    #: Times the client sent something and waited for the answer.
    round_trips: int
    #: No transaction was open when the connection went back to the pool.
    idle: bool


_MARIADB_COUNTERS = {
    "Com_begin": "BEGIN",
    "Com_select": "SELECT",
    "Com_insert": "INSERT",
    "Com_update": "UPDATE",
    "Com_delete": "DELETE",
    "Com_commit": "COMMIT",
    "Com_rollback": "ROLLBACK",
}


def _mariadb_status(dbapi_connection: t.Any) -> dict[str, int]:
    cursor = dbapi_connection.cursor()
    names = ", ".join(f"'{name}'" for name in ["Questions", *_MARIADB_COUNTERS])
    cursor.execute(f"SHOW SESSION STATUS WHERE Variable_name IN ({names})")
    status = {name: int(value) for name, value in cursor.fetchall()}
    cursor.close()
    return status


class _Recorder:
    """Each checkout of an engine's pool, as the driver or the server counts it.

    SQLAlchemy's statement events see the store's statements but not the
    round trips a driver makes by itself (psycopg's ``BEGIN``, its prepares),
    so the counts come from below them: on PostgreSQL, libpq's own trace of
    the protocol (a statement is a CommandComplete from the server, a round
    trip a run of messages from the client); on MariaDB, the server's
    counters for the connection (``SHOW SESSION STATUS`` on it before and
    after; each statement of the text protocol is one round trip); on
    SQLite, its trace of every statement run.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.dialect = engine.dialect.name
        self.checkouts: list[Checkout] = []
        #: Connections checked out and not yet back, with their pool records.
        self.out: dict[int, tuple[t.Any, t.Any]] = {}

    def checkout(self, dbapi_connection: t.Any, record: t.Any, proxy: t.Any) -> None:
        if self.dialect == "postgresql":
            from psycopg import pq

            started: t.Any = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed at checkin)
            dbapi_connection.pgconn.trace(started.fileno())
            dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        elif self.dialect in ("mysql", "mariadb"):
            started = _mariadb_status(dbapi_connection)
        else:
            started = []
            dbapi_connection.set_trace_callback(started.append)
        record.info["recorded"] = started
        self.out[id(record)] = (dbapi_connection, record)

    def checkin(self, dbapi_connection: t.Any, record: t.Any) -> None:
        self.out.pop(id(record), None)
        started = record.info.pop("recorded", None)
        if dbapi_connection is None or started is None:  # invalidated, or checked out before recording
            return
        if self.dialect == "postgresql":
            from psycopg import pq

            idle = dbapi_connection.info.transaction_status == pq.TransactionStatus.IDLE
            dbapi_connection.pgconn.untrace()
            started.seek(0)
            lines = [line.split("\t") for line in started.read().splitlines()]
            messages = [m for m in lines if len(m) > 2 and m[0] in ("F", "B")]  # not a query's further lines
            started.close()
            statements = [m[3].strip(' "').split()[0] for m in messages if m[2] == "CommandComplete"]
            senders = [m[0] for m in messages]
            round_trips = sum(1 for i, sender in enumerate(senders) if sender == "F" and senders[i - 1 : i] != ["F"])
        elif self.dialect in ("mysql", "mariadb"):
            idle = not dbapi_connection.server_status & 1  # SERVER_STATUS_IN_TRANS
            status = _mariadb_status(dbapi_connection)
            round_trips = status["Questions"] - started["Questions"] - 1  # not the SHOW that read them
            statements = [word for name, word in _MARIADB_COUNTERS.items() for _ in range(status[name] - started[name])]
            statements += ["OTHER"] * (round_trips - len(statements))
        else:
            dbapi_connection.set_trace_callback(None)
            idle = not dbapi_connection.in_transaction
            statements = [line.split()[0].upper() for line in started]
            round_trips = len(statements)
        self.checkouts.append(Checkout(statements, round_trips, idle))


@contextlib.contextmanager
def _recorded(store: SQLStore, *, keep: bool = False) -> t.Iterator[list[Checkout]]:
    """Record every checkout of the store's pool that starts inside the block.

    A thread keeps the connection it used on an engine the store made
    (``test_url_engine_keeps_a_connection_per_thread``), so its statements
    would show no checkout: in the block the store checks one out for each
    statement, unless ``keep``; then what its kept connection sent is one
    record, ended with the block.
    """
    kept = store._connections.kept
    at_most = kept.at_most
    kept.release()
    if not keep:
        kept.at_most = 0
    recorder = _Recorder(store.engine)
    sa.event.listen(store.engine, "checkout", recorder.checkout)
    sa.event.listen(store.engine, "checkin", recorder.checkin)
    try:
        yield recorder.checkouts
        for dbapi_connection, record in list(recorder.out.values()):
            recorder.checkin(dbapi_connection, record)  # still out: the thread keeps it
    finally:
        kept.at_most = at_most
        sa.event.remove(store.engine, "checkout", recorder.checkout)
        sa.event.remove(store.engine, "checkin", recorder.checkin)


def _write(backend: Backend, verb: str) -> Checkout:
    """A one-statement write as it reaches the database: alone in autocommit, else in its transaction.

    Engines made from ``SESSION_URL`` run in autocommit; the SQLite engine
    of these tests is handed in as SQLAlchemy makes it, transactional.
    """
    if backend.name == "SQLite":
        return Checkout(["BEGIN", verb, "COMMIT"], 3, True)
    return Checkout([verb], 1, True)


# The shared contracts, on each database -------------------------------------------


class StoreOnBackend(StoreContract):
    @pytest.fixture
    def store(self, backend: Backend) -> t.Iterator[SQLStore]:
        store = backend.store(_prefix(), SESSION_LOCKING=True)
        yield store
        with backend.engine.begin() as conn:
            for table in (store.table, store.lock_table):
                assert table is not None
                conn.execute(sa.delete(table).where(table.c.prefix == store.prefix))
        store.close()


class TestPostgreSQLStore(StoreOnBackend):
    @pytest.fixture
    def backend(self, postgresql: Backend) -> Backend:
        return postgresql


class TestMariaDBStore(StoreOnBackend):
    @pytest.fixture
    def backend(self, mariadb: Backend) -> Backend:
        return mariadb


class TestSQLiteStore(StoreOnBackend):
    @pytest.fixture
    def backend(self, sqlite: Backend) -> Backend:
        return sqlite


class AppOnBackend(AppContract):
    @pytest.fixture
    def config(self, backend: Backend) -> dict[str, t.Any]:
        return {"SESSION_TYPE": "sqlalchemy", "SESSION_SQLALCHEMY_TABLE": TABLE, **backend.config}

    def test_statements_per_request(self, app: Flask, backend: Backend) -> None:
        """A read-only request is one SELECT, one round trip; a one-key change adds one UPDATE and nothing else."""
        client = app.test_client()
        store = t.cast(SQLStore, app.extensions["satchel"].store)
        # psycopg prepares each statement on its first run on a connection, one more round trip, once.
        for path in ("/set/a/0", "/get/a", "/set/a/1"):
            assert client.get(path).status_code == 200
        with _recorded(store) as checkouts:
            assert client.get("/get/a").text == "'1'"
        assert checkouts == [Checkout(["SELECT"], 1, True)]
        with _recorded(store) as checkouts:
            assert client.get("/set/a/2").status_code == 200
        assert checkouts == [Checkout(["SELECT"], 1, True), _write(backend, "UPDATE")]
        assert client.get("/get/a").text == "'2'"


class TestPostgreSQLApp(AppOnBackend):
    @pytest.fixture
    def backend(self, postgresql: Backend) -> Backend:
        return postgresql


class TestMariaDBApp(AppOnBackend):
    @pytest.fixture
    def backend(self, mariadb: Backend) -> Backend:
        return mariadb


class TestSQLiteApp(AppOnBackend):
    @pytest.fixture
    def backend(self, sqlite: Backend) -> Backend:
        return sqlite


# What is particular to the SQL store ---------------------------------------------------


def test_apps_sharing_a_table_stay_apart(backend: Backend) -> None:
    """Two apps with different key prefixes in one table never see each other's sessions."""
    now = time.time()
    one, two = backend.store(_prefix()), backend.store(_prefix())
    try:
        one.create("k", _record(now, user="u"))
        two.create("k", Record(data={"b": b"\x02"}, created_at=now, last_seen=now, expires_at=now + 10, user="u"))
        assert [k for k, _ in one.sessions(now, "u")] == ["k"]
        assert (one.count(now), two.count(now)) == (1, 1)
        assert one.cleanup(now + 60) == 0
        assert two.cleanup(now + 60) == 1
        record = one.load("k")
        assert record is not None
        assert record.data == {"a": b"\x01"}
        assert two.load("k") is None
    finally:
        one.delete("k")
        one.close()
        two.close()


def test_user_names_match_exactly(backend: Backend) -> None:
    """Listing a user's sessions matches case and trailing spaces exactly, on MariaDB too."""
    now = time.time()
    store = backend.store(_prefix())
    try:
        for i, user in enumerate(["alice", "Alice", "alice "]):
            store.create(f"k{i}", _record(now, user=user))
        assert [k for k, _ in store.sessions(now, "alice")] == ["k0"]
        assert [r.user for _, r in store.sessions(now, "Alice")] == ["Alice"]
    finally:
        for i in range(3):
            store.delete(f"k{i}")
        store.close()


def test_cleanup_deletes_in_bounded_batches(backend: Backend) -> None:
    """cleanup() removes every expired row, at most CLEANUP_BATCH per transaction, and keeps live ones."""
    now = time.time()
    store = backend.store(_prefix())
    rows = [
        {
            "prefix": store.prefix,
            "key": f"{i:032x}",
            "data": b"\x80",
            "created_at": now - HOUR,
            "last_seen": now - HOUR,
            "expires_at": now - 1,
            "permanent": False,
            "user": None,
            "client": None,
        }
        for i in range(CLEANUP_BATCH + 7)
    ]
    deletes: list[int] = []

    def on_delete(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if statement.startswith("DELETE"):
            deletes.append(cursor.rowcount)

    try:
        with backend.engine.begin() as conn:
            conn.execute(sa.insert(store.table), rows)
        store.create("live", _record(now))
        sa.event.listen(store.engine, "after_cursor_execute", on_delete)
        try:
            assert store.cleanup(now) == CLEANUP_BATCH + 7
        finally:
            sa.event.remove(store.engine, "after_cursor_execute", on_delete)
        assert deletes == [CLEANUP_BATCH, 7]
        assert store.count(now) == 1
        assert store.load("live") is not None
    finally:
        store.delete("live")
        store.close()


@contextlib.contextmanager
def _statements(engine: sa.Engine) -> t.Iterator[list[str]]:
    """The first word of each statement the engine's ``before_cursor_execute`` sees, FOR UPDATE marked."""
    seen: list[str] = []

    def on_statement(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        seen.append(statement.split()[0] + (" FOR UPDATE" if "FOR UPDATE" in statement else ""))

    sa.event.listen(engine, "before_cursor_execute", on_statement)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_statement)


def test_change_after_another_write_merges_onto_it(backend: Backend) -> None:
    """When the loaded bytes were overwritten meanwhile, the change is merged onto the new row under a lock."""
    now = time.time()
    prefix = _prefix()
    one, two = backend.store(prefix), backend.store(prefix)
    try:
        one.create("k", _record(now, user="u"))
        assert one.load("k") is not None
        assert two.apply("k", Change(set={"b": b"\x02"}, last_seen=now, expires_at=now + HOUR)) == 2
        with _recorded(one) as checkouts, _statements(one.engine) as statements:
            assert one.apply("k", Change(set={"c": b"\x03"}, last_seen=now, expires_at=now + HOUR)) == 3
        # The compare-and-set, which matched nothing, then the change in a transaction that locks the row.
        sqlite = backend.name == "SQLite"
        locked = (
            ["BEGIN", "UPDATE", "SELECT", "UPDATE", "COMMIT"] if sqlite else ["BEGIN", "SELECT", "UPDATE", "COMMIT"]
        )
        assert [c.statements for c in checkouts] == [_write(backend, "UPDATE").statements, locked]
        assert all(c.idle for c in checkouts)
        assert ("SELECT" if sqlite else "SELECT FOR UPDATE") in statements
        record = one.load("k")
        assert record is not None
        assert (record.data, record.user) == ({"a": b"\x01", "b": b"\x02", "c": b"\x03"}, "u")
    finally:
        one.delete("k")
        one.close()
        two.close()


def test_change_after_delete_stays_deleted(backend: Backend) -> None:
    """A change merged onto bytes loaded before the record was deleted writes nothing and returns None."""
    now = time.time()
    store = backend.store(_prefix())
    try:
        store.create("k", _record(now))
        assert store.load("k") is not None
        assert store.delete("k")
        assert store.apply("k", Change(set={"b": b"\x02"}, last_seen=now, expires_at=now + HOUR)) is None
        assert store.load("k") is None
    finally:
        store.close()


def test_compare_and_set_keeps_user_and_client_unless_changed(backend: Backend) -> None:
    """The one-statement change leaves user and client alone unless it sets them, and sets them when it does."""
    now = time.time()
    store = backend.store(_prefix())
    client = {"ip": "127.0.0.1"}
    try:
        store.create("k", Record(data={"a": b"\x01"}, created_at=now, last_seen=now, expires_at=now + HOUR, user="u"))
        store.create("other", _record(now))
        assert store.load("other") is not None
        # Another request sets the client details: this one's loaded bytes stay the same.
        assert store.apply("k", Change(last_seen=now, expires_at=now + HOUR, user="u", client=client)) == 1
        assert store.load("k") is not None
        changes = [
            Change(set={"b": b"\x02"}, last_seen=now, expires_at=now + HOUR),
            Change(removed=["a"], last_seen=now, expires_at=now + HOUR, user_changed=True, client={"ip": "::1"}),
            Change(removed=["b"], last_seen=now, expires_at=now + HOUR),
        ]
        with _recorded(store) as checkouts:
            assert store.apply("k", changes[0]) == 2
            record = store.load("k")
            assert record is not None
            assert (record.user, record.client) == ("u", client)
            assert store.apply("k", changes[1]) == 1
            record = store.load("k")
            assert record is not None
            assert (record.data, record.user, record.client) == ({"b": b"\x02"}, None, {"ip": "::1"})
            assert store.apply("k", changes[2]) == 0
        update, delete = _write(backend, "UPDATE").statements, _write(backend, "DELETE").statements
        assert [c.statements for c in checkouts] == [update, ["SELECT"], update, ["SELECT"], delete]
        assert store.load("k") is None
    finally:
        store.delete("k")
        store.delete("other")
        store.close()


def test_url_engine_runs_in_autocommit(server: Backend) -> None:
    """An engine made from SESSION_URL commits each statement by itself: no BEGIN or ROLLBACK around reads."""
    store = server.store(_prefix())
    try:
        with store.engine.connect() as conn:
            dbapi_connection = conn.connection.dbapi_connection
            assert dbapi_connection is not None
            assert store.engine.dialect.detect_autocommit_setting(dbapi_connection)
    finally:
        store.close()


def test_url_options_keep_the_statement_timeout(postgresql: Backend) -> None:
    """Server settings in a PostgreSQL URL's options apply, and the store's statement_timeout is kept."""
    url = f"{POSTGRESQL_URL}?options=-c%20synchronous_commit%3Doff"
    store = postgresql.store(_prefix(), SESSION_URL=url, SESSION_STORE_TIMEOUT=1.5)
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "off"
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "1500ms"
    finally:
        store.close()


def test_url_prepare_threshold_is_a_number(postgresql: Backend) -> None:
    """psycopg's prepare_threshold given in the URL arrives as text and still works; nonsense is a ConfigError."""
    store = postgresql.store(_prefix(), SESSION_URL=f"{POSTGRESQL_URL}?prepare_threshold=none")
    try:
        store.create("p" * 32, _record(time.time()))
        assert store.load("p" * 32) is not None
        with store.engine.connect() as conn:
            assert t.cast(t.Any, conn.connection.dbapi_connection).prepare_threshold is None
    finally:
        store.close()
    with pytest.raises(ConfigError, match="prepare_threshold must be a whole number"):
        postgresql.store(_prefix(), SESSION_URL=f"{POSTGRESQL_URL}?prepare_threshold=often")


_SERVER_SQL = {
    # (this connection's id, end that connection, is it still there)
    "postgresql": (
        "SELECT pg_backend_pid()",
        "SELECT pg_terminate_backend({})",
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {}",
    ),
    "mysql": (
        "SELECT CONNECTION_ID()",
        "KILL {}",
        "SELECT count(*) FROM information_schema.PROCESSLIST WHERE ID = {}",
    ),
}


def _kill_pooled_connection(server: Backend, store: SQLStore) -> int:
    """End the store's one connection from the server's side, as a restart does; the id it had."""
    own_id, kill, alive = _SERVER_SQL[store.engine.dialect.name]
    store._connections.kept.release()  # back in the pool, where the next statement takes it
    assert t.cast(sa.pool.QueuePool, store.engine.pool).checkedin() == 1
    with store.engine.connect() as conn:
        victim = int(conn.exec_driver_sql(own_id).scalar_one())
    with server.engine.connect() as admin:
        admin.exec_driver_sql(kill.format(victim))
        deadline = time.monotonic() + 5
        while admin.exec_driver_sql(alive.format(victim)).scalar_one() and time.monotonic() < deadline:
            time.sleep(0.01)
        admin.commit()
    return victim


@pytest.mark.parametrize("operation", ["load", "apply", "create", "touch", "count"])
def test_connection_killed_by_the_server_is_replaced(server: Backend, operation: str) -> None:
    """A pooled connection the server ended (restart, pg_terminate_backend, KILL) fails once, unseen by the caller."""
    now = time.time()
    store = server.store(_prefix())
    own_id = _SERVER_SQL[store.engine.dialect.name][0]
    invalidated: list[BaseException | None] = []

    def on_invalidate(dbapi_connection: t.Any, record: t.Any, exception: BaseException | None) -> None:
        invalidated.append(exception)

    try:
        store.create("k", _record(now))
        assert store.load("k") is not None  # the bytes a change compares against, as in a request
        victim = _kill_pooled_connection(server, store)
        sa.event.listen(store.engine, "invalidate", on_invalidate)
        if operation == "load":
            record = store.load("k")
            assert record is not None
            assert record.data == {"a": b"\x01"}
        elif operation == "apply":
            assert store.apply("k", Change(set={"b": b"\x02"}, last_seen=now, expires_at=now + HOUR)) == 2
        elif operation == "create":
            store.create("k2", _record(now))
            assert store.load("k2") is not None
        elif operation == "touch":
            assert store.touch("k", now, now + 2 * HOUR)
        else:
            assert store.count(now) == 1
        # The dead connection failed once, and was dropped from the pool rather than returned to it.
        assert len(invalidated) == 1
        assert isinstance(invalidated[0], store.engine.dialect.loaded_dbapi.Error)
        store._connections.kept.release()
        assert t.cast(sa.pool.QueuePool, store.engine.pool).checkedin() == 1
        with store.engine.connect() as conn:
            assert int(conn.exec_driver_sql(own_id).scalar_one()) != victim
    finally:
        if sa.event.contains(store.engine, "invalidate", on_invalidate):
            sa.event.remove(store.engine, "invalidate", on_invalidate)
        store.delete("k")
        store.delete("k2")
        store.close()


def test_session_sql_fires_engine_events(server: Backend) -> None:
    """The engine's before_cursor_execute sees each statement of a session's requests, and handle_error a failure."""
    app = _app(server, TABLE)
    Session(app)
    store = t.cast(SQLStore, app.extensions["satchel"].store)
    statements: list[str] = []
    failures: list[tuple[bool, bool]] = []

    def on_statement(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if TABLE in statement:
            statements.append(statement.split()[0])

    def on_error(context: sa.engine.ExceptionContext) -> None:
        failures.append(
            (isinstance(context.original_exception, store.engine.dialect.loaded_dbapi.Error), context.is_disconnect)
        )

    sa.event.listen(store.engine, "before_cursor_execute", on_statement)
    sa.event.listen(store.engine, "handle_error", on_error)
    client = app.test_client()
    try:
        assert client.get("/set/1").status_code == 200  # a new session
        assert client.get("/get").text == "'1'"  # a read
        assert client.get("/set/2").status_code == 200  # a read and a change
        assert statements == ["INSERT", "SELECT", "SELECT", "UPDATE"]
        assert failures == []
        _kill_pooled_connection(server, store)
        statements.clear()
        assert client.get("/get").text == "'2'"  # the dead connection's SELECT fails, the retry's answers
        assert statements == ["SELECT", "SELECT"]
        assert failures == [(True, True)]
    finally:
        store.close()


def _hot_operations(store: SQLStore, key: str, *, locked: bool = False) -> None:
    """Create, load, a compare-and-set change (``locked``: and one under the row lock), touch, delete."""
    now = time.time()
    change = Change(set={"b": b"\x02"}, last_seen=now, expires_at=now + HOUR)
    store.create(key, _record(now))
    assert store.load(key) is not None
    assert store.apply(key, change) == 2
    if locked:
        assert store.apply(key, change) == 2  # nothing loaded since: under the row lock
    assert store.touch(key, now, now + 2 * HOUR)
    assert store.delete(key)


def test_url_engine_keeps_a_connection_per_thread(server: Backend) -> None:
    """On an engine made from SESSION_URL a thread keeps the connection it used: one checkout, nothing more sent."""
    store = server.store(_prefix())
    try:
        _hot_operations(store, "warm", locked=True)  # psycopg prepares each statement on its first run on a connection
        with _recorded(store, keep=True) as checkouts:
            _hot_operations(store, "k", locked=True)
        (checkout,) = checkouts
        statements = ["INSERT", "SELECT", "UPDATE", "BEGIN", "SELECT", "UPDATE", "COMMIT", "UPDATE", "DELETE"]
        if store.engine.dialect.name == "postgresql":
            assert checkout.statements == statements
        else:  # MariaDB's counters keep no order
            assert sorted(checkout.statements) == sorted(statements)
        assert (checkout.round_trips, checkout.idle) == (len(statements), True)
    finally:
        store.close()


def test_kept_connections_go_back_to_the_pool(server: Backend) -> None:
    """At most the pool's size of threads keep a connection, and a thread's goes back to the pool when it ends."""
    now = time.time()
    store = server.store(_prefix())
    pool = t.cast(sa.pool.QueuePool, store.engine.pool)
    size = pool.size()
    loaded = threading.Barrier(size + 2)
    done = threading.Event()
    failures: list[BaseException] = []

    def visit() -> None:
        try:
            assert store.load("k") is not None
        except BaseException as e:
            failures.append(e)
        loaded.wait(10)
        done.wait(10)

    try:
        store.create("k", _record(now))
        store._connections.kept.release()
        threads = [threading.Thread(target=visit) for _ in range(size + 1)]
        for thread in threads:
            thread.start()
        loaded.wait(10)
        assert failures == []
        assert pool.checkedout() == size  # the thread that found no room gave its connection back
        done.set()
        for thread in threads:
            thread.join(10)
        assert pool.checkedout() == 0
    finally:
        done.set()
        store.delete("k")
        store.close()


def test_each_hot_operation_is_one_statement(backend: Backend) -> None:
    """create, load, a compare-and-set change, touch and delete each send one statement, in one round trip."""
    store = backend.store(_prefix())
    try:
        _hot_operations(
            store, "warm"
        )  # psycopg prepares each statement on its first run on a connection: one more round trip
        with _recorded(store) as checkouts:
            _hot_operations(store, "k")
        update = _write(backend, "UPDATE")
        assert checkouts == [
            _write(backend, "INSERT"),
            Checkout(["SELECT"], 1, True),
            update,
            update,
            _write(backend, "DELETE"),
        ]
    finally:
        store.close()


def test_columns_round_trip_exactly(backend: Backend) -> None:
    """Times keep every digit and stay floats, permanent stays a bool, bytes stay bytes: as SQLAlchemy reads them."""
    store = backend.store(_prefix())
    now = 1795813576.1234567  # 17 significant digits: all a double has
    record = Record(
        data={"a": b"\x00\xff", "b": b""},
        created_at=now,
        last_seen=now + 0.1,
        expires_at=now + HOUR + 1e-6,
        permanent=True,
        user="Zoë ",
        client={"ip": "::1"},
    )
    c = store.table.c
    select = sa.select(c.data, c.created_at, c.last_seen, c.expires_at, c.permanent, c.user, c.client)
    select = select.where(c.prefix == store.prefix, c.key == "k")

    def read() -> tuple[Record | None, list[tuple[type, t.Any]]]:
        # What the store reads, beside the row as SQLAlchemy reads it.
        with backend.engine.connect() as conn:
            row = conn.execute(select).one()
        return store.load("k"), [(type(v), v) for v in row]

    try:
        store.create("k", record)
        loaded, row = read()
        assert loaded == record
        assert (type(loaded.created_at), type(loaded.data["a"]), loaded.permanent) == (float, bytes, True)
        assert [kind for kind, _ in row] == [bytes, float, float, float, bool, str, bytes]
        later = now + 0.123456789
        change = Change(
            set={"c": b"\x01"}, last_seen=later, expires_at=later + HOUR, permanent=False, user_changed=True
        )
        assert store.apply("k", change) == 3
        assert store.touch("k", later + 1e-3, later + 2 * HOUR)
        loaded, row = read()
        assert loaded is not None
        assert (loaded.last_seen, loaded.expires_at, loaded.permanent, loaded.user) == (
            later + 1e-3,
            later + 2 * HOUR,
            False,
            None,
        )
        assert row[4] == (bool, False)
        ((key, listed),) = store.sessions(now)  # through SQLAlchemy: the same record, without the data
        assert (key, listed.last_seen, listed.permanent, listed.user) == ("k", later + 1e-3, False, None)
    finally:
        store.delete("k")
        store.close()


def test_transactional_engine_commits_each_write(server: Backend) -> None:
    """An engine handed in without autocommit gets each write committed, and every connection back idle."""
    store = SQLStore(server.engine, table=TABLE, prefix=_prefix())
    store.create_table()
    reader = sa.create_engine(server.engine.url)  # another pool: sees only what was committed
    elsewhere = SQLStore(reader, table=TABLE, prefix=store.prefix)
    now = time.time()
    try:
        with _recorded(store) as checkouts:
            store.create("k", _record(now))
            assert store.load("k") is not None
            assert store.apply("k", Change(set={"b": b"\x02"}, last_seen=now, expires_at=now + HOUR)) == 2
            assert store.touch("k", now, now + 2 * HOUR)
        if server.engine.dialect.name == "postgresql":  # psycopg begins; the pool rolls a read back
            read, write = ["BEGIN", "SELECT", "ROLLBACK"], ["BEGIN", "{}", "COMMIT"]
        else:  # the server begins; the pool's rollback follows every use, PyMySQL sends it even after a commit
            read, write = ["SELECT", "ROLLBACK"], ["{}", "COMMIT", "ROLLBACK"]
        writes = [[word.format(verb) for word in write] for verb in ("INSERT", "UPDATE", "UPDATE")]
        assert [c.statements for c in checkouts] == [writes[0], read, *writes[1:]]
        assert all(checkout.idle for checkout in checkouts)
        record = elsewhere.load("k")
        assert record is not None
        assert (record.data, record.expires_at) == ({"a": b"\x01", "b": b"\x02"}, now + 2 * HOUR)
        assert store.delete("k")
        assert elsewhere.load("k") is None
    finally:
        store.delete("k")
        reader.dispose()


def test_schema_translate_map_of_an_engine_handed_in(postgresql: Backend) -> None:
    """An engine handed in with a schema_translate_map has every statement of the store run on the mapped schema."""
    schema = f"satchel_{uuid.uuid4().hex[:10]}"
    with postgresql.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    store = SQLStore(
        postgresql.engine.execution_options(schema_translate_map={None: schema}), table=TABLE, prefix=_prefix()
    )
    now = time.time()
    try:
        store.create_table()
        store.create("k", _record(now))
        assert store.load("k") is not None
        assert store.apply("k", Change(set={"b": b"\x02"}, last_seen=now, expires_at=now + HOUR)) == 2
        assert store.touch("k", now, now + 2 * HOUR)
        with postgresql.engine.connect() as conn:
            assert conn.exec_driver_sql(f"SELECT key, expires_at FROM {schema}.{TABLE}").all() == [
                ("k", now + 2 * HOUR)
            ]
        assert store.delete("k")
        assert store.count(now) == 0
    finally:
        with postgresql.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


def test_database_errors_that_are_bugs_propagate(backend: Backend) -> None:
    """An integrity error is raised as is, not disguised as an unavailable store."""
    now = time.time()
    store = backend.store(_prefix())
    try:
        store.create("k", _record(now))
        with pytest.raises(sa.exc.IntegrityError):
            store.create("k", _record(now))
        assert store.load("k") is not None
    finally:
        store.delete("k")
        store.close()


def test_released_locks_are_cleaned_up(backend: Backend) -> None:
    """A released lock can be taken at once by another holder, and cleanup() removes released rows."""
    store = backend.store(_prefix(), SESSION_LOCKING=True)
    assert store.lock_table is not None
    rows = sa.select(sa.func.count()).select_from(store.lock_table).where(store.lock_table.c.prefix == store.prefix)
    try:
        assert store.lock("k", "first", 30) is True
        assert store.unlock("k", "first") is True
        assert store.unlock("k", "first") is False
        assert store.lock("k", "second", 30) is True
        assert store.unlock("k", "second") is True
        with backend.engine.connect() as conn:
            assert conn.execute(rows).scalar_one() == 1
        store.cleanup(time.time())
        with backend.engine.connect() as conn:
            assert conn.execute(rows).scalar_one() == 0
    finally:
        store.close()


def test_large_session_round_trips(backend: Backend) -> None:
    """A session larger than MySQL's 64 KiB BLOB is stored whole."""
    now = time.time()
    store = backend.store(_prefix())
    big = os.urandom(300_000)
    try:
        store.create("big", Record(data={"blob": big}, created_at=now, last_seen=now, expires_at=now + HOUR))
        assert store.apply("big", Change(set={"x": b"\x01"}, last_seen=now, expires_at=now + HOUR)) == 2
        record = store.load("big")
        assert record is not None
        assert record.data == {"blob": big, "x": b"\x01"}
    finally:
        store.delete("big")
        store.close()


def test_table_is_public_for_alembic(backend: Backend) -> None:
    """The store's table, on its own MetaData, has the columns and both indexes."""
    store = backend.store(_prefix())
    try:
        assert store.table.metadata is store.metadata
        assert store.table.name == TABLE
        assert [c.name for c in store.table.primary_key] == ["prefix", "key"]
        indexed = {tuple(c.name for c in index.columns) for index in store.table.indexes}
        assert indexed == {("prefix", "expires_at"), ("prefix", "user")}
        assert store.lock_table is None  # only with SESSION_LOCKING
        columns = {c["name"] for c in sa.inspect(backend.engine).get_columns(TABLE)}
        assert columns == {c.name for c in store.table.columns}
    finally:
        store.close()


# Creating the table ---------------------------------------------------------------------


def _app(backend: Backend, table: str, **config: t.Any) -> Flask:
    return value_app(
        init=False,
        SECRET_KEY="sql-test",
        SESSION_TYPE="sqlalchemy",
        SESSION_SQLALCHEMY_TABLE=table,
        SESSION_KEY_PREFIX=_prefix(),
        **backend.config,
        **config,
    )


def test_table_created_at_init_app_not_on_requests(backend: Backend) -> None:
    """Session(app) creates the table; requests run no DDL."""
    table = f"satchel_new_{uuid.uuid4().hex[:10]}"
    app = _app(backend, table)
    try:
        assert not sa.inspect(backend.engine).has_table(table)
        Session(app)
        assert sa.inspect(backend.engine).has_table(table)
        store = t.cast(SQLStore, app.extensions["satchel"].store)
        client = app.test_client()
        with _recorded(store) as checkouts:
            client.get("/set/x")
            assert client.get("/get").text == "'x'"
        statements = {s for checkout in checkouts for s in checkout.statements}
        assert statements
        assert statements <= {"BEGIN", "SELECT", "INSERT", "UPDATE", "COMMIT"}  # no CREATE, PRAGMA or OTHER
        store.close()
    finally:
        backend.drop(table)


def test_create_table_false_creates_nothing(backend: Backend) -> None:
    """With SESSION_SQLALCHEMY_CREATE_TABLE = False nothing is created; requests fail naming the fix."""
    table = f"satchel_none_{uuid.uuid4().hex[:10]}"
    app = _app(backend, table, SESSION_SQLALCHEMY_CREATE_TABLE=False, PROPAGATE_EXCEPTIONS=True)
    try:
        Session(app)
        assert not sa.inspect(backend.engine).has_table(table)
        client = app.test_client()
        with pytest.raises(SatchelError, match="flask session create-table"):
            client.get("/set/x")
        result = app.test_cli_runner().invoke(args=["session", "create-table"])
        assert result.exit_code == 0, result.output
        assert sa.inspect(backend.engine).has_table(table)
        client.get("/set/y")
        assert client.get("/get").text == "'y'"
        app.extensions["satchel"].store.close()
    finally:
        backend.drop(table)


def test_create_table_is_idempotent(backend: Backend) -> None:
    """create_table() can run again on an existing table, keeping its rows."""
    store = backend.store(_prefix())
    now = time.time()
    try:
        store.create("k", _record(now))
        store.create_table()
        assert store.load("k") is not None
    finally:
        store.delete("k")
        store.close()


# Configuration ------------------------------------------------------------------------


def _settings(**config: t.Any) -> t.Any:
    return load(
        {"SESSION_TYPE": "sqlalchemy", "SESSION_SQLALCHEMY_CREATE_TABLE": False} | config, "/nonexistent", None
    ).store


@pytest.mark.parametrize(
    ("url", "dialect", "driver"),
    [
        ("postgresql://u@127.0.0.1/db", "postgresql", "psycopg"),
        ("postgres://u@127.0.0.1/db", "postgresql", "psycopg"),
        ("postgresql+psycopg://u@127.0.0.1/db", "postgresql", "psycopg"),
        ("mysql://u@127.0.0.1/db", "mysql", "pymysql"),
        ("mysql+pymysql://u@127.0.0.1/db", "mysql", "pymysql"),
        ("mariadb://u@127.0.0.1/db", "mariadb", "pymysql"),
    ],
)
def test_url_picks_installed_driver(url: str, dialect: str, driver: str) -> None:
    """Bare postgresql:// uses psycopg 3 and bare mysql:// or mariadb:// use PyMySQL."""
    store = SQLStore.from_settings(_settings(SESSION_URL=url))
    try:
        assert (store.engine.dialect.name, store.engine.dialect.driver) == (dialect, driver)
        assert store.engine.dialect.skip_autocommit_rollback
    finally:
        store.close()


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"SESSION_SQLALCHEMY": "postgresql://u@127.0.0.1/db"}, "SESSION_SQLALCHEMY"),
        ({"SESSION_SQLALCHEMY": object()}, "SESSION_SQLALCHEMY"),
        ({}, "SESSION_SQLALCHEMY"),
        ({"SESSION_URL": "postgresql+asyncpg://u@127.0.0.1/db"}, "SESSION_URL"),
        ({"SESSION_URL": "mysql+mysqldb://u@127.0.0.1/db"}, "SESSION_URL"),
        ({"SESSION_URL": "postgresql://u@127.0.0.1/db", "SESSION_KEY_PREFIX": "p" * 129}, "SESSION_KEY_PREFIX"),
    ],
)
def test_bad_configuration_is_refused(config: dict[str, t.Any], key: str) -> None:
    """A client of the wrong type, no database, or an unsupported driver is a ConfigError naming the key."""
    with pytest.raises(ConfigError) as info:
        SQLStore.from_settings(_settings(**config))
    assert info.value.key == key


def test_url_and_engine_together_are_refused() -> None:
    """Giving both SESSION_URL and SESSION_SQLALCHEMY is ambiguous and refused."""
    engine = sa.create_engine("sqlite://")
    with pytest.raises(ConfigError, match="not both"):
        SQLStore.from_settings(_settings(SESSION_URL="postgresql://u@127.0.0.1/db", SESSION_SQLALCHEMY=engine))
    engine.dispose()


# Flask-SQLAlchemy ---------------------------------------------------------------------


def test_flask_sqlalchemy_db_session_is_never_committed(postgresql: Backend) -> None:
    """With SESSION_SQLALCHEMY = db, the store uses db.engine and never commits the app's db.session."""
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.orm import DeclarativeBase, mapped_column

    class Base(DeclarativeBase):
        pass

    notes = f"satchel_notes_{uuid.uuid4().hex[:10]}"

    class Note(Base):
        __tablename__ = notes
        id = mapped_column(sa.Integer, primary_key=True)

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="sql-test",
        SQLALCHEMY_DATABASE_URI=str(postgresql.engine.url.render_as_string(hide_password=False)),
        SESSION_TYPE="sqlalchemy",
        SESSION_SQLALCHEMY_TABLE=TABLE,
        SESSION_KEY_PREFIX=_prefix(),
    )
    db = SQLAlchemy(app, model_class=Base)
    app.config["SESSION_SQLALCHEMY"] = db
    Session(app)
    manager: SessionManager = app.extensions["satchel"]
    assert manager.store is not None

    @app.get("/note")
    def note() -> str:
        db.session.add(Note(id=1))
        db.session.flush()  # in the app's open transaction, never committed by the app
        session["noted"] = True
        return "ok"

    def notes_committed() -> int:
        with app.app_context(), db.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(Note.__table__)).scalar_one())

    with app.app_context():
        db.create_all()
        engine = db.engine
    try:
        assert t.cast(SQLStore, manager.store).engine is engine
        client = app.test_client()
        assert client.get("/note").status_code == 200
        assert notes_committed() == 0
        assert client.get("/note").status_code == 200  # the id is free again: nothing was committed
        assert manager.count() == 1
        manager.store.close()
        assert notes_committed() == 0  # close() leaves the app's engine usable
    finally:
        with app.app_context():
            db.drop_all()
        engine.dispose()
