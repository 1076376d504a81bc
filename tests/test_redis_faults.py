"""Redis that answers but cannot serve, and Redis settings that cannot work, on private servers.

Every server here is a real ``redis-server`` on a free loopback port, put in
the state under test (a full memory under ``noeviction``, a read-only
replica, a failed save, a script that does not return, a password) and
always stopped at the end. What is checked is what a user and an operator
see: the status code and ``Retry-After``, whether sessions read back, the
``ConfigError`` at startup, and the log line that says what is wrong.

Each test runs on a client the store makes from ``SESSION_URL`` (``url``: a
connection per thread) and on one the app hands over in ``SESSION_REDIS``
(``client``: its own pool); the full-memory test also on a Sentinel and a
Cluster.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import typing as t

import pytest
import redis
from conftest import RedisServer, free_port
from flask import Flask
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from flask_satchel.errors import ConfigError
from flask_satchel.interface import SatchelSessionInterface
from flask_satchel.testing import make_app

TIMEOUT = 0.5
PREFIX = "faults:"
SERVICE = "satchel"
#: What a request that uses the session answers while the store cannot serve it.
UNAVAILABLE = 503

Start = t.Callable[..., RedisServer]


@pytest.fixture
def apps(tmp_path: t.Any) -> t.Iterator[t.Callable[[dict[str, t.Any]], Flask]]:
    """``apps(config)`` makes an app on the store (see ``make_app``); stores and clients are closed at the end."""
    made: list[Flask] = []

    def make(config: dict[str, t.Any]) -> Flask:
        app = make_app({"SESSION_KEY_PREFIX": PREFIX, "SESSION_STORE_TIMEOUT": TIMEOUT, **config}, tmp_path)
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["satchel"].store.close()
        client = app.config.get("SESSION_REDIS")
        if client is not None:
            client.close()


def _config(path: str, port: int, *, db: int = 0, password: str | None = None) -> dict[str, t.Any]:
    """The app config of a store on ``port`` reached by ``path``: "url" or "client"."""
    if path == "url":
        auth = f":{password}@" if password is not None else ""
        return {"SESSION_URL": f"redis://{auth}127.0.0.1:{port}/{db}"}
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        db=db,
        password=password,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry=Retry(NoBackoff(), 0),  # redis-py's default retries with backoff would only slow the outages down
    )
    return {"SESSION_TYPE": "redis", "SESSION_REDIS": client}


def _key(path: str) -> str:
    return "SESSION_URL" if path == "url" else "SESSION_REDIS"


def _is_503(response: t.Any) -> bool:
    return response.status_code == UNAVAILABLE and int(response.headers["Retry-After"]) >= 1


def _logged(caplog: pytest.LogCaptureFixture, level: int = logging.ERROR) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flask_satchel" and r.levelno >= level]


def _fill(client: redis.Redis) -> None:
    """Write filler keys until Redis refuses with OOM."""
    for i in range(10_000):
        try:
            client.set(f"filler:{i}", b"x" * 8192)
        except redis.exceptions.OutOfMemoryError:
            return
    raise AssertionError("Redis never ran out of memory")


def _wait_for(check: t.Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


# A full memory -------------------------------------------------------------------------


def _deploy(kind: str, servers: Start) -> tuple[dict[str, t.Any], redis.Redis]:
    """A Redis of ``kind`` that will run out of memory: the app config, and a client of the node with the data."""
    full = ("--maxmemory-policy", "noeviction")
    if kind == "sentinel":
        master = servers(*full)
        watcher = servers(f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1", sentinel=True)
        return {"SESSION_URL": f"redis+sentinel://127.0.0.1:{watcher.port}/{SERVICE}/0"}, master.client()
    if kind == "cluster":
        port = free_port(bus=True)
        node = servers(*full, "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf", port=port)
        data = node.client()
        # One node serving every slot; redis-py leaves execute_command unannotated.
        data.execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)  # type: ignore[no-untyped-call]
        _wait_for(
            lambda: data.execute_command("CLUSTER INFO")["cluster_state"] == "ok",  # type: ignore[no-untyped-call]
            "cluster_state:ok",
        )
        return {"SESSION_URL": f"redis+cluster://127.0.0.1:{port}"}, data
    server = servers(*full, "--maxmemory", "1mb")
    return _config(kind, server.port), server.client()


def _limit(data: redis.Redis) -> None:
    """A cluster node, and a master its Sentinel talks to, use more than 1 MB from the start: a limit just above."""
    if int(t.cast(str, data.config_get("maxmemory")["maxmemory"])) == 0:  # a parameter that always has a value
        data.config_set("maxmemory", int(data.info("memory")["used_memory"]) + 256 * 1024)


@pytest.mark.parametrize("kind", ["url", "client", "sentinel", "cluster"])
def test_full_memory_refuses_writes_with_503_and_keeps_sessions(
    servers: Start, apps: t.Callable[[dict[str, t.Any]], Flask], caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """Redis at maxmemory under noeviction: writes answer 503, reads and earlier sessions still work."""
    config, data = _deploy(kind, servers)
    app = apps(config)
    browser = app.test_client()
    assert browser.get("/set/a/1").status_code == 200
    _limit(data)
    _fill(data)

    with caplog.at_level(logging.ERROR, logger="flask_satchel"):
        assert _is_503(browser.get("/set/b/2"))  # a change of a stored session
        assert _is_503(app.test_client().get("/set/new/1"))  # a new session
        assert browser.get("/get/a").text == "'1'"  # reading needs no memory
    assert any("maxmemory" in message for message in _logged(caplog)), _logged(caplog)
    assert browser.get("/dump").text == "[('a', '1')]"  # the refused write changed nothing

    data.config_set("maxmemory", 0)  # the operator lifts the limit: service resumes by itself
    assert browser.get("/set/b/2").status_code == 200
    assert browser.get("/dump").text == "[('a', '1'), ('b', '2')]"
    data.close()


# Servers that answer, but refuse -------------------------------------------------------


@pytest.mark.parametrize("path", ["url", "client"])
def test_read_only_replica_refuses_writes_with_503_and_serves_reads(
    servers: Start, apps: t.Callable[[dict[str, t.Any]], Flask], caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """A store pointed at a replica serves the sessions it holds, and its writes answer 503 naming the replica."""
    master = servers("--repl-diskless-sync-delay", "0")  # sync the replica at once
    replica = servers("--replicaof", "127.0.0.1", str(master.port))
    probe = replica.client()
    _wait_for(lambda: probe.info("replication")["master_link_status"] == "up", "the replica never synced")
    browser = apps(_config(path, master.port)).test_client()
    assert browser.get("/set/a/1").status_code == 200
    writer = master.client()
    writer.wait(1, 5000)  # the session reached the replica

    on_replica = apps(_config(path, replica.port)).test_client()
    cookie = browser.get_cookie("session")
    assert cookie is not None
    on_replica.set_cookie("session", cookie.value)
    with caplog.at_level(logging.ERROR, logger="flask_satchel"):
        assert on_replica.get("/get/a").text == "'1'"
        assert _is_503(on_replica.get("/set/a/2"))
    assert any(f"127.0.0.1:{replica.port}" in message for message in _logged(caplog)), _logged(caplog)
    assert browser.get("/get/a").text == "'1'"
    probe.close()
    writer.close()


def test_read_only_request_due_a_refresh_is_served_by_a_read_only_server(
    servers: Start, apps: t.Callable[[dict[str, t.Any]], Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """A read-only request past the refresh interval still gets its page when the server refuses writes."""
    master = servers("--repl-diskless-sync-delay", "0")
    replica = servers("--replicaof", "127.0.0.1", str(master.port))
    probe = replica.client()
    _wait_for(lambda: probe.info("replication")["master_link_status"] == "up", "the replica never synced")
    browser = apps(_config("url", master.port)).test_client()
    assert browser.get("/set/a/1").status_code == 200
    writer = master.client()
    writer.wait(1, 5000)
    on_replica = apps({**_config("url", replica.port), "SESSION_REFRESH_EACH_REQUEST": True})
    clock = [time.time() + 3600]  # far past the refresh interval: this read is due a touch
    on_replica.session_interface.now = lambda: clock[0]  # type: ignore[attr-defined]
    client = on_replica.test_client()
    cookie = browser.get_cookie("session")
    assert cookie is not None
    client.set_cookie("session", cookie.value)
    with caplog.at_level(logging.ERROR, logger="flask_satchel"):
        response = client.get("/get/a")
    assert response.status_code == 200
    assert response.text == "'1'"
    assert _logged(caplog)  # the failed refresh is in the log
    probe.close()
    writer.close()


def _no_replicas(client: redis.Redis, server: RedisServer) -> t.Callable[[], t.Any]:
    """min-replicas-to-write 1 with no replica: every write answers NOREPLICAS."""
    client.config_set("min-replicas-to-write", 1)
    return lambda: client.config_set("min-replicas-to-write", 0)


def _failed_save(client: redis.Redis, server: RedisServer) -> t.Callable[[], t.Any]:
    """A save point and an RDB save that failed (its folder is gone): every write answers MISCONF."""
    client.config_set("save", "3600 1")
    shutil.rmtree(server.folder)
    client.bgsave()
    _wait_for(lambda: client.info("persistence")["rdb_last_bgsave_status"] == "err", "the save never failed")
    return lambda: client.config_set("save", "")


@pytest.mark.parametrize("path", ["url", "client"])
@pytest.mark.parametrize("refuse", [_no_replicas, _failed_save], ids=["NOREPLICAS", "MISCONF"])
def test_server_refusing_writes_is_a_503_and_reads_work(
    servers: Start,
    apps: t.Callable[[dict[str, t.Any]], Flask],
    path: str,
    refuse: t.Callable[[redis.Redis, RedisServer], t.Callable[[], t.Any]],
) -> None:
    """A Redis that refuses writes (no replicas to write to, a failed save) answers 503 for writes; reads work."""
    server = servers()
    browser = apps(_config(path, server.port)).test_client()
    assert browser.get("/set/a/1").status_code == 200
    admin = server.client()
    restore = refuse(admin, server)
    assert _is_503(browser.get("/set/a/2"))
    assert browser.get("/get/a").text == "'1'"
    restore()
    assert browser.get("/set/a/2").status_code == 200
    assert browser.get("/get/a").text == "'2'"
    admin.close()


@pytest.mark.parametrize("path", ["url", "client"])
def test_replica_without_its_master_is_a_503_for_reads_and_writes(
    servers: Start, apps: t.Callable[[dict[str, t.Any]], Flask], caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """A replica that lost its master and serves no stale data (MASTERDOWN) answers 503, and the data stays."""
    server = servers()
    browser = apps(_config(path, server.port)).test_client()
    assert browser.get("/set/a/1").status_code == 200
    admin = server.client()
    admin.config_set("replica-serve-stale-data", "no")
    admin.replicaof("127.0.0.1", free_port())  # a master that is not there
    with caplog.at_level(logging.ERROR, logger="flask_satchel"):
        assert _is_503(browser.get("/get/a"))
        assert _is_503(browser.get("/set/a/2"))
    assert any(f"127.0.0.1:{server.port}" in message for message in _logged(caplog)), _logged(caplog)
    admin.replicaof("NO", "ONE")
    assert browser.get("/get/a").text == "'1'"
    admin.close()


@pytest.mark.parametrize("path", ["url", "client"])
def test_server_busy_with_a_script_is_a_503(
    servers: Start, apps: t.Callable[[dict[str, t.Any]], Flask], path: str
) -> None:
    """While Redis runs a script past its time limit (BUSY), session requests answer 503; then they work again."""
    server = servers("--lua-time-limit", "50")
    browser = apps(_config(path, server.port)).test_client()
    assert browser.get("/set/a/1").status_code == 200
    blocker = redis.Redis(port=server.port, socket_timeout=10)  # waits out the script
    admin = server.client()

    def run_forever() -> None:
        with pytest.raises(redis.ResponseError, match="SCRIPT KILL"):
            blocker.eval("while true do end", 0)

    def busy() -> bool:
        try:
            admin.get("probe")
        except redis.ResponseError as e:
            return str(e).startswith("BUSY")
        return False

    thread = threading.Thread(target=run_forever)
    thread.start()
    try:
        _wait_for(busy, "the script never made Redis busy")
        assert _is_503(browser.get("/get/a"))
        assert _is_503(browser.get("/set/a/2"))
    finally:
        admin.script_kill()
        thread.join(10)
    assert browser.get("/get/a").text == "'1'"
    blocker.close()
    admin.close()


# A server that hangs, then answers ------------------------------------------------------


@pytest.mark.parametrize("kind", ["url", "client", "sentinel", "sentinel-client"])
def test_reply_that_came_too_late_is_never_read_by_the_next_request(
    servers: Start, apps: t.Callable[[dict[str, t.Any]], Flask], kind: str
) -> None:
    """A read that timed out while Redis hung is a 503, and its late reply never reaches the next request."""
    master = servers()
    watchers: list[t.Any] = []
    if kind.startswith("sentinel"):
        watcher = servers(f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1", sentinel=True)
        config: dict[str, t.Any] = {"SESSION_URL": f"redis+sentinel://127.0.0.1:{watcher.port}/{SERVICE}/0"}
        if kind == "sentinel-client":
            sentinel = Sentinel([("127.0.0.1", watcher.port)], socket_timeout=TIMEOUT)  # type: ignore[no-untyped-call,unused-ignore]
            watchers = sentinel.sentinels
            # Retried on broken connections only, as the store's own clients are: a timeout is no reason
            # for redis-py to close the connection, which is what this test is about.
            retry = Retry(NoBackoff(), 0, supported_errors=(redis.ConnectionError,))
            client = sentinel.master_for(  # type: ignore[no-untyped-call,unused-ignore]
                SERVICE, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, retry=retry
            )
            config = {"SESSION_TYPE": "redis", "SESSION_REDIS": client}
    else:
        config = _config(kind, master.port)
    app = apps(config)
    ann, bob = app.test_client(), app.test_client()
    assert ann.get("/set/who/ann").status_code == 200
    assert bob.get("/set/who/bob").status_code == 200
    master.freeze()
    try:
        assert _is_503(ann.get("/get/who"))  # the GET of ann's session is sent, its reply waits
    finally:
        master.thaw()
    time.sleep(0.2)  # the reply to ann's GET has arrived by now
    assert bob.get("/get/who").text == "'bob'"
    assert ann.get("/get/who").text == "'ann'"
    for each in watchers:
        each.close()


# Settings that cannot work -------------------------------------------------------------


@pytest.mark.parametrize("path", ["url", "client"])
def test_missing_database_is_a_config_error_at_init(
    servers: Start, apps: t.Callable[[dict[str, t.Any]], Flask], path: str
) -> None:
    """A database index the server does not have (redis://…/99) is a ConfigError at init_app naming the key."""
    server = servers()
    config = _config(path, server.port, db=99)
    with pytest.raises(ConfigError, match="no database") as raised:
        apps(config)
    assert raised.value.key == _key(path)
    assert f"127.0.0.1:{server.port}/99" in str(raised.value)
    if path != "url":
        config["SESSION_REDIS"].close()


def _require_password(server: RedisServer) -> None:
    """Set a password on a running server (RedisServer.start waits with a PING that has none)."""
    admin = server.client()
    admin.config_set("requirepass", "sekret")
    admin.close()


@pytest.mark.parametrize("password", [None, "wrong"], ids=["no-password", "wrong-password"])
@pytest.mark.parametrize("path", ["url", "client"])
def test_refused_credentials_are_a_config_error_at_init(
    servers: Start, apps: t.Callable[[dict[str, t.Any]], Flask], path: str, password: str | None
) -> None:
    """No password or a wrong one (NOAUTH, WRONGPASS) is a ConfigError at init_app naming the key."""
    server = servers()
    _require_password(server)
    config = _config(path, server.port, password=password)
    with pytest.raises(ConfigError, match="credentials") as raised:
        apps(config)
    assert raised.value.key == _key(path)
    if path != "url":
        config["SESSION_REDIS"].close()
    browser = apps(_config(path, server.port, password="sekret")).test_client()
    assert browser.get("/set/a/1").status_code == 200
    assert browser.get("/get/a").text == "'1'"


@pytest.mark.parametrize(
    ("wrong", "problem"), [({"db": 99}, "no database"), ({"password": "wrong"}, "credentials")], ids=["db", "password"]
)
@pytest.mark.parametrize("path", ["url", "client"])
def test_misconfigured_store_down_at_init_starts_and_its_503_names_the_problem(
    servers: Start,
    apps: t.Callable[[dict[str, t.Any]], Flask],
    caplog: pytest.LogCaptureFixture,
    path: str,
    wrong: dict[str, t.Any],
    problem: str,
) -> None:
    """With Redis down at init_app the app starts; once Redis is up, the 503s are logged saying what to fix."""
    port = free_port()
    with caplog.at_level(logging.INFO, logger="flask_satchel"):
        app = apps(_config(path, port, **wrong))  # no exception: the server is not there yet
    assert any("did not answer at startup" in m and f":{port}/" in m for m in _logged(caplog, logging.INFO))
    outages = t.cast(SatchelSessionInterface, app.session_interface).outages
    outages.interval = 0  # log every failure, not one every few seconds
    browser = app.test_client()
    assert _is_503(browser.get("/set/a/1"))

    server = servers(port=port)
    if "password" in wrong:
        _require_password(server)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="flask_satchel"):
        assert _is_503(browser.get("/set/a/1"))
    assert any(problem in m and f"check {_key(path)}" in m for m in _logged(caplog)), _logged(caplog)
