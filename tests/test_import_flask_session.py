"""Switching from Flask-Session 0.8 with nobody logged out (``SESSION_MIGRATE_FLASK_SESSION``).

Every test runs the real Flask-Session against a real store: users log in
through it, their records are aged as time would age them, and the same app
(same configuration, same ``SECRET_KEY``) is then switched to Flask-Satchel.
What is checked is what a user sees: still logged in with the same data, a
new cookie that lives no longer than the old session had left, an old cookie
that opens nothing once it has been used, and never an error page.

Redis is the shared server (a key prefix of the test's own, and only its keys
are deleted); memcached is a private server; PostgreSQL and MariaDB are the
shared servers (tables of the test's own, dropped); SQLite and the file
folders live in the test's temporary folder.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import os
import pickle
import secrets
import shutil
import struct
import threading
import typing as t
import uuid
import warnings

import flask_session  # type: ignore[import-untyped]  # Flask-Session 0.8 ships no type information (no py.typed)
import msgspec
import pytest
import redis
import sqlalchemy as sa
from cachelib.file import FileSystemCache
from conftest import MemcachedServer, RedisServer, require, started_memcached
from flask import Flask, jsonify, session
from flask_sqlalchemy import SQLAlchemy
from itsdangerous import Signer
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient
from redis.backoff import NoBackoff
from redis.retry import Retry
from test_store_redis import delete_prefix

from flask_satchel import ConfigError
from flask_satchel import Session as Satchel
from flask_satchel.manager import SessionManager

# The servers tests/test_store_sql.py uses, through the drivers Flask-Satchel's extras install.
POSTGRESQL_URL = os.environ.get("SATCHEL_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test").replace(
    "postgresql://", "postgresql+psycopg://", 1
)
MARIADB_URL = os.environ.get("SATCHEL_TEST_MARIADB", "mysql://root@127.0.0.1:3306/test").replace(
    "mysql://", "mysql+pymysql://", 1
)
REDIS_DB = 13

#: PERMANENT_SESSION_LIFETIME of every app here.
LIFETIME = 3600
#: What an aged Flask-Session record has left: much less than a fresh session's lifetime.
LEFT = 600

#: What each user's session holds, as Flask-Login and an app would fill it.
USERS: dict[str, dict[str, t.Any]] = {
    "alice": {"_user_id": "alice", "_fresh": True, "cart": [["apple", 2], ["pear", [1, 2, [3]]]], "n": 1},
    "bob": {"_user_id": "bob", "profile": {"tags": ["a", "b"], "score": 1.5, "none": None, "ok": False}},
    "carol": {"_user_id": "carol", "history": [[1, [2, [3, [4]]]]], "name": "Carøl ✓", "big": 2**40},
}


@contextlib.contextmanager
def quiet() -> t.Iterator[None]:
    """Flask-Session's own deprecation warnings (use_signer, the filesystem type) are not ours to fix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


# Backends ---------------------------------------------------------------------------


class Backend:
    """One store both libraries can use, with what the tests need to age and damage its records."""

    name = ""
    #: The record of a file backend is the pickled dict, not bytes of msgpack.
    pickles = False

    def __init__(self) -> None:
        self.prefix = f"satchel-import-{uuid.uuid4().hex[:10]}:"
        self._cleanups: list[t.Callable[[], None]] = []

    def config(self) -> dict[str, t.Any]:
        """The configuration both apps share."""
        return {"SESSION_KEY_PREFIX": self.prefix}

    def flask_session_config(self) -> dict[str, t.Any]:
        """What only the Flask-Session app has on top."""
        return {}

    def satchel_config(self) -> dict[str, t.Any]:
        """What only the Flask-Satchel app has on top."""
        return {}

    def prepare(self, app: Flask) -> None:
        """Set up the app before the session extension (Flask-SQLAlchemy's ``db.init_app``)."""

    def age(self, store_id: str, left: float) -> float:
        """Make the record die ``left`` seconds from now, as if written long ago; its deadline."""
        raise NotImplementedError

    def put(self, store_id: str, raw: bytes) -> None:
        """Write a raw record (bytes as stored; for files, the part after the expiry header), alive."""
        raise NotImplementedError

    def has(self, store_id: str) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            cleanup()


class RedisBackend(Backend):
    name = "redis"

    def __init__(self, port: int = 6379) -> None:
        super().__init__()
        # No retries: redis-py's default would back off for seconds against a server a test has stopped.
        self.client = redis.Redis(
            host="127.0.0.1",
            port=port,
            db=REDIS_DB,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            ok = bool(self.client.ping())
        except redis.RedisError:
            ok = False
        require(ok, f"Redis is not running on 127.0.0.1:{port}")
        self._cleanups += [self.client.close, self._clean]

    def _clean(self) -> None:
        with contextlib.suppress(redis.ConnectionError):  # a private server a test has stopped
            delete_prefix(self.client, self.prefix)

    def config(self) -> dict[str, t.Any]:
        return {**super().config(), "SESSION_TYPE": "redis", "SESSION_REDIS": self.client}

    def age(self, store_id: str, left: float) -> float:
        assert self.client.pexpire(store_id, int(left * 1000))
        return _now() + left

    def put(self, store_id: str, raw: bytes) -> None:
        self.client.set(store_id, raw, ex=LEFT)

    def has(self, store_id: str) -> bool:
        return bool(self.client.exists(store_id))


class MemcachedBackend(Backend):
    name = "memcached"

    def __init__(self, server: MemcachedServer) -> None:
        super().__init__()
        self.client = Client(("127.0.0.1", server.port), timeout=2, connect_timeout=2, default_noreply=False)
        self._cleanups.append(self.client.close)

    def config(self) -> dict[str, t.Any]:
        return {**super().config(), "SESSION_TYPE": "memcached", "SESSION_MEMCACHED": self.client}

    def age(self, store_id: str, left: float) -> float:
        assert self.client.touch(store_id, int(left))
        return _now() + left

    def put(self, store_id: str, raw: bytes) -> None:
        self.client.set(store_id, raw, expire=LEFT)

    def has(self, store_id: str) -> bool:
        return self.client.get(store_id) is not None


class HashedMemcachedBackend(MemcachedBackend):
    """Two memcached servers behind one pymemcache ``HashClient``, which spreads the keys over them."""

    name = "memcached-hash"

    def __init__(self, servers: list[MemcachedServer]) -> None:
        Backend.__init__(self)
        addresses = [("127.0.0.1", server.port) for server in servers]
        self.client = HashClient(addresses, timeout=2, connect_timeout=2, default_noreply=False)
        self._cleanups.append(self.client.close)


class FileBackend(Backend):
    """Flask-Session's ``"filesystem"`` type: its own ``FileSystemCache``, named by SHA-256 (cachelib 0.16+)."""

    name = "filesystem"
    pickles = True

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def config(self) -> dict[str, t.Any]:
        return {**super().config(), "SESSION_TYPE": "filesystem", "SESSION_FILE_DIR": self.folder}

    def path(self, store_id: str) -> str:
        return os.path.join(self.folder, hashlib.sha256(store_id.encode()).hexdigest())

    def age(self, store_id: str, left: float) -> float:
        deadline = int(_now() + left)
        with open(self.path(store_id), "r+b") as f:
            f.write(struct.pack("I", deadline))
        return float(deadline)

    def put(self, store_id: str, raw: bytes) -> None:
        os.makedirs(self.folder, exist_ok=True)
        with open(self.path(store_id), "wb") as f:
            f.write(struct.pack("I", int(_now() + LEFT)) + raw)

    def has(self, store_id: str) -> bool:
        return os.path.exists(self.path(store_id))


class CachelibBackend(FileBackend):
    """Flask-Session's ``"cachelib"`` type with a ``FileSystemCache`` naming files by MD5, as cachelib did before 0.16.

    Flask-Satchel's side is the filesystem store in the same folder.
    """

    name = "cachelib"

    def config(self) -> dict[str, t.Any]:
        return {"SESSION_KEY_PREFIX": self.prefix}

    def flask_session_config(self) -> dict[str, t.Any]:
        cache = FileSystemCache(self.folder, hash_method=hashlib.md5)
        return {"SESSION_TYPE": "cachelib", "SESSION_CACHELIB": cache}

    def satchel_config(self) -> dict[str, t.Any]:
        return {"SESSION_TYPE": "filesystem", "SESSION_FILE_DIR": self.folder}

    def path(self, store_id: str) -> str:
        return os.path.join(self.folder, hashlib.md5(store_id.encode()).hexdigest())


class SQLBackend(Backend):
    """Flask-Session's table through Flask-SQLAlchemy; Flask-Satchel's own table next to it."""

    def __init__(self, name: str, url: str) -> None:
        super().__init__()
        self.name = name
        self.url = url
        self.engine = sa.create_engine(url)
        self._cleanups.append(self.engine.dispose)
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.OperationalError as e:
            self.close()
            require(False, f"{name} is not reachable at {url}: {e.orig}")
        tag = uuid.uuid4().hex[:10]
        self.fs_table = f"fs_import_{tag}"
        self.satchel_table = f"satchel_import_{tag}"
        self.db = SQLAlchemy()
        self._apps: list[Flask] = []
        self._cleanups.append(self._drop)

    def _drop(self) -> None:
        for app in self._apps:
            with app.app_context():
                for engine in self.db.engines.values():
                    engine.dispose()
        with self.engine.begin() as conn:
            for table in (self.fs_table, self.satchel_table):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))

    def config(self) -> dict[str, t.Any]:
        return {
            **super().config(),
            "SESSION_TYPE": "sqlalchemy",
            "SESSION_SQLALCHEMY": self.db,
            "SQLALCHEMY_DATABASE_URI": self.url,
        }

    def flask_session_config(self) -> dict[str, t.Any]:
        return {"SESSION_SQLALCHEMY_TABLE": self.fs_table}

    def satchel_config(self) -> dict[str, t.Any]:
        # Flask-Satchel's own table must not be Flask-Session's; the importer is told where that one is.
        return {"SESSION_SQLALCHEMY_TABLE": self.satchel_table, "SESSION_FLASK_SESSION_TABLE": self.fs_table}

    def prepare(self, app: Flask) -> None:
        self.db.init_app(app)
        self._apps.append(app)

    @property
    def table(self) -> sa.Table:
        return sa.Table(
            self.fs_table,
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("session_id", sa.String(255)),
            sa.Column("data", sa.LargeBinary),
            sa.Column("expiry", sa.DateTime),
        )

    def age(self, store_id: str, left: float) -> float:
        now = _now()
        expiry = dt.datetime.fromtimestamp(now + left, dt.timezone.utc).replace(tzinfo=None)
        table = self.table
        with self.engine.begin() as conn:
            changed = conn.execute(sa.update(table).where(table.c.session_id == store_id).values(expiry=expiry))
            assert changed.rowcount == 1
        return now + left

    def put(self, store_id: str, raw: bytes) -> None:
        expiry = dt.datetime.fromtimestamp(_now() + LEFT, dt.timezone.utc).replace(tzinfo=None)
        with self.engine.begin() as conn:
            conn.execute(sa.insert(self.table).values(session_id=store_id, data=raw, expiry=expiry))

    def has(self, store_id: str) -> bool:
        table = self.table
        with self.engine.connect() as conn:
            return conn.execute(sa.select(table.c.id).where(table.c.session_id == store_id)).first() is not None


def _now() -> float:
    return dt.datetime.now(dt.timezone.utc).timestamp()


@pytest.fixture(scope="module")
def memcached_server() -> t.Iterator[MemcachedServer]:
    yield from started_memcached()


@pytest.fixture(scope="module")
def memcached_server2() -> t.Iterator[MemcachedServer]:
    yield from started_memcached()


BACKENDS = ["redis", "memcached", "memcached-hash", "filesystem", "cachelib", "postgresql", "mariadb", "sqlite"]


def _backend(name: str, request: pytest.FixtureRequest, tmp_path: t.Any) -> Backend:
    if name == "redis":
        return RedisBackend()
    if name == "memcached":
        return MemcachedBackend(request.getfixturevalue("memcached_server"))
    if name == "memcached-hash":
        servers = [request.getfixturevalue("memcached_server"), request.getfixturevalue("memcached_server2")]
        return HashedMemcachedBackend(servers)
    if name == "filesystem":
        return FileBackend(str(tmp_path / "sessions"))
    if name == "cachelib":
        return CachelibBackend(str(tmp_path / "sessions"))
    if name == "postgresql":
        return SQLBackend(name, POSTGRESQL_URL)
    if name == "mariadb":
        return SQLBackend(name, MARIADB_URL)
    return SQLBackend(name, f"sqlite:///{tmp_path / 'sessions.sqlite3'}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: t.Any) -> t.Iterator[Backend]:
    made = _backend(request.param, request, tmp_path)
    try:
        yield made
    finally:
        made.close()


# Apps -------------------------------------------------------------------------------


def _config(backend: Backend, **extra: t.Any) -> dict[str, t.Any]:
    return {
        "SECRET_KEY": "the app's secret",
        "PERMANENT_SESSION_LIFETIME": dt.timedelta(seconds=LIFETIME),
        **backend.config(),
        **extra,
    }


def flask_session_app(backend: Backend, config: dict[str, t.Any]) -> Flask:
    """The app as it runs today, on Flask-Session: ``/login/<name>`` fills the user's session."""
    app = Flask("flask_session_app")
    app.config.update(config, **backend.flask_session_config())
    backend.prepare(app)
    with quiet():
        flask_session.Session(app)

    @app.get("/login/<name>")
    def login(name: str) -> str:
        session.update(USERS[name])
        return "ok"

    return app


def satchel_app(backend: Backend, config: dict[str, t.Any]) -> Flask:
    """The same app switched to Flask-Satchel: ``/whoami`` shows what the session holds."""
    app = Flask("satchel_app")
    app.config.update(config, SESSION_MIGRATE_FLASK_SESSION=True, **backend.satchel_config())
    backend.prepare(app)
    Satchel(app)

    @app.get("/whoami")
    def whoami() -> t.Any:
        return jsonify(data=dict(session), permanent=session.permanent)

    return app


def _store_id(backend: Backend, cookie: str) -> str:
    return backend.prefix + cookie.rsplit(".", 1)[0]  # a signed cookie is "sid.signature"


def _log_in(app: Flask, name: str) -> str:
    """Log ``name`` in through Flask-Session; the cookie its browser keeps."""
    browser = app.test_client()
    with quiet():
        assert browser.get(f"/login/{name}").status_code == 200
    cookie = browser.get_cookie("session")
    assert cookie is not None
    return cookie.value


def _whoami(app: Flask, cookie: str | None) -> tuple[t.Any, t.Any]:
    """A first request with ``cookie`` (None: none): (what the session held, the cookie it set)."""
    browser = app.test_client()
    if cookie is not None:
        browser.set_cookie("session", cookie)
    response = browser.get("/whoami")
    assert response.status_code == 200, response.text
    return response.get_json(), browser


# The switch --------------------------------------------------------------------------


def _check_switch(
    backend: Backend,
    before: Flask,
    config: dict[str, t.Any],
    permanent: bool,
    tweak: t.Callable[[Flask], None] | None = None,
) -> None:
    """Log every user in on ``before``, age their records, switch to Flask-Satchel with ``config`` and check each."""
    cookies = {name: _log_in(before, name) for name in USERS}
    deadlines = {name: backend.age(_store_id(backend, cookie), LEFT) for name, cookie in cookies.items()}

    after = satchel_app(backend, config)
    if tweak is not None:
        tweak(after)
    manager: SessionManager = after.extensions["satchel"]
    assert manager.store is not None
    try:
        for name, old in cookies.items():
            body, browser = _whoami(after, old)
            assert body == {"data": USERS[name], "permanent": permanent}, name
            new = browser.get_cookie("session")
            assert new is not None, name
            assert new.value != old, name
            deadline = deadlines[name]
            if permanent:  # a dated cookie, for what the old session had left
                assert new.expires is not None, name
                assert deadline - 3 <= new.expires.timestamp() <= deadline + 1, name
            else:
                assert new.expires is None, name
            (info,) = manager.sessions_of(name)
            assert deadline - 3 <= info.expires_at.timestamp() <= deadline + 0.05, name
            # Still logged in on the request after, with the new cookie.
            assert browser.get("/whoami").get_json()["data"] == USERS[name], name
            # The old cookie, replayed, opens nothing: its record was taken.
            assert _whoami(after, old)[0]["data"] == {}, name
            assert not backend.has(_store_id(backend, old)), name
        # A cookie that names nothing anywhere opens nothing either.
        assert _whoami(after, secrets.token_urlsafe(32))[0]["data"] == {}
        assert _whoami(after, None)[0]["data"] == {}
    finally:
        manager.store.close()


@pytest.mark.parametrize("permanent", [True, False], ids=["permanent", "browser-session"])
@pytest.mark.parametrize("signer", [False, True], ids=["unsigned", "signed"])
def test_users_stay_logged_in_across_the_switch(backend: Backend, signer: bool, permanent: bool) -> None:
    """Each Flask-Session user's next request has the same data under a new cookie that lives no longer."""
    config = _config(backend, SESSION_USE_SIGNER=signer, SESSION_PERMANENT=permanent)
    _check_switch(backend, flask_session_app(backend, config), config, permanent)


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def sql_backend(request: pytest.FixtureRequest, tmp_path: t.Any) -> t.Iterator[Backend]:
    made = _backend(request.param, request, tmp_path)
    try:
        yield made
    finally:
        made.close()


def test_sql_import_without_delete_returning(sql_backend: Backend) -> None:
    """Where the database has no DELETE ... RETURNING (MySQL), a SELECT and a DELETE by id import the same."""
    config = _config(sql_backend, SESSION_PERMANENT=True)

    def no_returning(app: Flask) -> None:
        # The dialect's own flag, set by its first connection (made by init_app): as MySQL's would be.
        app.session_interface.importer.engine.dialect.delete_returning = False  # type: ignore[attr-defined]

    _check_switch(sql_backend, flask_session_app(sql_backend, config), config, True, no_returning)


@pytest.mark.parametrize("name", ["postgresql", "mariadb"])
def test_sql_import_on_an_engine_from_session_url(name: str, request: pytest.FixtureRequest, tmp_path: t.Any) -> None:
    """An app that switches to SESSION_URL too imports Flask-Session's rows through the store's own engine."""
    backend = t.cast(SQLBackend, _backend(name, request, tmp_path))
    request.addfinalizer(backend.close)
    config = _config(backend, SESSION_PERMANENT=True)
    before = flask_session_app(backend, config)
    after_config = {key: value for key, value in config.items() if key != "SESSION_SQLALCHEMY"}
    _check_switch(backend, before, {**after_config, "SESSION_URL": backend.url}, True)


def test_flask_sessions_default_folder(tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With SESSION_FILE_DIR unset, Flask-Session's files are found where it kept them: flask_session in the cwd."""
    monkeypatch.chdir(tmp_path)
    backend = FileBackend(str(tmp_path / "flask_session"))
    config = _config(backend, SESSION_PERMANENT=True)
    before = flask_session_app(backend, config)  # told the folder its own default would have been here
    satchel_config = {key: value for key, value in config.items() if key != "SESSION_FILE_DIR"}
    _check_switch(backend, before, satchel_config, True)


def test_racing_first_requests_import_once(backend: Backend) -> None:
    """Of several requests sent at once with the same old cookie, exactly one takes the session over."""
    config = _config(backend)
    old = _log_in(flask_session_app(backend, config), "alice")
    after = satchel_app(backend, config)
    racers = 6
    barrier = threading.Barrier(racers)

    def first_request() -> t.Any:
        browser = after.test_client()
        browser.set_cookie("session", old)
        barrier.wait()
        response = browser.get("/whoami")
        assert response.status_code == 200, response.text
        if not response.get_json()["data"]:
            # A loser's answer must not delete the cookie: it may reach the browser after the winner's new one.
            assert "Set-Cookie" not in response.headers, response.headers
        return response.get_json()["data"]

    try:
        with concurrent.futures.ThreadPoolExecutor(racers) as pool:
            seen = list(pool.map(lambda _: first_request(), range(racers)))
        assert sorted(map(bool, seen)) == [False] * (racers - 1) + [True], seen
        assert [data for data in seen if data] == [USERS["alice"]]
    finally:
        after.extensions["satchel"].store.close()


# Damaged records ----------------------------------------------------------------------


def _damage(kind: str, pickles: bool) -> bytes:
    if kind == "garbage":
        return b"\xc1\xc1 not a session \x00\xff"
    if kind == "not-a-dict":
        return pickle.dumps(["_user_id", "alice"]) if pickles else msgspec.msgpack.encode(["_user_id", "alice"])
    # A value Flask-Satchel cannot store: a set in a pickle, an unknown extension in msgpack.
    if pickles:
        return pickle.dumps({"_user_id": "alice", "roles": {"admin"}})
    return msgspec.msgpack.encode({"_user_id": "alice", "x": msgspec.msgpack.Ext(42, b"?")})


def _assert_skipped(app: Flask, cookie: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flask_satchel.security"):
        body, browser = _whoami(app, cookie)
    assert body == {"data": {}, "permanent": False}
    assert any(
        r.name == "flask_satchel.security" and "Flask-Session record" in r.getMessage() for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    # The app keeps working for that browser: a new session can be written.
    assert browser.get("/whoami").status_code == 200


@pytest.mark.parametrize("kind", ["garbage", "not-a-dict", "unstorable"])
def test_a_damaged_record_is_an_empty_session(backend: Backend, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """A Flask-Session record that does not decode, or holds what cannot be stored, is skipped and logged: no 500."""
    flask_session_app(backend, _config(backend))  # which makes Flask-Session's SQL table
    after = satchel_app(backend, _config(backend))
    try:
        sid = secrets.token_urlsafe(32)
        backend.put(backend.prefix + sid, _damage(kind, backend.pickles))
        _assert_skipped(after, sid, caplog)
    finally:
        after.extensions["satchel"].store.close()


#: A pickle that would run ``os.system("touch <marker>")`` if anything unpickled it as pickle.loads does.
def _exploit(marker: str) -> bytes:
    return b"cposix\nsystem\n(S'touch " + marker.encode() + b"'\ntR."


@pytest.mark.parametrize("kind", ["datetime", "exploit"])
def test_a_cachelib_file_needing_a_class_is_never_unpickled(
    tmp_path: t.Any, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A cachelib file whose pickle names any global (a datetime, os.system) is skipped and logged; nothing runs."""
    backend = FileBackend(str(tmp_path / "sessions"))
    marker = str(tmp_path / "exploited")
    after = satchel_app(backend, _config(backend))
    try:
        sid = secrets.token_urlsafe(32)
        if kind == "exploit":
            raw = _exploit(marker)
        else:
            raw = pickle.dumps({"_user_id": "alice", "at": dt.datetime.now(dt.timezone.utc)})
        backend.put(backend.prefix + sid, raw)
        _assert_skipped(after, sid, caplog)
        assert not os.path.exists(marker)
    finally:
        after.extensions["satchel"].store.close()


# Signatures ---------------------------------------------------------------------------


def test_a_rotated_key_still_imports_signed_cookies(tmp_path: t.Any) -> None:
    """With SESSION_USE_SIGNER, a cookie Flask-Session signed with a key now in SECRET_KEY_FALLBACKS is imported."""
    backend = FileBackend(str(tmp_path / "sessions"))
    before = flask_session_app(backend, _config(backend, SESSION_USE_SIGNER=True, SECRET_KEY="old key"))
    old = _log_in(before, "alice")
    config = _config(backend, SESSION_USE_SIGNER=True, SECRET_KEY="new key", SECRET_KEY_FALLBACKS=["old key"])
    after = satchel_app(backend, config)
    try:
        assert _whoami(after, old)[0]["data"] == USERS["alice"]
    finally:
        after.extensions["satchel"].store.close()


@pytest.mark.parametrize("forged", ["other key", "no signature"])
def test_a_cookie_without_flask_sessions_signature_imports_nothing(tmp_path: t.Any, forged: str) -> None:
    """With SESSION_USE_SIGNER, a cookie not signed with the app's keys imports nothing and leaves the record."""
    backend = FileBackend(str(tmp_path / "sessions"))
    config = _config(backend, SESSION_USE_SIGNER=True)
    before = flask_session_app(backend, config)
    old = _log_in(before, "alice")
    sid = old.rsplit(".", 1)[0]
    if forged == "other key":
        cookie = Signer("other key", salt="flask-session", key_derivation="hmac").sign(sid).decode()
    else:
        cookie = sid
    after = satchel_app(backend, config)
    try:
        assert _whoami(after, cookie)[0]["data"] == {}
        assert backend.has(backend.prefix + sid)
        assert _whoami(after, old)[0]["data"] == USERS["alice"]  # the real cookie still works
    finally:
        after.extensions["satchel"].store.close()


# Outages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["redis", "memcached"])
def test_a_store_down_during_the_import_is_a_503(store: str, tmp_path: t.Any) -> None:
    """When Flask-Session's backend cannot be reached, a request with its cookie gets a 503 with Retry-After."""
    server: RedisServer | MemcachedServer
    if store == "redis":
        require(shutil.which("redis-server") is not None, "redis-server is not installed")
        server = RedisServer(str(tmp_path))
    else:
        require(shutil.which("memcached") is not None, "memcached is not installed (apt-get install memcached)")
        server = MemcachedServer()
    server.start()
    try:
        backend: Backend = RedisBackend(server.port) if isinstance(server, RedisServer) else MemcachedBackend(server)
        try:
            # Signed: Flask-Satchel's own signer refuses the cookie, so the importer is the first to ask the store.
            config = _config(backend, SESSION_USE_SIGNER=True)
            old = _log_in(flask_session_app(backend, config), "alice")
            after = satchel_app(backend, config)
            server.stop()
            browser = after.test_client()
            browser.set_cookie("session", old)
            response = browser.get("/whoami")
            assert response.status_code == 503
            assert int(response.headers["Retry-After"]) >= 1
            after.extensions["satchel"].store.close()
        finally:
            backend.close()
    finally:
        server.stop()


# Configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "memory", "cookie"])
def test_nothing_to_import_is_a_config_error(tmp_path: t.Any, kind: str) -> None:
    """SESSION_MIGRATE_FLASK_SESSION on a store Flask-Session has no backend for is a ConfigError naming the key."""
    app = Flask("no_flask_session", instance_path=str(tmp_path))
    app.config.update(SECRET_KEY="s" * 32, SESSION_TYPE=kind, SESSION_MIGRATE_FLASK_SESSION=True)
    with pytest.raises(ConfigError) as raised:
        Satchel(app)
    assert raised.value.key == "SESSION_MIGRATE_FLASK_SESSION"


# Cost ----------------------------------------------------------------------------------


class _Counter:
    """A server's own count of what it served: Redis's socket reads (about one per round trip), memcached's gets."""

    def __init__(self, store: str, port: int) -> None:
        self.store = store
        if store == "redis":
            self.client: t.Any = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)
        else:
            self.client = Client(("127.0.0.1", port), timeout=2, connect_timeout=2)
        #: What one count costs the server itself: an INFO is one socket read; memcached's stats no get.
        self.own = 1 if store == "redis" else 0

    def __call__(self) -> int:
        if self.store == "redis":
            return int(self.client.info("stats")["total_reads_processed"])
        return int(self.client.stats()[b"cmd_get"])

    def close(self) -> None:
        self.client.close()


def _cost(app: Flask, count: _Counter, cookie: str) -> int:
    """What one request with ``cookie`` cost the server, by its own counter."""
    browser = app.test_client()
    browser.set_cookie("session", cookie)
    start = count()
    assert browser.get("/whoami").status_code == 200
    return count() - start - count.own


@dataclasses.dataclass
class _Costs:
    unknown: int
    known: int


def _costs(app: Flask, count: _Counter) -> _Costs:
    browser = app.test_client()

    @app.get("/fill")
    def fill() -> str:
        session["n"] = 1
        return "ok"

    assert browser.get("/fill").status_code == 200
    known = browser.get_cookie("session")
    assert known is not None
    _cost(app, count, secrets.token_urlsafe(32))  # warm: connections made
    return _Costs(unknown=_cost(app, count, secrets.token_urlsafe(32)), known=_cost(app, count, known.value))


@pytest.mark.parametrize("store", ["redis", "memcached"])
def test_an_unknown_cookie_costs_one_more_round_trip(
    store: str, tmp_path: t.Any, request: pytest.FixtureRequest
) -> None:
    """With the import on, a cookie naming nothing costs one more round trip, and a known session none."""
    if store == "redis":
        require(shutil.which("redis-server") is not None, "redis-server is not installed")
        server = RedisServer(str(tmp_path))
        server.start()
        request.addfinalizer(server.stop)
        port, url = server.port, f"redis://127.0.0.1:{server.port}/0"
    else:
        port = request.getfixturevalue("memcached_server").port
        url = f"memcached://127.0.0.1:{port}"
    count = _Counter(store, port)
    request.addfinalizer(count.close)
    costs = {}
    for migrate in (False, True):
        app = Flask(f"cost_{migrate}")
        app.config.update(
            SESSION_URL=url, SESSION_KEY_PREFIX=f"cost-{uuid.uuid4().hex[:8]}:", SESSION_MIGRATE_FLASK_SESSION=migrate
        )
        Satchel(app)

        @app.get("/whoami")
        def whoami() -> t.Any:
            return jsonify(data=dict(session))

        try:
            costs[migrate] = _costs(app, count)
        finally:
            app.extensions["satchel"].store.close()
    assert costs[True].unknown == costs[False].unknown + 1, costs
    assert costs[True].known == costs[False].known, costs
