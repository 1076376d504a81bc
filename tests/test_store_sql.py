"""The SQLAlchemy store on PostgreSQL, MariaDB and SQLite, against the real databases.

Each database gets one table with a unique name for the test run, dropped at
the end; each test works under its own key prefix in it, so a test starts
with no sessions and never touches another test's rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import typing as t
import uuid

import pytest
import sqlalchemy as sa
from conftest import add_value_views, require
from flask import Flask, session

from flask_satchel import ConfigError, SatchelError, Session
from flask_satchel.manager import SessionManager
from flask_satchel.settings import load
from flask_satchel.stores.base import Change, Record
from flask_satchel.stores.sql import CLEANUP_BATCH, SQLStore, make_lock_table, make_table
from flask_satchel.testing import AppContract, StoreContract

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
            None,
        )
        return SQLStore.from_settings(settings)

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

    def test_statements_per_request(self, app: Flask) -> None:
        """A read-only request is one SELECT; a one-key change adds one statement, committed: UPDATE."""
        client = app.test_client()
        client.get("/set/a/1")
        engine = t.cast(SQLStore, app.extensions["satchel"].store).engine
        transactions: list[list[str]] = []
        commits: list[bool] = []

        def on_begin(conn: sa.Connection) -> None:
            transactions.append([])

        def on_statement(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
            words = statement.split()
            transactions[-1].append(words[0] + (" FOR UPDATE" if "FOR UPDATE" in statement else ""))

        def on_commit(conn: sa.Connection) -> None:
            commits.append(True)

        listeners: list[tuple[str, t.Callable[..., t.Any]]] = [
            ("begin", on_begin),
            ("before_cursor_execute", on_statement),
            ("commit", on_commit),
        ]
        for name, fn in listeners:
            sa.event.listen(engine, name, fn)
        try:
            assert client.get("/get/a").text == "'1'"
            assert (transactions, commits) == ([["SELECT"]], [])
            transactions.clear()
            assert client.get("/set/a/2").status_code == 200
        finally:
            for name, fn in listeners:
                sa.event.remove(engine, name, fn)
        assert transactions == [["SELECT"], ["UPDATE"]]
        assert commits == [True]
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
    """Collect the first word of every statement ``engine`` runs, with FOR UPDATE marked."""
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
        with _statements(one.engine) as statements:
            assert one.apply("k", Change(set={"c": b"\x03"}, last_seen=now, expires_at=now + HOUR)) == 3
        assert statements[0] == "UPDATE"  # the compare-and-set, which matched nothing
        assert ("SELECT" if backend.name == "SQLite" else "SELECT FOR UPDATE") in statements[1:]
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
        with _statements(store.engine) as statements:
            assert store.apply("k", changes[0]) == 2
            record = store.load("k")
            assert record is not None
            assert (record.user, record.client) == ("u", client)
            assert store.apply("k", changes[1]) == 1
            record = store.load("k")
            assert record is not None
            assert (record.data, record.user, record.client) == ({"b": b"\x02"}, None, {"ip": "::1"})
            assert store.apply("k", changes[2]) == 0
        assert statements == ["UPDATE", "SELECT", "UPDATE", "SELECT", "DELETE"]
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
            assert conn.connection.dbapi_connection.prepare_threshold is None
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


@pytest.mark.parametrize("operation", ["load", "apply", "create", "touch", "count"])
def test_connection_killed_by_the_server_is_replaced(server: Backend, operation: str) -> None:
    """A pooled connection the server ended (restart, pg_terminate_backend, KILL) fails once, unseen by the caller."""
    now = time.time()
    store = server.store(_prefix())
    own_id, kill, alive = _SERVER_SQL[store.engine.dialect.name]
    disconnects: list[bool] = []

    def on_error(context: sa.engine.ExceptionContext) -> None:
        disconnects.append(context.is_disconnect)

    try:
        store.create("k", _record(now))
        assert store.load("k") is not None  # the bytes a change compares against, as in a request
        with store.engine.connect() as conn:
            victim = int(conn.exec_driver_sql(own_id).scalar_one())
        assert store.engine.pool.checkedin() == 1  # the one connection every call below takes first
        with server.engine.connect() as admin:
            admin.exec_driver_sql(kill.format(victim))
            deadline = time.monotonic() + 5
            while admin.exec_driver_sql(alive.format(victim)).scalar_one() and time.monotonic() < deadline:
                time.sleep(0.01)
            admin.commit()
        sa.event.listen(store.engine, "handle_error", on_error)
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
        assert disconnects == [True]
    finally:
        if sa.event.contains(store.engine, "handle_error", on_error):
            sa.event.remove(store.engine, "handle_error", on_error)
        store.delete("k")
        store.delete("k2")
        store.close()


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
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="sql-test",
        SESSION_TYPE="sqlalchemy",
        SESSION_SQLALCHEMY_TABLE=table,
        SESSION_KEY_PREFIX=_prefix(),
        **backend.config,
        **config,
    )

    add_value_views(app)

    return app


def test_table_created_at_init_app_not_on_requests(backend: Backend) -> None:
    """Session(app) creates the table; requests run no DDL."""
    table = f"satchel_new_{uuid.uuid4().hex[:10]}"
    app = _app(backend, table)
    try:
        assert not sa.inspect(backend.engine).has_table(table)
        Session(app)
        assert sa.inspect(backend.engine).has_table(table)
        store = t.cast(SQLStore, app.extensions["satchel"].store)
        statements: list[str] = []

        def on_statement(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
            statements.append(statement)

        sa.event.listen(store.engine, "before_cursor_execute", on_statement)
        client = app.test_client()
        client.get("/set/x")
        assert client.get("/get").text == "'x'"
        sa.event.remove(store.engine, "before_cursor_execute", on_statement)
        assert statements
        assert not [s for s in statements if s.lstrip().upper().startswith(("CREATE", "PRAGMA"))]
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
    return load({"SESSION_TYPE": "sqlalchemy", "SESSION_SQLALCHEMY_CREATE_TABLE": False} | config, "/nonexistent", None)


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
        assert not store.engine.pool._pre_ping  # a dead pooled connection is retried instead
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
