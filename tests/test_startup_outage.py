"""Starting the app while its session store refuses or hangs, and service resuming with no restart.

Containers start in any order, so ``Session(app)`` must return while the
store is still coming up: session requests get a 503 with ``Retry-After``,
other views their usual answer, and once the store answers the same app
object serves sessions. The store is reached through the loopback relay of
``test_outage_sql``: not listening yet (a server that is not up), or
accepting connections and forwarding nothing (a server that hangs), then
forwarding to the real server. For the SQL store, this file also checks what
can only be seen once the database answers (a wrong password or database, a
table of that name that is not Flask-Satchel's): a ``ConfigError`` at
``init_app`` when the database answers then, a 503 and a log line naming the
problem when it only answers later.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import shutil
import socket
import threading
import time
import typing as t
import uuid

import pytest
import redis
import sqlalchemy as sa
from conftest import MemcachedServer, add_value_views, require
from flask import Flask
from flask_session import Session as FlaskSession  # type: ignore[import-untyped]  # Flask-Session 0.8: no py.typed
from flask_sqlalchemy import SQLAlchemy
from test_outage_sql import Relay

from flask_satchel import ConfigError, Session
from flask_satchel.manager import SessionManager

#: SESSION_STORE_TIMEOUT of every app here.
TIMEOUT = 0.5
#: What a test allows on top of a wait it expects (a loaded CI machine).
SLACK = 0.75
#: Redis database of the shared server used here (the Redis tests use it too, each under its own prefix).
REDIS_DB = 13
#: The real SQL servers and how to log in.
SQL = {
    "postgresql": ("postgresql+psycopg", 5432, "postgres@", "test"),
    "mariadb": ("mysql+pymysql", 3306, "root@", "test"),
}


def _sql_url(target: str, port: int | None = None, *, login: str | None = None, database: str | None = None) -> str:
    driver, real_port, default_login, default_database = SQL[target]
    return f"{driver}://{login or default_login}127.0.0.1:{port or real_port}/{database or default_database}"


def _up(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _connect_bound(store: str) -> float:
    """How long one connection attempt to a hung server may take: libpq counts whole seconds, at least 2."""
    return max(2.0, math.ceil(TIMEOUT)) if store == "postgresql" else TIMEOUT


class Upstream:
    """One real server for an app to reach through a relay, and what the app's config needs for it."""

    def __init__(self, store: str, tmp_path: t.Any) -> None:
        self.store = store
        self.tag = uuid.uuid4().hex[:10]
        self.memcached: MemcachedServer | None = None
        if store in SQL:
            port = SQL[store][1]
            require(_up(port), f"{store} is not reachable on 127.0.0.1:{port}")
        elif store == "redis":
            require(_up(6379), "Redis is not reachable on 127.0.0.1:6379")
            port = 6379
        else:
            require(shutil.which("memcached") is not None, "memcached is not installed (apt-get install memcached)")
            self.memcached = MemcachedServer().start()
            port = self.memcached.port
        #: The real server's loopback port.
        self.port = port
        #: The table the SQL store creates.
        self.table = f"satchel_startup_{self.tag}"

    def config(self, relay_port: int) -> dict[str, t.Any]:
        if self.store in SQL:
            return {"SESSION_URL": _sql_url(self.store, relay_port), "SESSION_SQLALCHEMY_TABLE": self.table}
        if self.store == "redis":
            url = f"redis://127.0.0.1:{relay_port}/{REDIS_DB}"
        else:
            url = f"memcached://127.0.0.1:{relay_port}"
        return {"SESSION_URL": url, "SESSION_KEY_PREFIX": f"startup-{self.tag}:"}

    def clean(self) -> None:
        if self.store in SQL:
            _drop(self.store, self.table)
        elif self.store == "redis":
            client = redis.Redis(port=self.port, db=REDIS_DB)
            keys = list(client.scan_iter(match=f"startup-{self.tag}:*"))
            if keys:
                client.delete(*keys)
            client.close()
        elif self.memcached is not None:
            self.memcached.stop()


def _drop(target: str, table: str, schema: str | None = None) -> None:
    engine = sa.create_engine(_sql_url(target))
    try:
        with engine.begin() as conn:
            for name in (f"{table}_locks", table):
                conn.execute(sa.schema.DropTable(sa.Table(name, sa.MetaData(), schema=schema), if_exists=True))
    finally:
        engine.dispose()


def _app(config: dict[str, t.Any]) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="startup-test", SESSION_STORE_TIMEOUT=TIMEOUT, **config)
    add_value_views(app)

    @app.get("/plain")
    def plain() -> str:
        return "no session here"

    return app


def _started(app: Flask) -> float:
    """``Session(app)``; how long it took."""
    started = time.monotonic()
    Session(app)
    return time.monotonic() - started


def _timed_get(client: t.Any, path: str) -> tuple[t.Any, float]:
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


def _is_503(response: t.Any) -> bool:
    return (
        response.status_code == 503 and int(response.headers["Retry-After"]) >= 1 and "Traceback" not in response.text
    )


def _close(app: Flask) -> None:
    manager = t.cast("SessionManager | None", app.extensions.get("satchel"))
    if manager is not None and manager.store is not None:
        manager.store.close()


@pytest.fixture
def relay() -> t.Iterator[t.Callable[[int], Relay]]:
    """``relay(port)``: a relay to the real server on ``port``, not listening yet; closed at the end."""
    made: list[Relay] = []

    def make(port: int) -> Relay:
        made.append(Relay(("127.0.0.1", port)))
        return made[-1]

    yield make
    for one in made:
        one.close()


# Every network store ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["refused", "hanging"])
@pytest.mark.parametrize("store", ["postgresql", "mariadb", "redis", "memcached"])
def test_app_starts_with_its_store_down_and_serves_once_it_is_up(
    store: str, mode: str, relay: t.Callable[[int], Relay], tmp_path: t.Any
) -> None:
    """Session(app) returns at once with the store refused or hung; 503 until it answers, then the same app serves."""
    upstream = Upstream(store, tmp_path)
    link = relay(upstream.port)
    if mode == "hanging":
        link.start()
        link.stall()
    app = _app(upstream.config(link.port))
    try:
        took = _started(app)
        bound = 0.5 if mode == "refused" else _connect_bound(store)
        assert took < bound + SLACK, f"Session(app) took {took:.2f} s"
        browser = app.test_client()
        response, took = _timed_get(browser, "/set/during")
        assert _is_503(response), (response.status_code, response.text)
        assert took < (0.5 if mode == "refused" else _connect_bound(store)) + SLACK, f"a request took {took:.2f} s"
        assert browser.get("/plain").text == "no session here"
        link.start()
        assert browser.get("/set/after").status_code == 200
        assert browser.get("/get").text == "'after'"
    finally:
        _close(app)
        upstream.clean()


# SQL: the table check, once the database answers --------------------------------------------


@pytest.fixture(params=sorted(SQL))
def target(request: pytest.FixtureRequest) -> str:
    port = SQL[request.param][1]
    require(_up(port), f"{request.param} is not reachable on 127.0.0.1:{port}")
    return t.cast(str, request.param)


@pytest.fixture
def schema(target: str) -> t.Iterator[str]:
    """A private schema (a database on MariaDB), so that Flask-Session's ``sessions`` table there is ours alone."""
    name = f"satchel_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(_sql_url(target))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE {'SCHEMA' if target == 'postgresql' else 'DATABASE'} {name}")
    try:
        yield name
    finally:
        with engine.begin() as conn:
            if target == "postgresql":
                conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
            else:
                conn.exec_driver_sql(f"DROP DATABASE {name}")
        engine.dispose()


def _flask_session_table(target: str, schema: str, table: str | None = None) -> None:
    """Let Flask-Session 0.8 create its SQL table, as an app that ran it has; its default name unless ``table``."""
    app = Flask("flask_session_app")
    app.config.update(
        SECRET_KEY="flask-session",
        SQLALCHEMY_DATABASE_URI=_sql_url(target),
        SESSION_TYPE="sqlalchemy",
        SESSION_SQLALCHEMY_SCHEMA=schema,
        **({} if table is None else {"SESSION_SQLALCHEMY_TABLE": table}),
    )
    db = SQLAlchemy(app)
    app.config["SESSION_SQLALCHEMY"] = db
    FlaskSession(app)
    with app.app_context():
        assert sa.inspect(db.engine).has_table(table or "sessions", schema)
        db.engine.dispose()


def test_default_table_is_not_flask_sessions(target: str, schema: str) -> None:
    """Next to Flask-Session's default 'sessions' table, an app on the defaults keeps sessions in a table of its own."""
    _flask_session_table(target, schema)
    app = _app({"SESSION_URL": _sql_url(target), "SESSION_SQLALCHEMY_SCHEMA": schema})
    try:
        Session(app)
        browser = app.test_client()
        assert browser.get("/set/kept").status_code == 200
        assert browser.get("/get").text == "'kept'"
    finally:
        _close(app)


def test_flask_sessions_table_is_a_config_error_naming_the_key(target: str, schema: str) -> None:
    """SESSION_SQLALCHEMY_TABLE naming Flask-Session's table is a ConfigError that says so and what to set."""
    _flask_session_table(target, schema, "app_sessions")
    app = _app(
        {
            "SESSION_URL": _sql_url(target),
            "SESSION_SQLALCHEMY_SCHEMA": schema,
            "SESSION_SQLALCHEMY_TABLE": "app_sessions",
        }
    )
    with pytest.raises(ConfigError) as info:
        Session(app)
    assert info.value.key == "SESSION_SQLALCHEMY_TABLE"
    message = str(info.value)
    assert "app_sessions" in message
    assert "Flask-Session" in message
    assert "another table name" in message


def test_another_apps_table_is_a_config_error_naming_the_key(target: str, schema: str) -> None:
    """SESSION_SQLALCHEMY_TABLE naming some other app's table is a ConfigError that says whose it looks like."""
    engine = sa.create_engine(_sql_url(target))
    try:
        sa.Table("users", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), schema=schema).create(engine)
    finally:
        engine.dispose()
    app = _app(
        {"SESSION_URL": _sql_url(target), "SESSION_SQLALCHEMY_SCHEMA": schema, "SESSION_SQLALCHEMY_TABLE": "users"}
    )
    with pytest.raises(ConfigError, match="another app's table") as info:
        Session(app)
    assert info.value.key == "SESSION_SQLALCHEMY_TABLE"


def test_flask_sessions_table_found_after_startup_is_a_503_and_a_log_line(
    target: str, schema: str, relay: t.Callable[[int], Relay], caplog: pytest.LogCaptureFixture
) -> None:
    """Flask-Session's table, seen only once the database is up: 503s and a log line naming it, never a 500."""
    _flask_session_table(target, schema, "app_sessions")
    link = relay(SQL[target][1])
    app = _app(
        {
            "SESSION_URL": _sql_url(target, link.port),
            "SESSION_SQLALCHEMY_SCHEMA": schema,
            "SESSION_SQLALCHEMY_TABLE": "app_sessions",
        }
    )
    try:
        Session(app)
        link.start()
        with caplog.at_level(logging.ERROR, logger="flask_satchel"):
            assert _is_503(app.test_client().get("/set/x"))
        lines = [r.getMessage() for r in caplog.records if r.name == "flask_satchel" and r.levelno >= logging.ERROR]
        assert any("SESSION_SQLALCHEMY_TABLE" in line and "Flask-Session" in line for line in lines), lines
        assert _is_503(app.test_client().get("/set/y"))  # and again: nothing but a new configuration fixes it
    finally:
        _close(app)


REFUSED = {
    "postgresql": [{"database": "satchel_no_such_db"}, {"login": "satchel_no_such_role@"}],
    "mariadb": [{"database": "satchel_no_such_db"}, {"login": "root:wrong-password@"}],
}


def _refused_url(target: str, port: int | None, case: int) -> str:
    refused = REFUSED[target][case]
    return _sql_url(target, port, login=refused.get("login"), database=refused.get("database"))


@pytest.mark.parametrize("case", [0, 1], ids=["database", "login"])
def test_refused_configuration_is_a_config_error_at_init_app(target: str, case: int) -> None:
    """A database or login the server refuses, while it answers at startup, is a ConfigError naming SESSION_URL."""
    app = _app({"SESSION_URL": _refused_url(target, None, case), "SESSION_SQLALCHEMY_TABLE": "unused"})
    with pytest.raises(ConfigError) as info:
        Session(app)
    assert info.value.key == "SESSION_URL"
    assert "refuses" in str(info.value)


@pytest.mark.parametrize("case", [0, 1], ids=["database", "login"])
def test_refused_configuration_after_startup_is_a_503_and_a_log_line(
    target: str, case: int, relay: t.Callable[[int], Relay], caplog: pytest.LogCaptureFixture
) -> None:
    """A database or login refused once the server answers, after a start without it: 503 and a log line saying so."""
    link = relay(SQL[target][1])
    app = _app({"SESSION_URL": _refused_url(target, link.port, case), "SESSION_SQLALCHEMY_TABLE": "unused"})
    try:
        Session(app)
        link.start()
        with caplog.at_level(logging.ERROR, logger="flask_satchel"):
            assert _is_503(app.test_client().get("/set/x"))
        lines = [r.getMessage() for r in caplog.records if r.name == "flask_satchel" and r.levelno >= logging.ERROR]
        expected = "satchel_no_such" if case == 0 or target == "postgresql" else "Access denied"
        assert any("SESSION_URL" in line and expected in line for line in lines), lines
    finally:
        _close(app)


def test_start_without_the_database_is_logged(
    target: str, relay: t.Callable[[int], Relay], caplog: pytest.LogCaptureFixture
) -> None:
    """Session(app) without its database says so on the flask_satchel logger, and that the check runs later."""
    link = relay(SQL[target][1])
    table = f"satchel_startup_{uuid.uuid4().hex[:10]}"
    app = _app({"SESSION_URL": _sql_url(target, link.port), "SESSION_SQLALCHEMY_TABLE": table})
    try:
        with caplog.at_level(logging.WARNING, logger="flask_satchel"):
            Session(app)
        assert any(
            r.name == "flask_satchel" and r.levelno == logging.WARNING and "first use" in r.getMessage()
            for r in caplog.records
        ), caplog.text
    finally:
        _close(app)
        _drop(target, table)


def test_table_check_runs_once_under_concurrent_first_requests(target: str, relay: t.Callable[[int], Relay]) -> None:
    """After a start without the database, concurrent first requests succeed; the table is made once, then no DDL."""
    link = relay(SQL[target][1])
    table = f"satchel_startup_{uuid.uuid4().hex[:10]}"
    app = _app({"SESSION_URL": _sql_url(target, link.port), "SESSION_SQLALCHEMY_TABLE": table})
    statements: list[str] = []
    try:
        Session(app)
        engine = app.extensions["satchel"].store.engine

        @sa.event.listens_for(engine, "before_cursor_execute")
        def seen(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
            statements.append(" ".join(statement.split()).upper())

        link.start()

        def visit(i: int) -> tuple[int, str]:
            browser = app.test_client()
            status = browser.get(f"/set/{i}").status_code
            return status, browser.get("/get").text

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert list(pool.map(visit, range(16))) == [(200, f"'{i}'") for i in range(16)]
        assert sum(s.startswith("CREATE TABLE") for s in statements) == 1, statements
        statements.clear()
        visit(99)
        assert not any(s.startswith(("CREATE", "SELECT PG_", "SHOW", "DESCRIBE")) for s in statements), statements
    finally:
        _close(app)
        _drop(target, table)


def test_concurrent_requests_on_a_hung_database_wait_for_one_attempt(
    target: str, relay: t.Callable[[int], Relay]
) -> None:
    """Requests arriving together while the database hangs all get a 503 within one connection timeout, not in turn."""
    link = relay(SQL[target][1])
    table = f"satchel_startup_{uuid.uuid4().hex[:10]}"
    app = _app({"SESSION_URL": _sql_url(target, link.port), "SESSION_SQLALCHEMY_TABLE": table})
    try:
        Session(app)
        link.start()
        link.stall()
        together = threading.Barrier(6)

        def visit(i: int) -> tuple[bool, float]:
            together.wait()
            response, took = _timed_get(app.test_client(), f"/set/{i}")
            return _is_503(response), took

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(visit, range(6)))
        assert all(unavailable for unavailable, _ in answers), answers
        assert max(took for _, took in answers) < _connect_bound(target) + SLACK, answers
    finally:
        _close(app)
        _drop(target, table)
