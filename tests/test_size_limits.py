"""Sessions too large for their store, and memcached's expiry, against the real servers.

Memcached refuses an item over its ``-I`` size and MariaDB a statement over
``max_allowed_packet``; either is ``SessionTooLarge`` naming both sizes, the
session keeps what it held, and the next request works. Memcached's clock
counts whole seconds, so a record must be given one second more than it
needs to live.
"""

from __future__ import annotations

import os
import time
import typing as t
import uuid

import pytest
import sqlalchemy as sa
from conftest import MemcachedServer, require, started_memcached
from flask import Flask

from flask_satchel import SessionTooLarge
from flask_satchel import current_session as session
from flask_satchel.manager import SessionManager
from flask_satchel.testing import make_app

MARIADB_URL = os.environ.get("SATCHEL_TEST_MARIADB", "mysql://root@127.0.0.1:3306/test")
#: The private memcached's item size limit (``-I 64k``), in bytes.
SMALL_ITEMS = 64 * 1024
TABLE = f"satchel_size_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def small_memcached() -> t.Iterator[MemcachedServer]:
    """A memcached whose items hold at most 64 KiB (memcached wants its slab chunks below the item size)."""
    yield from started_memcached("-I", "64k", "-o", "slab_chunk_max=32768")


@pytest.fixture(scope="module")
def mariadb() -> t.Iterator[tuple[str, int]]:
    """MariaDB's URL and its ``max_allowed_packet``; the test table is dropped at the end."""
    url = sa.make_url(MARIADB_URL).set(drivername="mysql+pymysql")
    engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            limit = int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
    except sa.exc.DBAPIError as e:
        engine.dispose()
        require(False, f"MariaDB is not reachable at {MARIADB_URL}: {e.orig}")
    try:
        yield MARIADB_URL, limit
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}")
        engine.dispose()


class SizeApp:
    """An app on one store, with ``/fill/<char>/<size>``: one value of ``size`` characters."""

    def __init__(self, config: dict[str, t.Any], tmp_path: t.Any, *, testing: bool = True) -> None:
        self.app: Flask = make_app(config, tmp_path / "instance")
        self.app.testing = testing
        self.client = self.app.test_client()
        #: The handle of each session a /fill request wrote to.
        self.handles: list[str] = []
        fills = {"x": "x", "quote": "'"}  # as SQL a quote takes two bytes, escaped or in hex

        @self.app.get("/fill/<char>/<int:size>")
        def fill(char: str, size: int) -> str:
            session["big"] = fills[char] * size
            self.handles.append(session.handle)
            return "ok"

    @property
    def manager(self) -> SessionManager:
        return t.cast(SessionManager, self.app.extensions["satchel"])

    def get(self, path: str) -> str:
        response = self.client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.text

    def too_large(self, path: str) -> SessionTooLarge:
        with pytest.raises(SessionTooLarge) as caught:
            self.client.get(path)
        return caught.value

    def close(self) -> None:
        assert self.manager.store is not None
        self.manager.store.close()


@pytest.fixture
def make(tmp_path: t.Any) -> t.Iterator[t.Callable[..., SizeApp]]:
    apps: list[SizeApp] = []

    def make(config: dict[str, t.Any], *, testing: bool = True) -> SizeApp:
        app = SizeApp(config, tmp_path / str(len(apps)), testing=testing)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def _names(error: SessionTooLarge, size_over: int, limit: int) -> None:
    """The error names the session's size and the store's limit, as text and as attributes."""
    assert error.limit == limit
    assert error.size is not None
    assert error.size > size_over
    assert str(error.size) in str(error)
    assert str(limit) in str(error)


# Memcached ----------------------------------------------------------------------------


def _memcached_config(server: MemcachedServer) -> dict[str, t.Any]:
    return {"SESSION_URL": server.url, "SESSION_KEY_PREFIX": f"t{uuid.uuid4().hex[:8]}:"}


def test_memcached_new_session_too_large_is_refused(
    small_memcached: MemcachedServer, make: t.Callable[..., SizeApp]
) -> None:
    """A new session over memcached's item size raises SessionTooLarge naming both sizes, and stores nothing."""
    app = make(_memcached_config(small_memcached))
    error = app.too_large("/fill/x/70000")
    _names(error, 70000, SMALL_ITEMS)
    assert app.manager.store is not None
    assert app.manager.store.load(app.handles[-1]) is None
    assert app.get("/get/big") == "None"
    assert app.get("/set/a/1") == "ok"
    assert app.get("/get/a") == "'1'"


def test_memcached_growing_session_keeps_its_value(
    small_memcached: MemcachedServer, make: t.Callable[..., SizeApp]
) -> None:
    """A session that grows past memcached's item size raises SessionTooLarge and still reads its old value."""
    app = make(_memcached_config(small_memcached))
    assert app.get("/set/a/1") == "ok"
    for _ in range(2):  # the second time the store knows the limit and refuses before sending
        _names(app.too_large("/fill/x/70000"), 70000, SMALL_ITEMS)
        assert app.get("/get/a") == "'1'"
        assert app.get("/get/big") == "None"
    assert app.get("/set/b/2") == "ok"
    assert app.get("/dump") == "[('a', '1'), ('b', '2')]"


def test_memcached_session_just_under_the_limit_is_stored(
    small_memcached: MemcachedServer, make: t.Callable[..., SizeApp]
) -> None:
    """A session that fits memcached's item size is stored, also after a larger one was refused."""
    app = make(_memcached_config(small_memcached))
    app.too_large("/fill/x/70000")
    assert app.get("/fill/x/60000") == "ok"
    assert app.get("/get/big") == repr("x" * 60000)


def test_memcached_default_item_size_is_read_from_the_server(
    memcached: MemcachedServer, make: t.Callable[..., SizeApp]
) -> None:
    """On a memcached with default settings a 2 MB session is refused against the server's 1 MB item size."""
    app = make(_memcached_config(memcached))
    assert app.get("/set/a/1") == "ok"
    _names(app.too_large("/fill/x/2000000"), 2_000_000, 1024 * 1024)
    assert app.get("/get/a") == "'1'"


def test_memcached_too_large_is_a_500_not_a_503(
    small_memcached: MemcachedServer, make: t.Callable[..., SizeApp]
) -> None:
    """Outside testing, a session too large for memcached is a 500 error page, never a 503 'retry later'."""
    app = make(_memcached_config(small_memcached), testing=False)
    assert app.get("/set/a/1") == "ok"
    response = app.client.get("/fill/x/70000")
    assert response.status_code == 500
    assert "Retry-After" not in response.headers
    assert app.get("/get/a") == "'1'"
    assert app.get("/set/b/2") == "ok"


def test_memcached_session_lives_until_its_deadline(memcached: MemcachedServer, make: t.Callable[..., SizeApp]) -> None:
    """A session whose idle deadline is 1.9 s away is still there at 1.5 s, whatever the phase of memcached's clock."""
    lifetime, check = 1.9, 1.5
    config = _memcached_config(memcached) | {"PERMANENT_SESSION_LIFETIME": lifetime, "SESSION_PERMANENT": True}
    app = make(config)
    clients, started = [], []
    for i in range(40):  # spread over a second, so every phase of the server's clock is tried
        client = app.app.test_client()
        started.append(time.time())
        assert client.get(f"/set/a/{i}").status_code == 200
        clients.append(client)
        time.sleep(0.025)
    lost, late = [], []
    for i, (client, begun) in enumerate(zip(clients, started, strict=True)):
        time.sleep(max(0.0, begun + check - time.time()))
        if time.time() > begun + lifetime - 0.1:  # a busy machine: the session may have ended, rightly
            late.append(i)
        elif client.get("/get/a").text != repr(str(i)):
            lost.append(i)
    assert not lost, f"{len(lost)} of {len(clients)} sessions were gone before their deadline"
    assert len(late) < 10, f"the machine was too busy to check {len(late)} of {len(clients)} sessions in time"


# MariaDB ---------------------------------------------------------------------------------


def _mariadb_config(url: str) -> dict[str, t.Any]:
    return {
        "SESSION_TYPE": "sqlalchemy",
        "SESSION_URL": url,
        "SESSION_SQLALCHEMY_TABLE": TABLE,
        "SESSION_KEY_PREFIX": f"t{uuid.uuid4().hex[:12]}:",
    }


def test_mariadb_new_session_too_large_is_refused(mariadb: tuple[str, int], make: t.Callable[..., SizeApp]) -> None:
    """A new session over max_allowed_packet raises SessionTooLarge naming both sizes, and writes no row."""
    url, limit = mariadb
    app = make(_mariadb_config(url))
    _names(app.too_large(f"/fill/x/{limit + 1000}"), limit, limit)
    assert app.manager.count() == 0
    assert app.get("/set/a/1") == "ok"
    assert app.get("/get/a") == "'1'"
    assert app.manager.count() == 1


def test_mariadb_growing_session_keeps_its_value(mariadb: tuple[str, int], make: t.Callable[..., SizeApp]) -> None:
    """A session that grows past max_allowed_packet raises SessionTooLarge and still reads its old value."""
    url, limit = mariadb
    app = make(_mariadb_config(url))
    assert app.get("/set/a/1") == "ok"
    _names(app.too_large(f"/fill/x/{limit + 1000}"), limit, limit)
    assert app.get("/get/a") == "'1'"
    assert app.get("/get/big") == "None"
    assert app.get("/set/b/2") == "ok"
    assert app.get("/dump") == "[('a', '1'), ('b', '2')]"


@pytest.mark.parametrize("percent", [60, 95])
def test_mariadb_refusal_by_the_server_keeps_the_connection_usable(
    mariadb: tuple[str, int], make: t.Callable[..., SizeApp], percent: int
) -> None:
    """A session under max_allowed_packet whose statement is over it: the server's refusal is SessionTooLarge.

    MariaDB answers an error or resets the connection, depending on how
    much of the statement it had read; either way it closes the connection,
    and the requests after it work.
    """
    url, limit = mariadb
    app = make(_mariadb_config(url))
    size = limit * percent // 100  # as SQL a quote takes two bytes (escaped, or in hex): over the limit
    error = app.too_large(f"/fill/quote/{size}")  # a new session: one INSERT
    assert error.limit == limit
    assert error.size is not None
    assert error.size > size
    assert app.manager.count() == 0
    assert app.get("/set/a/1") == "ok"
    error = app.too_large(f"/fill/quote/{size}")  # the change of a stored session
    assert error.limit == limit
    assert app.get("/get/a") == "'1'"
    assert app.get("/set/b/2") == "ok"
    assert app.get("/dump") == "[('a', '1'), ('b', '2')]"


def test_mariadb_session_near_the_limit_can_change(mariadb: tuple[str, int], make: t.Callable[..., SizeApp]) -> None:
    """A session that fits max_allowed_packet, but not twice over, can still be changed."""
    url, limit = mariadb
    app = make(_mariadb_config(url))
    size = limit * 3 // 10  # under the limit even at two bytes of SQL for each
    assert app.get(f"/fill/x/{size}") == "ok"
    assert app.get("/set/a/1") == "ok"  # a compare-and-set would carry the old data and the new
    assert app.get("/get/a") == "'1'"
    assert app.get("/get/big") == repr("x" * size)


def test_mariadb_too_large_is_a_500_not_a_503(mariadb: tuple[str, int], make: t.Callable[..., SizeApp]) -> None:
    """Outside testing, a session too large for MariaDB is a 500 error page, never a 503 'retry later'."""
    url, limit = mariadb
    app = make(_mariadb_config(url), testing=False)
    assert app.get("/set/a/1") == "ok"
    response = app.client.get(f"/fill/x/{limit + 1000}")
    assert response.status_code == 500
    assert "Retry-After" not in response.headers
    assert app.get("/get/a") == "'1'"
    assert app.get("/set/b/2") == "ok"
