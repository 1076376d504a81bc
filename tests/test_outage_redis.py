"""Redis outages and round trips, on a private redis-server per test.

The server is a real process on a free loopback port that a test may kill,
restart, freeze (SIGSTOP) and thaw (SIGCONT); it is always stopped at the
end. What is checked is what a user sees: status codes, ``Retry-After``,
how long a request takes, and whether their data is still there after.
"""

from __future__ import annotations

import os
import shutil
import time
import typing as t

import pytest
import redis
from conftest import RedisServer, require
from flask import Flask

from flask_satchel import ConfigError
from flask_satchel.manager import SessionManager
from flask_satchel.testing import make_app

TIMEOUT = 0.5


@pytest.fixture
def server(tmp_path: t.Any) -> t.Iterator[RedisServer]:
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    server = RedisServer(str(tmp_path))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def app(server: RedisServer, tmp_path: t.Any) -> t.Iterator[Flask]:
    app = make_app({"SESSION_URL": f"redis://127.0.0.1:{server.port}/0", "SESSION_STORE_TIMEOUT": TIMEOUT}, tmp_path)
    yield app
    manager: SessionManager = app.extensions["satchel"]
    assert manager.store is not None
    manager.store.close()


def _timed(client: t.Any, path: str) -> tuple[t.Any, float]:
    start = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - start


def _is_503(response: t.Any) -> bool:
    return response.status_code == 503 and int(response.headers["Retry-After"]) >= 1


# Outages ------------------------------------------------------------------------------


def test_stopped_server_is_a_prompt_503(app: Flask, server: RedisServer) -> None:
    """With Redis stopped, reads and writes answer 503 with Retry-After at once, not a 500."""
    browser = app.test_client()
    browser.get("/set/a/1")
    server.stop()
    for path in ("/get/a", "/set/b/2"):
        response, took = _timed(browser, path)
        assert _is_503(response), path
        assert took < 1.0, path


def test_restarted_server_serves_the_next_request(app: Flask, server: RedisServer) -> None:
    """After Redis restarts, the next request succeeds with no app restart (scripts reloaded)."""
    browser = app.test_client()
    browser.get("/set/a/1")
    server.stop()
    assert _is_503(browser.get("/get/a"))
    server.start()  # empty: it saves nothing, so the old session is gone
    assert browser.get("/get/a").text == "None"
    assert browser.get("/set/b/2").status_code == 200
    assert browser.get("/get/b").text == "'2'"


def test_frozen_server_is_a_503_within_the_store_timeout(app: Flask, server: RedisServer) -> None:
    """A Redis that hangs (SIGSTOP) gives 503 within SESSION_STORE_TIMEOUT, for reads and writes."""
    browser = app.test_client()
    browser.get("/set/a/1")
    server.freeze()
    try:
        for path in ("/get/a", "/set/b/2"):
            response, took = _timed(browser, path)
            assert _is_503(response), path
            assert took < TIMEOUT + 0.5, path  # well inside the 2 s the brief allows
    finally:
        server.thaw()


def test_thawed_server_keeps_data_and_serves_the_next_request(app: Flask, server: RedisServer) -> None:
    """After SIGCONT the next request succeeds, and data written before the freeze is still there."""
    browser = app.test_client()
    browser.get("/set/a/1")
    server.freeze()
    try:
        assert _is_503(browser.get("/get/a"))
        assert _is_503(browser.get("/set/a/2"))
    finally:
        server.thaw()
    assert browser.get("/get/a").text == "'1'"
    assert browser.get("/set/b/2").status_code == 200
    assert browser.get("/get/b").text == "'2'"


def test_server_frozen_before_first_connection(app: Flask, server: RedisServer) -> None:
    """A Redis that hangs before the app ever connected still gives a 503 within the timeout."""
    server.freeze()
    try:
        response, took = _timed(app.test_client(), "/set/a/1")
        assert _is_503(response)
        assert took < TIMEOUT + 0.5
    finally:
        server.thaw()
    browser = app.test_client()
    assert browser.get("/set/a/1").status_code == 200
    assert browser.get("/get/a").text == "'1'"


def test_request_without_session_is_served_during_outage(app: Flask, server: RedisServer) -> None:
    """A request that never touches the session is served normally while Redis is down."""
    server.stop()
    assert app.test_client().get("/plain").text == "no session here"


# Round trips --------------------------------------------------------------------------


def _sent_by(server: RedisServer, request: t.Callable[[], t.Any]) -> list[str]:
    """The commands the app sent Redis during ``request()``, seen with MONITOR.

    Commands a Lua script runs inside Redis are left out: they cost no round trip.
    """
    marker = server.client()
    watcher = server.client()
    try:
        marker.ping()
        own_port = int(t.cast(str, marker.client_info()["addr"]).rpartition(":")[2])  # "host:port"
        with watcher.monitor() as monitor:  # type: ignore[no-untyped-call]  # redis-py leaves monitor unannotated
            request()
            marker.echo("end-of-request")
            sent = []
            while True:
                command = monitor.next_command()
                if command["client_type"] == "lua":
                    continue
                if int(command["client_port"]) != own_port:
                    sent.append(command["command"].split()[0].lower())
                elif "end-of-request" in command["command"]:
                    return sent
    finally:
        marker.close()
        watcher.close()


def test_read_only_request_is_one_command(app: Flask, server: RedisServer) -> None:
    """A request that only reads the session sends Redis exactly one command: a GET."""
    browser = app.test_client()
    browser.get("/set/a/1")
    browser.get("/get/a")  # warm: the pooled connection exists and the script is loaded
    assert _sent_by(server, lambda: browser.get("/get/a")) == ["get"]


def test_one_key_change_is_one_command(app: Flask, server: RedisServer) -> None:
    """Changing one key after reading the session is the load and one compare-and-set, no read-back."""
    browser = app.test_client()
    browser.get("/set/a/1")
    browser.get("/set/a/2")  # warm: the script is loaded
    sent = _sent_by(server, lambda: browser.get("/set/b/3"))
    assert sent == ["get", "evalsha"]  # the view reads the session first: load, then apply
    assert browser.get("/get/b").text == "'3'"


def _writes(server: RedisServer, request: t.Callable[[], t.Any]) -> dict[str, int]:
    """The write commands Redis ran during ``request()``, scripts included, from INFO commandstats."""
    probe = server.client()
    try:

        def calls() -> dict[str, int]:
            stats = probe.info("commandstats")
            return {name[len("cmdstat_") :]: int(stat["calls"]) for name, stat in stats.items()}

        before = calls()
        request()
        after = calls()
    finally:
        probe.close()
    writes = {"set", "getdel", "del", "hset", "pexpireat", "expire", "sadd", "srem"}
    return {name: n - before.get(name, 0) for name, n in after.items() if name in writes and n != before.get(name, 0)}


def test_one_key_change_writes_once(app: Flask, server: RedisServer) -> None:
    """Changing one key is a single SET of the record, and a read-only request writes nothing."""
    browser = app.test_client()
    browser.get("/set/a/1")
    browser.get("/set/a/2")  # warm
    assert _writes(server, lambda: browser.get("/set/b/3")) == {"set": 1}
    assert _writes(server, lambda: browser.get("/get/b")) == {}


def test_new_session_is_one_command(app: Flask, server: RedisServer) -> None:
    """A first write creates the session with exactly one command."""
    app.test_client().get("/set/a/1")  # warm
    assert _sent_by(server, lambda: app.test_client().get("/set/a/1")) == ["set"]


def test_untouched_request_sends_nothing(app: Flask, server: RedisServer) -> None:
    """A request that never touches the session sends Redis nothing."""
    browser = app.test_client()
    browser.get("/set/a/1")
    assert _sent_by(server, lambda: browser.get("/plain")) == []


def test_login_indexes_the_user_in_one_pipeline(app: Flask, server: RedisServer) -> None:
    """Logging in writes the session and the user's set in one pipeline; the manager then lists it."""
    app.test_client().get("/login/warm")
    browser = app.test_client()
    sent = _sent_by(server, lambda: browser.get("/login/zed"))
    assert sent == ["sadd", "expire", "set"]
    manager: SessionManager = app.extensions["satchel"]
    assert [info.user for info in manager.sessions_of("zed")] == ["zed"]


def test_requests_reuse_pooled_connections(app: Flask, server: RedisServer) -> None:
    """Twenty requests open no new connection to Redis: the client's pool is reused."""
    browser = app.test_client()
    browser.get("/set/a/1")
    probe = server.client()
    try:
        before = int(probe.info("stats")["total_connections_received"])
        for i in range(20):
            assert browser.get(f"/set/k{i}/v").status_code == 200
        after = int(probe.info("stats")["total_connections_received"])
    finally:
        probe.close()
    assert after == before


# Connections --------------------------------------------------------------------------


def test_sockets_the_server_closed_are_replaced_without_an_error(app: Flask, server: RedisServer) -> None:
    """Pooled sockets that Redis dropped (CLIENT KILL, a server-side idle timeout) cost no failed request."""
    browser = app.test_client()
    browser.get("/set/a/1")
    probe = server.client()
    try:
        probe.client_kill_filter(_type="normal", skipme=True)
    finally:
        probe.close()
    response = browser.get("/get/a")
    assert response.status_code == 200
    assert response.text == "'1'"


def test_scripts_flushed_from_the_server_are_loaded_again(app: Flask, server: RedisServer) -> None:
    """After SCRIPT FLUSH (or a restart that lost them) the next request loads the scripts and succeeds."""
    browser = app.test_client()
    browser.get("/set/a/1")
    probe = server.client()
    try:
        probe.script_flush()
    finally:
        probe.close()
    assert browser.get("/set/a/2").status_code == 200
    assert browser.get("/get/a").text == "'2'"


def test_password_user_and_database_from_the_url(server: RedisServer, tmp_path: t.Any) -> None:
    """A URL's user, password and database reach the server: sessions land in that database, for that user."""
    admin = server.client()
    try:
        admin.acl_setuser("app", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"])
        app = make_app({"SESSION_URL": f"redis://app:s3cret@127.0.0.1:{server.port}/3"}, tmp_path)
        try:
            browser = app.test_client()
            assert browser.get("/set/a/1").status_code == 200
            assert browser.get("/get/a").text == "'1'"
            db3 = server.client(db=3)
            try:
                assert db3.dbsize() >= 1
            finally:
                db3.close()
            db0 = server.client()
            try:
                assert db0.dbsize() == 0
            finally:
                db0.close()
        finally:
            app.extensions["satchel"].store.close()
        # Refused credentials, seen while the server answers at startup, are a ConfigError.
        with pytest.raises(ConfigError, match=r"SESSION_URL.*credentials"):
            make_app({"SESSION_URL": f"redis://app:wrong@127.0.0.1:{server.port}/3"}, tmp_path)
    finally:
        admin.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_worker_opens_its_own_sockets(app: Flask, server: RedisServer) -> None:
    """After a fork (gunicorn's workers), the child never shares the parent's sockets; both keep working."""
    browser = app.test_client()
    browser.get("/set/a/1")  # the parent now holds a pooled socket that last ran SET
    pid = os.fork()
    if pid == 0:  # the child: requests of its own, then out without running pytest's teardown
        try:
            ok = browser.get("/set/a/2").status_code == 200 and browser.get("/get/a").text == "'2'"
            probe = server.client()
            # Two connections ran session commands: the parent's, idle, and the child's own.
            ok = ok and sum(c["cmd"] in ("set", "get", "evalsha") for c in probe.client_list()) == 2
            probe.close()
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    for i in range(3):  # and the parent goes on with its own socket
        assert browser.get(f"/set/a/{i + 10}").status_code == 200
        assert browser.get("/get/a").text == f"'{i + 10}'"


def test_client_on_a_unix_socket(tmp_path: t.Any) -> None:
    """A redis.Redis on a Unix socket, handed over in SESSION_REDIS, serves sessions end to end."""
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    path = str(tmp_path / "redis.sock")
    server = RedisServer(str(tmp_path), "--unixsocket", path, "--unixsocketperm", "700").start()
    client = redis.Redis(unix_socket_path=path, db=2, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    try:
        app = make_app({"SESSION_TYPE": "redis", "SESSION_REDIS": client}, tmp_path)
        try:
            browser = app.test_client()
            assert browser.get("/set/a/1").status_code == 200
            assert browser.get("/get/a").text == "'1'"
            assert client.dbsize() == 1  # in the client's database, reached through the socket file
        finally:
            app.extensions["satchel"].store.close()
    finally:
        client.close()
        server.stop()
