"""The Redis store against the shared Redis at 127.0.0.1:6379.

Every test works in database 13 under a key prefix of its own and deletes
only the keys under that prefix afterwards: never FLUSHDB, the server is
shared. Cluster, Sentinel and outages, which need servers of their own, are
in ``test_store_redis_cluster.py`` and ``test_outage_redis.py``.
"""

from __future__ import annotations

import logging
import typing as t
import uuid
import warnings
from urllib.parse import urlsplit

import msgspec
import pytest
import redis
from conftest import reachable, require, value_app
from flask import Flask, session

from flask_satchel import ConfigError, Session
from flask_satchel.errors import StoreUnavailable
from flask_satchel.settings import StoreSettings
from flask_satchel.stores.base import Change, Record, user_hash
from flask_satchel.stores.redis import RedisStore
from flask_satchel.testing.contract import AppContract, StoreContract

DB = 13
URL = f"redis://127.0.0.1:6379/{DB}"


def delete_prefix(client: t.Any, prefix: str) -> None:
    """Delete this test's keys, and only them."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
    keys = list(client.scan_iter(match=escaped + "*", count=1000))
    for key in keys:  # one by one: on a cluster the keys live in different slots
        client.delete(key)


@pytest.fixture(scope="module")
def shared() -> t.Iterator[redis.Redis]:
    """A client of the shared server's database 13, for checks and cleanup."""
    client = redis.Redis.from_url(URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        require(reachable(client), "Redis is not running on 127.0.0.1:6379")
        yield client
    finally:
        client.close()


def _prefix() -> str:
    return f"satchel-test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def prefix(shared: redis.Redis) -> t.Iterator[str]:
    prefix = _prefix()
    yield prefix
    delete_prefix(shared, prefix)


def _settings(prefix: str, url: str | None = URL, **kw: t.Any) -> StoreSettings:
    return StoreSettings(type="redis", url=None if url is None else urlsplit(url), key_prefix=prefix, **kw)


# The contracts ----------------------------------------------------------------------


class TestRedisStore(StoreContract):
    native_ttl = True

    @pytest.fixture
    def store(self, prefix: str) -> t.Iterator[RedisStore]:
        store = RedisStore.from_settings(_settings(prefix))
        yield store
        store.close()


class TestRedisClientStore(TestRedisStore):
    """The same contract through a redis.Redis the app hands over."""

    @pytest.fixture
    def store(self, prefix: str) -> t.Iterator[RedisStore]:
        client = redis.Redis(port=6379, db=DB, socket_timeout=2, socket_connect_timeout=2)
        store = RedisStore.from_settings(
            StoreSettings(type="redis", config={"SESSION_REDIS": client}, key_prefix=prefix)
        )
        yield store
        store.close()
        client.close()


class TestRedisApp(AppContract):
    @pytest.fixture
    def config(self, prefix: str) -> dict[str, t.Any]:
        return {"SESSION_TYPE": "redis", "SESSION_URL": URL, "SESSION_KEY_PREFIX": prefix}


class TestRedisAppClient(AppContract):
    """The app contract with SESSION_REDIS, as Flask-Session users configure it."""

    @pytest.fixture
    def config(self, prefix: str) -> t.Iterator[dict[str, t.Any]]:
        client = redis.Redis(port=6379, db=DB, socket_timeout=2, socket_connect_timeout=2)
        yield {"SESSION_TYPE": "redis", "SESSION_REDIS": client, "SESSION_KEY_PREFIX": prefix}
        client.close()


# Layout -------------------------------------------------------------------------------


def _store(prefix: str) -> RedisStore:
    return RedisStore.from_settings(_settings(prefix))


def _record(now: float, user: str | None = None, **data: bytes) -> Record:
    return Record(data=data, created_at=now, last_seen=now, expires_at=now + 3600, user=user)


def test_session_is_one_string_with_native_ttl(shared: redis.Redis, prefix: str) -> None:
    """A session is one hash-tagged string whose Redis TTL ends at expires_at, and moves with touch."""
    store = _store(prefix)
    try:
        now = shared.time()[0]
        store.create("a" * 32, Record(data={"k": b"v"}, created_at=now, last_seen=now, expires_at=now + 600))
        name = f"{prefix}{{{'a' * 32}}}"
        assert shared.type(name) == b"string"
        assert 598_000 <= shared.pttl(name) <= 600_000
        store.touch("a" * 32, now, now + 1200)
        assert 1_198_000 <= shared.pttl(name) <= 1_200_000
    finally:
        store.close()


@pytest.mark.parametrize("name", ["\xffcreated_at", "user", "created_at", "last_seen", "data", "{x}", "ключ", ""])
def test_session_keys_never_collide_with_metadata(prefix: str, name: str) -> None:
    """Any session key name, even one spelled like a metadata field, is data and leaves metadata alone."""
    store = _store(prefix)
    try:
        import time

        now = time.time()
        store.create("b" * 32, _record(now, user="ann", a=b"1"))
        assert store.apply("b" * 32, Change(set={name: b"x"}, last_seen=now, expires_at=now + 3600)) == 2
        loaded = store.load("b" * 32)
        assert loaded is not None
        assert loaded.data == {"a": b"1", name: b"x"}
        assert (loaded.user, loaded.created_at) == ("ann", now)
        assert store.apply("b" * 32, Change(removed=[name, "a"], last_seen=now, expires_at=now + 3600)) == 0
        assert store.load("b" * 32) is None
    finally:
        store.close()


def test_late_change_never_shortens_the_session(shared: redis.Redis, prefix: str) -> None:
    """A change from a request that loaded the record before a refresh keeps the newer expiry and TTL."""
    store = _store(prefix)
    try:
        now = shared.time()[0]
        store.create("9" * 32, _record(now - 100, a=b"1"))
        assert store.touch("9" * 32, now, now + 1200)  # another request refreshed it
        # this one loaded the record before that refresh and still carries its times
        assert store.apply("9" * 32, Change(set={"b": b"2"}, last_seen=now - 100, expires_at=now + 3500)) == 2
        loaded = store.load("9" * 32)
        assert loaded is not None
        assert (loaded.last_seen, loaded.expires_at) == (now, now + 1200)
        assert 1_198_000 <= shared.pttl(f"{prefix}{{{'9' * 32}}}") <= 1_200_000
        assert loaded.data == {"a": b"1", "b": b"2"}
    finally:
        store.close()


def test_change_from_a_stale_read_merges_into_the_newer_record(shared: redis.Redis, prefix: str) -> None:
    """A change computed from a read that another store wrote over since is merged again, losing nothing."""
    store, other = _store(prefix), _store(prefix)
    try:
        now = shared.time()[0]
        store.create("7" * 32, _record(now, user="di", a=b"1"))
        assert store.load("7" * 32) is not None  # this request's read, which its change starts from
        assert other.apply("7" * 32, Change(set={"b": b"2"}, last_seen=now, expires_at=now + 3600)) == 2
        assert store.apply("7" * 32, Change(set={"c": b"3"}, removed=["a"], last_seen=now, expires_at=now + 3600)) == 2
        loaded = other.load("7" * 32)
        assert loaded is not None
        assert (loaded.data, loaded.user) == ({"b": b"2", "c": b"3"}, "di")
    finally:
        store.close()
        other.close()


def test_change_after_a_destroy_elsewhere_is_refused(shared: redis.Redis, prefix: str) -> None:
    """A change computed from a read of a session that another store then deleted writes nothing."""
    store, other = _store(prefix), _store(prefix)
    try:
        now = shared.time()[0]
        store.create("6" * 32, _record(now, a=b"1"))
        assert store.load("6" * 32) is not None
        assert other.delete("6" * 32)
        assert store.apply("6" * 32, Change(set={"b": b"2"}, last_seen=now, expires_at=now + 3600)) is None
        assert not store.touch("6" * 32, now, now + 3600)
        assert shared.exists(f"{prefix}{{{'6' * 32}}}") == 0
    finally:
        store.close()
        other.close()


def test_change_that_keeps_losing_gives_up_with_unavailable(shared: redis.Redis, prefix: str) -> None:
    """A change that loses every compare-and-set it is allowed is a StoreUnavailable (a 503), never a blind write."""
    store, other = _store(prefix), _store(prefix)
    store.attempts = 1
    try:
        now = shared.time()[0]
        store.create("4" * 32, _record(now, a=b"1"))
        assert store.load("4" * 32) is not None
        assert other.apply("4" * 32, Change(set={"b": b"2"}, last_seen=now, expires_at=now + 3600)) == 2
        with pytest.raises(StoreUnavailable, match="lost to others"):
            store.apply("4" * 32, Change(set={"c": b"3"}, last_seen=now, expires_at=now + 3600))
        loaded = other.load("4" * 32)
        assert loaded is not None
        assert loaded.data == {"a": b"1", "b": b"2"}
    finally:
        store.close()
        other.close()


def test_key_of_another_type_is_an_error_not_a_session(shared: redis.Redis, prefix: str) -> None:
    """A key of another type under a session's name is Redis's WRONGTYPE error, raised, never read as a session."""
    store = _store(prefix)
    try:
        shared.hset(f"{prefix}{{{'5' * 32}}}", "a", "b")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            store.load("5" * 32)
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            store.count(0.0)
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            store.delete("5" * 32)
        assert shared.type(f"{prefix}{{{'5' * 32}}}") == b"hash"  # left as it was
    finally:
        store.close()


def test_unreadable_string_is_no_session(shared: redis.Redis, prefix: str) -> None:
    """A string no store wrote under a session's name reads as unreadable, is not counted, and can be deleted."""
    store = _store(prefix)
    try:
        shared.set(f"{prefix}{{{'5' * 32}}}", b"\xc1 not msgpack")
        with pytest.raises(msgspec.DecodeError):  # a ValueError: the interface starts a new session
            store.load("5" * 32)
        assert store.count(0.0) == 0
        assert store.delete("5" * 32)
        assert shared.exists(f"{prefix}{{{'5' * 32}}}") == 0
    finally:
        store.close()


def test_load_of_a_large_session(prefix: str) -> None:
    """A session of 3000 keys is changed and loaded back whole."""
    store = _store(prefix)
    try:
        import time

        now = time.time()
        data = {f"k{i}": bytes([i % 256]) * (i % 300) for i in range(3000)}
        store.create("8" * 32, Record(data=data, created_at=now, last_seen=now, expires_at=now + 3600))
        change = {f"k{i}": b"new" for i in range(0, 3000, 2)}
        removed = ["k1", "k3"]
        assert store.apply("8" * 32, Change(set=change, removed=removed, last_seen=now, expires_at=now + 60)) == 2998
        loaded = store.load("8" * 32)
        assert loaded is not None
        expected = {**data, **change}
        del expected["k1"], expected["k3"]
        assert loaded.data == expected
    finally:
        store.close()


def test_user_index_is_pruned_of_stale_members(shared: redis.Redis, prefix: str) -> None:
    """Listing a user's sessions drops members that expired in Redis or moved to another user."""
    store = _store(prefix)
    try:
        import time

        now = time.time()
        store.create("c" * 32, _record(now, user="bo", a=b"1"))
        store.create("d" * 32, _record(now, user="bo", a=b"1"))
        shared.delete(f"{prefix}{{{'c' * 32}}}")  # as if Redis had expired it
        assert [k for k, _ in store.sessions(now, "bo")] == ["d" * 32]
        assert shared.smembers(f"{prefix}user:{{{user_hash('bo')}}}") == {b"d" * 32}
    finally:
        store.close()


def test_keys_of_other_apps_are_not_counted(shared: redis.Redis, prefix: str) -> None:
    """count() and sessions() see only this prefix's session hashes, not lookalikes or user sets."""
    store = _store(prefix)
    try:
        import time

        now = time.time()
        store.create("e" * 32, _record(now, user="cy", a=b"1"))
        shared.set(prefix + "other", b"x")
        shared.set(f"{prefix}x{{{'f' * 32}}}", b"x")
        shared.set(f"{prefix[:-1]}*:{{{'f' * 32}}}", b"x")
        assert store.count(now) == 1
        assert [k for k, _ in store.sessions(now)] == ["e" * 32]
    finally:
        shared.delete(f"{prefix[:-1]}*:{{{'f' * 32}}}")
        store.close()


def test_prefix_with_glob_characters(shared: redis.Redis) -> None:
    """A key prefix holding glob characters still counts exactly its own sessions."""
    prefix = f"glob[*?]-{uuid.uuid4().hex[:6]}:"
    store = _store(prefix)
    try:
        import time

        now = time.time()
        store.create("1" * 32, _record(now, a=b"1"))
        assert store.count(now) == 1
    finally:
        store.close()
        delete_prefix(shared, prefix)


# Configuration ---------------------------------------------------------------------


def _app(**config: t.Any) -> Flask:
    return value_app(SECRET_KEY="x", SESSION_KEY_PREFIX=_prefix(), **config)


def test_unexpected_client_is_refused() -> None:
    """A SESSION_REDIS that is not a redis-py client is a ConfigError naming what is accepted."""
    with pytest.raises(ConfigError, match=r"SESSION_REDIS.*redis\.Redis.*RedisCluster"):
        _app(SESSION_TYPE="redis", SESSION_REDIS=object())


def test_asyncio_client_is_refused() -> None:
    """An asyncio client is refused instead of being silently replaced."""
    import redis.asyncio

    client = redis.asyncio.Redis()
    with pytest.raises(ConfigError, match="SESSION_REDIS"):
        _app(SESSION_TYPE="redis", SESSION_REDIS=client)


def test_decoding_client_is_refused() -> None:
    """A client with decode_responses=True cannot hold bytes and is refused."""
    client = redis.Redis(decode_responses=True, socket_timeout=1)
    with pytest.raises(ConfigError, match="decode_responses"):
        _app(SESSION_TYPE="redis", SESSION_REDIS=client)
    client.close()


def test_client_and_url_together_are_refused() -> None:
    """A client and a URL at once is ambiguous and refused."""
    client = redis.Redis(socket_timeout=1)
    with pytest.raises(ConfigError, match="either"):
        _app(SESSION_REDIS=client, SESSION_URL=URL)
    client.close()


def test_client_without_timeout_is_logged_about(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """A handed-over client that may wait past SESSION_STORE_TIMEOUT is accepted, with a log line, not a warning."""
    for timeout in (None, 5):
        caplog.clear()
        client = redis.Redis(db=DB, socket_timeout=timeout)
        with caplog.at_level(logging.WARNING, "flask_satchel"):
            _app(SESSION_TYPE="redis", SESSION_REDIS=client)  # the suite runs with warnings as errors
        assert any("longer than SESSION_STORE_TIMEOUT" in r.getMessage() for r in caplog.records)
        client.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/mymaster/x",
        "redis+sentinel://127.0.0.1:26379/a/1/2",
        "redis+sentinel://127.0.0.1/mymaster",
        "redis+cluster://127.0.0.1:7000/3",
        "redis+cluster://127.0.0.1:7000,:7001",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    """Malformed Sentinel and Cluster URLs are a ConfigError at startup."""
    with pytest.raises(ConfigError, match="SESSION_URL"):
        _app(SESSION_URL=url)


def test_created_clients_have_bounded_waits() -> None:
    """A client made from a URL times out after SESSION_STORE_TIMEOUT and retries only broken connections."""
    app = _app(SESSION_URL="redis://127.0.0.1:6379/13", SESSION_STORE_TIMEOUT=0.75)
    store = app.extensions["satchel"].store
    kwargs = store.client.get_connection_kwargs()
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.75
    assert kwargs["retry"].get_retries() == 1
    store.close()


def test_default_is_local_redis_db_0() -> None:
    """With neither client nor URL the store talks to redis://127.0.0.1:6379/0."""
    app = _app(SESSION_TYPE="redis")
    store = app.extensions["satchel"].store
    kwargs = store.client.get_connection_kwargs()
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6379, 0)
    store.close()


def test_flask_session_style_config_works(shared: redis.Redis, prefix: str) -> None:
    """SESSION_TYPE='redis' with SESSION_REDIS keeps data across requests, as with Flask-Session."""
    client = redis.Redis(db=DB, socket_timeout=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        app = Flask(__name__)
        app.config.update(SECRET_KEY="x", SESSION_TYPE="redis", SESSION_REDIS=client, SESSION_KEY_PREFIX=prefix)
        Session(app)

    @app.get("/add/<item>")
    def add(item: str) -> str:
        session.setdefault("cart", []).append(item)
        return ",".join(session["cart"])

    browser = app.test_client()
    browser.get("/add/apple")
    assert browser.get("/add/pear").text == "apple,pear"
    assert len(list(shared.scan_iter(match=prefix + "*"))) == 1
    client.close()
