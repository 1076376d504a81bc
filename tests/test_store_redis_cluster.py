"""The Redis store on a real Redis Cluster and behind a real Sentinel.

Both are private processes on free loopback ports, started once for the
module and always stopped afterwards: a 3-master cluster made with
``redis-cli --cluster create``, and one master watched by one Sentinel.
Both contracts, the store's and the app's, run against each.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import typing as t
import uuid
from urllib.parse import urlsplit

import pytest
import redis
from conftest import RedisServer, free_port, require
from flask import Flask
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from flask_satchel.manager import SessionManager
from flask_satchel.settings import StoreSettings
from flask_satchel.stores.base import Record
from flask_satchel.stores.redis import RedisStore
from flask_satchel.testing.contract import AppContract, StoreContract

SERVICE = "satchel"


def _have_redis() -> None:
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    require(shutil.which("redis-cli") is not None, "redis-cli is not installed")


def _cluster_ok(ports: list[int]) -> bool:
    for port in ports:
        client = redis.Redis(port=port, socket_timeout=1)
        try:
            # redis-py leaves execute_command, ClusterNode, Sentinel and its methods unannotated (here and below).
            if client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":  # type: ignore[no-untyped-call]
                return False
        except redis.RedisError:
            return False
        finally:
            client.close()
    return True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[list[int]]:
    """A 3-master Redis Cluster; yields the ports of its nodes."""
    _have_redis()
    folder = str(tmp_path_factory.mktemp("cluster"))
    nodes: list[RedisServer] = []
    try:
        for _ in range(3):
            port = free_port(bus=True)
            args = ("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf")
            nodes.append(RedisServer(f"{folder}/{port}", *args, port=port).start())
        ports = [node.port for node in nodes]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 30
        while not _cluster_ok(ports):
            assert time.monotonic() < deadline, "the cluster did not reach cluster_state:ok"
            time.sleep(0.1)
        yield ports
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[int]:
    """A master and one Sentinel watching it as 'satchel'; yields the Sentinel's port."""
    _have_redis()
    folder = str(tmp_path_factory.mktemp("sentinel"))
    master = RedisServer(folder)
    watcher: RedisServer | None = None
    try:
        master.start()
        watcher = RedisServer(
            folder,
            f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1",
            f"sentinel down-after-milliseconds {SERVICE} 60000",
            sentinel=True,
        ).start()
        yield watcher.port
    finally:
        if watcher is not None:
            watcher.stop()
        master.stop()


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


def _cluster_url(ports: list[int]) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports[:2])


def _sentinel_url(port: int) -> str:
    return f"redis+sentinel://127.0.0.1:{port}/{SERVICE}/0"


def _store(url: str) -> RedisStore:
    return RedisStore.from_settings(StoreSettings(type="redis", url=urlsplit(url), key_prefix=_prefix()))


# Cluster ------------------------------------------------------------------------------


class TestClusterStore(StoreContract):
    native_ttl = True

    @pytest.fixture
    def store(self, cluster: list[int]) -> t.Iterator[RedisStore]:
        store = _store(_cluster_url(cluster))
        yield store
        store.close()


class TestClusterClientStore(TestClusterStore):
    """The store contract through a RedisCluster the app hands over."""

    @pytest.fixture
    def store(self, cluster: list[int]) -> t.Iterator[RedisStore]:
        client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", cluster[0])], socket_timeout=2)  # type: ignore[no-untyped-call]
        yield RedisStore.from_settings(
            StoreSettings(type="redis", config={"SESSION_REDIS": client}, key_prefix=_prefix())
        )
        client.close()


class TestClusterApp(AppContract):
    @pytest.fixture
    def config(self, cluster: list[int]) -> dict[str, t.Any]:
        # One node is enough: the client learns the others from it.
        return {"SESSION_URL": f"redis+cluster://127.0.0.1:{cluster[0]}"}


class TestClusterAppClient(AppContract):
    """The app contract with a RedisCluster in SESSION_REDIS."""

    @pytest.fixture
    def config(self, cluster: list[int]) -> t.Iterator[dict[str, t.Any]]:
        client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", cluster[1])], socket_timeout=2)  # type: ignore[no-untyped-call]
        yield {"SESSION_TYPE": "redis", "SESSION_REDIS": client}
        client.close()


def test_sessions_spread_over_every_master(cluster: list[int]) -> None:
    """Sessions land on all three masters, and count() and sessions() find every one of them."""
    store = _store(_cluster_url(cluster))
    try:
        now = time.time()
        keys = [uuid.uuid4().hex for _ in range(60)]
        for i, key in enumerate(keys):
            store.create(
                key, Record(data={"a": b"1"}, created_at=now, last_seen=now, expires_at=now + 60, user=f"u{i % 2}")
            )
        sizes = []
        for port in cluster:
            node = redis.Redis(port=port, socket_timeout=2)
            sizes.append(len(list(node.scan_iter(match=store.prefix + "{*", count=1000))))
            node.close()
        assert sum(sizes) == 60
        assert all(size > 0 for size in sizes)
        assert store.count(now) == 60
        assert sorted(k for k, _ in store.sessions(now)) == sorted(keys)
        assert sorted(k for k, _ in store.sessions(now, "u1")) == sorted(keys[1::2])
    finally:
        store.close()


def test_cluster_down_at_startup_is_not_fatal(tmp_path: t.Any) -> None:
    """An app configured with an unreachable cluster starts, and its session requests get 503."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="x", SESSION_URL=f"redis+cluster://127.0.0.1:{free_port()}", SESSION_STORE_TIMEOUT=0.5)
    from flask import session

    from flask_satchel import Session

    Session(app)

    @app.get("/")
    def index() -> str:
        session["a"] = 1
        return "ok"

    response = app.test_client().get("/", headers={"Cookie": "session=" + "A" * 43})
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    manager: SessionManager = app.extensions["satchel"]
    assert manager.store is not None
    manager.store.close()


# Sentinel -----------------------------------------------------------------------------


class TestSentinelStore(StoreContract):
    native_ttl = True

    @pytest.fixture
    def store(self, sentinel: int) -> t.Iterator[RedisStore]:
        store = _store(_sentinel_url(sentinel))
        yield store
        store.close()


class TestSentinelClientStore(TestSentinelStore):
    """The store contract through a Sentinel(...).master_for(...) client the app hands over."""

    @pytest.fixture
    def store(self, sentinel: int) -> t.Iterator[RedisStore]:
        watcher = Sentinel([("127.0.0.1", sentinel)], socket_timeout=2)  # type: ignore[no-untyped-call,unused-ignore]
        client = watcher.master_for(SERVICE, socket_timeout=2)  # type: ignore[no-untyped-call,unused-ignore]
        yield RedisStore.from_settings(
            StoreSettings(type="redis", config={"SESSION_REDIS": client}, key_prefix=_prefix())
        )
        client.close()
        for each in watcher.sentinels:
            each.close()


class TestSentinelApp(AppContract):
    @pytest.fixture
    def config(self, sentinel: int) -> dict[str, t.Any]:
        return {"SESSION_URL": _sentinel_url(sentinel)}


def test_sentinel_url_reaches_the_master(sentinel: int) -> None:
    """A redis+sentinel URL writes to the master the Sentinel names, in the URL's database."""
    store = RedisStore.from_settings(
        StoreSettings(
            type="redis", url=urlsplit(f"redis+sentinel://127.0.0.1:{sentinel}/{SERVICE}/3"), key_prefix=_prefix()
        )
    )
    try:
        now = time.time()
        store.create("a" * 32, Record(data={"a": b"1"}, created_at=now, last_seen=now, expires_at=now + 60))
        watcher = Sentinel([("127.0.0.1", sentinel)], socket_timeout=2)  # type: ignore[no-untyped-call,unused-ignore]
        host, port = watcher.discover_master(SERVICE)  # type: ignore[no-untyped-call,unused-ignore]
        for each in watcher.sentinels:
            each.close()
        master = redis.Redis(host=host, port=port, db=3, socket_timeout=2)
        assert master.exists(f"{store.prefix}{{{'a' * 32}}}") == 1
        master.close()
    finally:
        store.close()
