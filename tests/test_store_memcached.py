"""The memcached store, against private memcached servers this module starts.

Each server is a real ``memcached`` process on a free loopback port, started
for the module (or for one test, when the test kills or freezes it) and
always stopped afterwards. Every test uses its own key prefix.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import logging
import os
import re
import socket
import statistics
import time
import typing as t
import uuid
from urllib.parse import urlsplit

import pytest
from conftest import MemcachedServer, started_memcached, value_app
from flask import Flask
from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient
from pymemcache.serde import pickle_serde

from flask_satchel import ConfigError, NotSupported, Session, StoreUnavailable
from flask_satchel import current_session as session
from flask_satchel.manager import SessionManager
from flask_satchel.settings import StoreSettings
from flask_satchel.stores.base import Change, Record
from flask_satchel.stores.memcached import MemcachedStore
from flask_satchel.testing import http_get, live_server
from flask_satchel.testing.contract import AppContract, StoreContract

DAY = 86400.0


@pytest.fixture(scope="module")
def memcached2() -> t.Iterator[MemcachedServer]:
    yield from started_memcached()


@pytest.fixture
def private_memcached() -> t.Iterator[MemcachedServer]:
    """A server of this test's own, for tests that kill or freeze it."""
    yield from started_memcached()


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


def _settings(url: str, **kw: t.Any) -> StoreSettings:
    kw.setdefault("key_prefix", _prefix())
    return StoreSettings(type="memcached", url=urlsplit(url), **kw)


def _record(expires_at: float, user: str | None = None) -> Record:
    now = time.time()
    return Record(data={"a": b"\x01"}, created_at=now, last_seen=now, expires_at=expires_at, user=user)


# The contract ------------------------------------------------------------------


class TestMemcachedStore(StoreContract):
    lease_resolution = 1.0  # memcached expires records in whole seconds
    native_ttl = True
    lists_everything = False

    @pytest.fixture
    def store(self, memcached: MemcachedServer) -> t.Iterator[MemcachedStore]:
        store = MemcachedStore.from_settings(_settings(f"memcached://{memcached.address}"))
        yield store
        store.close()


class TestMemcachedHashStore(TestMemcachedStore):
    """The same contract with keys hashed over two servers."""

    @pytest.fixture
    def store(self, memcached: MemcachedServer, memcached2: MemcachedServer) -> t.Iterator[MemcachedStore]:
        store = MemcachedStore.from_settings(_settings(f"memcached://{memcached.address},{memcached2.address}"))
        yield store
        store.close()


class TestMemcachedPlainClientStore(TestMemcachedStore):
    """The same contract through a plain (single-socket) Client handed over by the app."""

    @pytest.fixture
    def store(self, memcached: MemcachedServer) -> t.Iterator[MemcachedStore]:
        client = Client(("127.0.0.1", memcached.port), no_delay=True, timeout=2, connect_timeout=2)
        yield MemcachedStore(client, prefix=_prefix())
        client.close()


class TestMemcachedApp(AppContract):
    lists_everything = False

    @pytest.fixture
    def config(self, memcached: MemcachedServer) -> dict[str, t.Any]:
        return {"SESSION_TYPE": "memcached", "SESSION_URL": f"memcached://{memcached.address}"}

    def test_slow_write_after_destroy_stays_dead(self, app: Flask, manager: SessionManager) -> None:
        """A request that started before destroy() cannot bring the session back."""
        # The contract's version lists every session, which memcached cannot
        # do; this one checks the record under the session's handle instead.
        app.config["TEST_PAUSE"] = 0.5
        with live_server(app) as address:
            _, _, cookie = http_get(address, "/set/a/1")
            _, handle, _ = http_get(address, "/handle", cookie)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                slow = pool.submit(http_get, address, "/slow-add/7", cookie)
                time.sleep(0.2)
                assert http_get(address, "/destroy", cookie)[0] == 200
                assert slow.result()[0] == 200
            _, body, _ = http_get(address, "/dump", cookie)
        assert body == "[]"
        assert manager.store is not None
        assert manager.store.load(handle) is None


# Expiry beyond 30 days ---------------------------------------------------------------


def _remaining_ttl(server: MemcachedServer, key: str) -> int:
    """What memcached itself says is left of an item's life (meta get, ``t`` flag)."""
    client = Client(("127.0.0.1", server.port), timeout=2)
    try:
        line = client.raw_command(f"mg {key} t".encode(), b"\r\n").decode()
    finally:
        client.close()
    assert line.startswith("HD "), line
    return int(line.split()[1][1:])


@pytest.mark.parametrize("days", [1, 29.9, 31, 90])
def test_expiry_is_sent_as_memcached_reads_it(memcached: MemcachedServer, days: float) -> None:
    """Memcached keeps a record exactly as long as its expires_at, below and above the 30-day limit."""
    store = MemcachedStore.from_settings(_settings(f"memcached://{memcached.address}"))
    try:
        store.create("a" * 32, _record(time.time() + days * DAY))
        assert store.load("a" * 32) is not None
        assert _remaining_ttl(memcached, store.prefix + "a" * 32) == pytest.approx(days * DAY, abs=3)
    finally:
        store.close()


def test_31_day_session_survives(memcached: MemcachedServer) -> None:
    """A session with a 31-day lifetime is still there on the next request, and its touch keeps it."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="x",
        SESSION_URL=f"memcached://{memcached.address}",
        SESSION_KEY_PREFIX=_prefix(),
        PERMANENT_SESSION_LIFETIME=dt.timedelta(days=31),
        SESSION_ABSOLUTE_LIFETIME=dt.timedelta(days=60),
        SESSION_REFRESH_INTERVAL=0,
    )
    Session(app)
    manager: SessionManager = app.extensions["satchel"]

    @app.get("/set")
    def set_value() -> str:
        session.permanent = True
        session["cart"] = ["apple"]
        return session.handle

    @app.get("/get")
    def get_value() -> str:
        return repr(session.get("cart"))

    client = app.test_client()
    handle = client.get("/set").text
    assert client.get("/get").text == "['apple']"  # also a refresh (a touch), interval 0
    assert client.get("/get").text == "['apple']"
    assert _remaining_ttl(memcached, manager.settings.store.key_prefix + handle) > 30 * DAY
    assert manager.store is not None
    manager.store.close()


def test_expired_record_is_not_kept(memcached: MemcachedServer) -> None:
    """A record written with an expiry already past is gone at once, not kept for ever."""
    store = MemcachedStore.from_settings(_settings(f"memcached://{memcached.address}"))
    try:
        store.create("b" * 32, _record(time.time() - 5))
        assert store.load("b" * 32) is None
    finally:
        store.close()


# Compare-and-set from the load -------------------------------------------------------


def _commands(server: MemcachedServer) -> dict[str, int]:
    """The server's command counters: reads (get and gets) and writes (set, add, cas, delete)."""
    client = Client(("127.0.0.1", server.port), timeout=2)
    try:
        stats = {k.decode() if isinstance(k, bytes) else k: v for k, v in client.stats().items()}
    finally:
        client.close()
    writes = stats["cmd_set"] + stats["delete_hits"] + stats["delete_misses"]
    return {"reads": stats["cmd_get"], "writes": writes}


def _delta(server: MemcachedServer, action: t.Callable[[], t.Any]) -> dict[str, int]:
    before = _commands(server)
    action()
    after = _commands(server)
    return {k: after[k] - before[k] for k in before}


def _change(**values: bytes) -> Change:
    now = time.time()
    return Change(set=values, last_seen=now, expires_at=now + DAY)


def test_change_after_load_is_one_round_trip(memcached: MemcachedServer) -> None:
    """A change right after this thread's load of the same key is one cas, no second read."""
    store = MemcachedStore.from_settings(_settings(f"memcached://{memcached.address}"))
    try:
        store.create("c" * 32, _record(time.time() + DAY))
        assert _delta(memcached, lambda: store.load("c" * 32)) == {"reads": 1, "writes": 0}
        assert _delta(memcached, lambda: store.apply("c" * 32, _change(b=b"2"))) == {"reads": 0, "writes": 1}
        # The token was used up: the next change reads afresh.
        assert _delta(memcached, lambda: store.apply("c" * 32, _change(c=b"3"))) == {"reads": 1, "writes": 1}
        record = store.load("c" * 32)
        assert record is not None
        assert record.data == {"a": b"\x01", "b": b"2", "c": b"3"}
    finally:
        store.close()


def test_stale_token_loses_no_concurrent_change(memcached: MemcachedServer) -> None:
    """A write between this thread's load and its change fails the cas; the retry keeps both keys."""
    settings = _settings(f"memcached://{memcached.address}")
    store, other = MemcachedStore.from_settings(settings), MemcachedStore.from_settings(settings)
    try:
        store.create("d" * 32, _record(time.time() + DAY))
        store.load("d" * 32)
        assert other.apply("d" * 32, _change(theirs=b"1")) == 2
        # One failed cas with the loaded token, then gets + cas.
        assert _delta(memcached, lambda: store.apply("d" * 32, _change(ours=b"2"))) == {"reads": 1, "writes": 2}
        record = store.load("d" * 32)
        assert record is not None
        assert record.data == {"a": b"\x01", "theirs": b"1", "ours": b"2"}
    finally:
        store.close()
        other.close()


def test_token_of_another_key_or_thread_is_not_used(memcached: MemcachedServer) -> None:
    """A load of one key, or on another thread, never stands in for reading the key changed."""
    store = MemcachedStore.from_settings(_settings(f"memcached://{memcached.address}"))
    try:
        for key in ("e" * 32, "f" * 32):
            store.create(key, _record(time.time() + DAY))
        store.load("e" * 32)
        assert _delta(memcached, lambda: store.apply("f" * 32, _change(b=b"2"))) == {"reads": 1, "writes": 1}
        # The mismatched token was dropped, not kept for a later change of "e".
        assert _delta(memcached, lambda: store.apply("e" * 32, _change(b=b"2"))) == {"reads": 1, "writes": 1}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(store.load, "e" * 32).result()
        assert _delta(memcached, lambda: store.apply("e" * 32, _change(c=b"3"))) == {"reads": 1, "writes": 1}
    finally:
        store.close()


def test_change_after_load_of_a_deleted_record_writes_nothing(memcached: MemcachedServer) -> None:
    """A record deleted between the load and the change stays deleted: the cas with the token stores nothing."""
    settings = _settings(f"memcached://{memcached.address}")
    store, other = MemcachedStore.from_settings(settings), MemcachedStore.from_settings(settings)
    try:
        store.create("g" * 32, _record(time.time() + DAY, user="ann"))
        store.load("g" * 32)
        assert other.delete("g" * 32)
        assert store.apply("g" * 32, _change(b=b"2")) is None
        assert store.load("g" * 32) is None
    finally:
        store.close()
        other.close()


def test_delete_after_load(memcached: MemcachedServer) -> None:
    """Deleting what this thread loaded is one cas; after a concurrent change it still deletes, and the right index."""
    settings = _settings(f"memcached://{memcached.address}")
    store, other = MemcachedStore.from_settings(settings), MemcachedStore.from_settings(settings)
    try:
        store.create("h" * 32, _record(time.time() + DAY, user="ann"))
        store.load("h" * 32)
        # A cas with the loaded token deletes; one append takes it out of the index.
        assert _delta(memcached, lambda: store.delete("h" * 32)) == {"reads": 0, "writes": 2}
        assert store.load("h" * 32) is None
        assert store.sessions(time.time(), "ann") == []

        store.create("i" * 32, _record(time.time() + DAY, user="ann"))
        store.load("i" * 32)
        other.apply(
            "i" * 32,
            Change(set={"b": b"2"}, last_seen=time.time(), expires_at=time.time() + DAY, user_changed=True, user="bob"),
        )
        assert store.delete("i" * 32)
        assert store.load("i" * 32) is None
        assert store.sessions(time.time(), "bob") == []
        assert store.sessions(time.time(), "ann") == []
    finally:
        store.close()
        other.close()


def test_new_session_of_a_known_user_is_two_writes(memcached: MemcachedServer) -> None:
    """A new session is the record and one append to its user's index; the first of a period also adds the index."""
    store = MemcachedStore.from_settings(_settings(f"memcached://{memcached.address}"))
    try:
        first = _delta(memcached, lambda: store.create("j" * 32, _record(time.time() + DAY, user="ann")))
        assert first == {"reads": 0, "writes": 3}  # set, append (no index yet), add
        second = _delta(memcached, lambda: store.create("k" * 32, _record(time.time() + DAY, user="ann")))
        assert second == {"reads": 0, "writes": 2}  # set, append
        assert sorted(k for k, _ in store.sessions(time.time(), "ann")) == ["j" * 32, "k" * 32]
    finally:
        store.close()


def _raw(server: MemcachedServer) -> Client:
    return Client(("127.0.0.1", server.port), timeout=2, default_noreply=False)


def test_listing_prunes_the_index(memcached: MemcachedServer) -> None:
    """Listing rewrites a user's index without ended sessions; one now naming another user stays, unlisted."""
    settings = _settings(f"memcached://{memcached.address}")
    store, other = MemcachedStore.from_settings(settings), MemcachedStore.from_settings(settings)
    raw = _raw(memcached)
    try:
        now = time.time()
        for key in ("l" * 32, "m" * 32, "n" * 32):
            store.create(key, _record(now + DAY, user="ann"))
        assert raw.delete(settings.key_prefix + "l" * 32)  # ended without a word to the index
        other.delete("m" * 32)  # ended through the store: a "-" line
        index = store._index.key("ann", store._index.period(now))
        assert raw.get(index).count(b"\n") == 4
        assert [k for k, _ in store.sessions(now, "ann")] == ["n" * 32]
        assert raw.get(index) == b"+" + b"n" * 32 + b"\n"
        store.apply("n" * 32, Change(set={}, last_seen=now, expires_at=now + DAY, user_changed=True, user="bob"))
        assert store.sessions(now, "ann") == []
        assert [k for k, _ in store.sessions(now, "bob")] == ["n" * 32]
        store.delete("n" * 32)
        assert store.sessions(now, "bob") == []
        assert raw.get(index) is None  # emptied: dropped
    finally:
        raw.close()
        store.close()
        other.close()


def test_full_index_is_pruned_to_make_room(memcached: MemcachedServer) -> None:
    """An index at memcached's item size limit is pruned of ended sessions, and the new session is listed."""
    store = MemcachedStore.from_settings(_settings(f"memcached://{memcached.address}"))
    raw = _raw(memcached)
    try:
        now = time.time()
        store.create("o" * 32, _record(now + DAY, user="ann"))
        index = store._index.key("ann", store._index.period(now))
        for lines in (3000, 30, 1):  # fill it to the last byte memcached takes
            chunk = b"".join(b"+%032x\n" % i for i in range(lines))
            while raw.append(index, chunk):
                pass
        assert len(raw.get(index)) > 1_000_000
        store.create("p" * 32, _record(now + DAY, user="ann"))
        assert sorted(k for k, _ in store.sessions(now, "ann")) == ["o" * 32, "p" * 32]
        assert len(raw.get(index)) < 100
    finally:
        raw.close()
        store.close()


# No Nagle --------------------------------------------------------------------------


def test_one_key_change_takes_milliseconds(memcached: MemcachedServer) -> None:
    """One-key changes and new sessions take a few ms, not Nagle's ~40 ms; connections set TCP_NODELAY."""
    app = Flask(__name__)
    app.config.update(SESSION_URL=f"memcached://{memcached.address}", SESSION_KEY_PREFIX=_prefix())
    Session(app)
    store: MemcachedStore = app.extensions["satchel"].store

    @app.get("/add/<int:i>")
    def add(i: int) -> str:
        session[f"k{i % 3}"] = i
        return "ok"

    def median_ms(requests: t.Callable[[int], t.Any]) -> float:
        timings = []
        for i in range(1, 22):
            start = time.perf_counter()
            assert requests(i).status_code == 200
            timings.append(time.perf_counter() - start)
        return statistics.median(timings) * 1000

    client = app.test_client()
    client.get("/add/0")
    changes = median_ms(lambda i: client.get(f"/add/{i}"))
    # A new session each time: a write, then the next request's read on the same connection.
    creations = median_ms(lambda i: app.test_client().get(f"/add/{i}"))
    connections = [c.sock for c in store.client.client_pool.free if c.sock is not None]
    nodelay = {c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for c in connections}
    store.close()
    assert changes < 15
    assert creations < 15
    assert connections
    assert nodelay == {1}


# Errors surface ------------------------------------------------------------------------


def _app(server: MemcachedServer | str, **config: t.Any) -> Flask:
    url = server if isinstance(server, str) else f"memcached://{server.address}"
    return value_app(SESSION_URL=url, SESSION_KEY_PREFIX=_prefix(), SESSION_STORE_TIMEOUT=0.5, **config)


def _close(app: Flask) -> None:
    app.extensions["satchel"].store.close()


def test_killed_server_is_503_then_recovers(private_memcached: MemcachedServer) -> None:
    """A killed memcached is a 503 with Retry-After; once restarted the next request works, same app."""
    app = _app(private_memcached)
    client = app.test_client()
    assert client.get("/set/1").status_code == 200
    private_memcached.kill()
    response = client.get("/get")
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert client.get("/set/2").status_code == 503
    private_memcached.start()
    assert client.get("/set/3").status_code == 200
    assert client.get("/get").text == "'3'"
    _close(app)


def test_restart_between_requests_is_invisible(private_memcached: MemcachedServer) -> None:
    """Pooled connections closed by a restart are replaced: the first request after it succeeds."""
    app = _app(private_memcached)
    with live_server(app) as address:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:  # several pooled connections
            assert set(pool.map(lambda i: http_get(address, f"/set/{i}")[0], range(16))) == {200}
        private_memcached.kill()
        private_memcached.start()
        status, _, cookie = http_get(address, "/set/after")
        assert status == 200
        assert http_get(address, "/get", cookie)[:2] == (200, "'after'")
    _close(app)


def _freeze(server: MemcachedServer) -> None:
    """SIGSTOP the server and wait until every one of its threads has stopped.

    ``kill`` returns before the signal reaches threads running on another
    CPU, and on a busy machine one of them could still answer the next
    request.
    """
    server.freeze()
    assert server.process is not None
    tasks = f"/proc/{server.process.pid}/task"
    deadline = time.monotonic() + 5
    while True:
        states = set()
        for task in os.listdir(tasks):
            with contextlib.suppress(FileNotFoundError), open(f"{tasks}/{task}/stat") as f:
                states.add(f.read().rsplit(")", 1)[1].split()[0])
        if states <= {"T", "t"} or time.monotonic() > deadline:
            return
        time.sleep(0.001)


def test_frozen_server_is_503_within_timeout(private_memcached: MemcachedServer) -> None:
    """A memcached that hangs (SIGSTOP) is a 503 within SESSION_STORE_TIMEOUT; after SIGCONT all is back."""
    app = _app(private_memcached)
    client = app.test_client()
    assert client.get("/set/kept").status_code == 200
    _freeze(private_memcached)
    try:
        start = time.monotonic()
        response = client.get("/get")
        elapsed = time.monotonic() - start
    finally:
        private_memcached.thaw()
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert elapsed < 2
    assert client.get("/get").text == "'kept'"
    _close(app)


@pytest.mark.parametrize("given", [False, True], ids=["url", "handed-over-hash-client"])
def test_dead_server_of_several_is_never_no_session(
    memcached: MemcachedServer, private_memcached: MemcachedServer, given: bool
) -> None:
    """With two servers and one dead, its sessions are StoreUnavailable, never missing; the other's still work."""
    servers = [("127.0.0.1", memcached.port), ("127.0.0.1", private_memcached.port)]
    if given:  # HashClient's defaults: retry a failed server after 1 s, drop it after 2 failures
        store = MemcachedStore(HashClient(servers, timeout=0.5), prefix=_prefix(), owns_client=True)
    else:
        store = MemcachedStore.from_settings(
            _settings(f"memcached://{memcached.address},{private_memcached.address}", timeout=0.5)
        )
    try:
        keys = [uuid.uuid4().hex for _ in range(40)]
        for key in keys:
            store.create(key, _record(time.time() + 3600))
        private_memcached.kill()
        outcomes: dict[str, bool | str] = {}
        for key in keys:
            try:
                outcomes[key] = store.load(key) is not None
            except StoreUnavailable:
                outcomes[key] = "unavailable"
        # Again and again: HashClient's own failover would start answering "missing".
        for _ in range(3):
            for key in keys:
                if outcomes[key] == "unavailable":
                    with pytest.raises(StoreUnavailable):
                        store.load(key)
                    now = time.time()
                    with pytest.raises(StoreUnavailable):
                        store.apply(key, Change(set={"b": b"2"}, last_seen=now, expires_at=now + 60))
                    with pytest.raises(StoreUnavailable):
                        store.delete(key)
    finally:
        store.close()
    assert set(outcomes.values()) == {True, "unavailable"}


# Configuration ------------------------------------------------------------------------


def _init(**config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(SESSION_TYPE="memcached", **config)
    Session(app)
    return app


def test_client_of_wrong_type_is_refused() -> None:
    """SESSION_MEMCACHED of an unexpected type is a ConfigError naming the key and what is accepted."""
    with pytest.raises(
        ConfigError, match=r"SESSION_MEMCACHED: expected a pymemcache Client, PooledClient or HashClient"
    ):
        _init(SESSION_MEMCACHED="127.0.0.1:11211")


def test_client_that_hides_errors_is_refused(memcached: MemcachedServer) -> None:
    """A client with ignore_exc=True, which would turn an outage into 'no session', is refused."""
    client = PooledClient(("127.0.0.1", memcached.port), ignore_exc=True)
    with pytest.raises(ConfigError, match="ignore_exc"):
        _init(SESSION_MEMCACHED=client)
    hashed = HashClient([("127.0.0.1", memcached.port)], ignore_exc=True)
    with pytest.raises(ConfigError, match="ignore_exc"):
        _init(SESSION_MEMCACHED=hashed)


def test_client_that_unpickles_is_refused(memcached: MemcachedServer) -> None:
    """A client whose serde unpickles what it reads is refused: sessions are never pickled."""
    with pytest.raises(ConfigError, match="never unpickles"):
        _init(SESSION_MEMCACHED=Client(("127.0.0.1", memcached.port), serde=pickle_serde))


def test_client_without_timeout_is_logged_about(memcached: MemcachedServer, caplog: pytest.LogCaptureFixture) -> None:
    """A client without a timeout works, with a log line (not a warning) that a hanging server would hang requests."""
    client = PooledClient(("127.0.0.1", memcached.port))
    with caplog.at_level(logging.WARNING, "flask_satchel"):
        app = _init(SESSION_MEMCACHED=client, SESSION_KEY_PREFIX=_prefix())
    assert any(re.search(r"timeout=None.*503", r.getMessage()) for r in caplog.records)

    @app.get("/")
    def index() -> str:
        session["x"] = 1
        return "ok"

    assert app.test_client().get("/").status_code == 200
    client.close()


def test_handed_over_hash_client_is_used(memcached: MemcachedServer, memcached2: MemcachedServer) -> None:
    """A HashClient in SESSION_MEMCACHED keeps sessions on its servers, and is not closed by the store."""
    client = HashClient(
        [("127.0.0.1", memcached.port), ("127.0.0.1", memcached2.port)], use_pooling=True, no_delay=True, timeout=2
    )
    app = _init(SESSION_MEMCACHED=client, SESSION_KEY_PREFIX=_prefix())

    @app.get("/set")
    def set_value() -> str:
        session["x"] = "y"
        return session.handle

    handle = app.test_client().get("/set").text
    store = app.extensions["satchel"].store
    store.close()
    assert client.get(store.prefix + handle) is not None  # still open, and the record is where HashClient looks
    client.close()


def test_url_with_several_servers_makes_a_hash_client(memcached: MemcachedServer, memcached2: MemcachedServer) -> None:
    """memcached://a,b builds a pooled HashClient with TCP_NODELAY and the store timeout."""
    store = MemcachedStore.from_settings(
        _settings(f"memcached://{memcached.address},{memcached2.address}", timeout=0.7)
    )
    assert isinstance(store.client, HashClient)
    assert store.client.use_pooling
    assert all(c.no_delay and c.timeout == 0.7 and c.connect_timeout == 0.7 for c in store.client.clients.values())
    store.close()


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"SESSION_URL": "memcached://127.0.0.1:11211/extra"}, "SESSION_URL"),
        ({"SESSION_URL": "memcached://user:pw@127.0.0.1:11211"}, "SESSION_URL"),
        ({"SESSION_URL": "memcached://127.0.0.1:11211,:11212"}, "SESSION_URL"),
        ({"SESSION_KEY_PREFIX": "my sessions:"}, "SESSION_KEY_PREFIX"),
        ({"SESSION_KEY_PREFIX": "p" * 220}, "SESSION_KEY_PREFIX"),
    ],
)
def test_bad_url_or_prefix_is_refused(config: dict[str, t.Any], key: str) -> None:
    """A URL that is not a list of servers, or a prefix memcached keys cannot hold, is a ConfigError."""
    with pytest.raises(ConfigError) as info:
        _init(**config)
    assert info.value.key == key


def test_client_and_url_together_are_refused(memcached: MemcachedServer) -> None:
    """Giving both SESSION_MEMCACHED and a memcached URL is ambiguous, so it is refused."""
    client = PooledClient(("127.0.0.1", memcached.port), no_delay=True, timeout=1)
    with pytest.raises(ConfigError, match="not both"):
        _init(SESSION_MEMCACHED=client, SESSION_URL=f"memcached://{memcached.address}")


# The manager and the CLI ------------------------------------------------------------------


def test_manager_and_cli_say_memcached_cannot_count(memcached: MemcachedServer) -> None:
    """count() and listing everyone raise NotSupported naming memcached; the CLI says so and exits non-zero."""
    app = _app(memcached)
    manager: SessionManager = app.extensions["satchel"]
    app.test_client().get("/set/1")
    with pytest.raises(NotSupported, match="memcached"):
        manager.count()
    with pytest.raises(NotSupported, match="memcached"):
        manager.sessions()
    assert manager.cleanup() == 0
    runner = app.test_cli_runner()
    result = runner.invoke(args=["session", "count"])
    assert result.exit_code != 0
    assert "memcached" in result.output
    assert runner.invoke(args=["session", "cleanup"]).output.strip() == "Removed 0 expired sessions."
    _close(app)


def test_cli_lists_and_revokes_a_users_sessions(memcached: MemcachedServer) -> None:
    """`flask session list --user` and `revoke-user` work from memcached's per-user index."""
    app = _app(memcached)

    @app.get("/login/<user>")
    def login(user: str) -> str:
        session["_user_id"] = user
        return session.handle

    clients = [app.test_client() for _ in range(3)]
    handles = [c.get(f"/login/{u}").text for c, u in zip(clients, ["ann", "ann", "bob"], strict=True)]
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["session", "list", "--user", "ann"]).output
    assert sorted(line.split()[0] for line in listed.splitlines()[1:]) == sorted(handles[:2])
    assert runner.invoke(args=["session", "revoke-user", "ann"]).output.strip() == "Revoked 2 sessions of ann."
    assert [c.get("/get").status_code for c in clients] == [200, 200, 200]
    assert runner.invoke(args=["session", "list", "--user", "ann"]).output.strip() == "No sessions."
    assert [info.handle for info in app.extensions["satchel"].sessions_of("bob")] == [handles[2]]
    _close(app)
