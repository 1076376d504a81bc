"""The store contract test-suite, for Flask-Satchel's stores and for yours.

Two classes of pytest tests. Subclass them in a test module and provide one
fixture each:

- :class:`StoreContract` checks a :class:`~flask_satchel.stores.base.Store`
  directly; provide ``store``, a fresh store with no records.
- :class:`AppContract` checks every session semantic of Flask-Satchel's
  contract through a real Flask app; provide ``config``, the app config that
  selects the store (it must start with no sessions). Its base,
  :class:`SessionContract`, holds what a client-side store gives too.

Run against the real server, never a mock of it::

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self):
            store = MyStore(...)
            yield store
            store.close()
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import http.client
import logging
import threading
import time
import typing as t
import uuid

import msgspec
import pytest
from flask import Flask, flash, get_flashed_messages
from flask import session as _session
from markupsafe import Markup
from werkzeug.serving import make_server

from . import Session
from .errors import NotSupported, SerializationError
from .interface import SatchelSessionInterface
from .manager import SessionManager
from .serialization import MAX_DEPTH
from .session import ServerSession
from .stores.base import Change, LockingStore, Record, Store

__all__ = ["AppContract", "CountingStore", "SessionContract", "StoreContract", "live_server", "make_app"]

HOUR = 3600.0

#: ``flask.session``, typed as what Flask-Satchel puts there.
session = t.cast(ServerSession, _session)


def _record(now: float, user: str | None = None, **data: bytes) -> Record:
    return Record(data=data, created_at=now, last_seen=now, expires_at=now + HOUR, user=user)


def _change(now: float, set: dict[str, bytes] | None = None, removed: list[str] | None = None, **kw: t.Any) -> Change:
    return Change(set=set or {}, removed=removed or [], last_seen=now, expires_at=now + HOUR, **kw)


def _key(n: int = 0) -> str:
    return uuid.uuid4().hex if n == 0 else f"{n:032x}"


class StoreContract:
    """What every store must do, checked against the store itself."""

    #: True for stores whose records expire by themselves (Redis, Memcached):
    #: their ``cleanup()`` returns 0 and records past ``expires_at`` may linger
    #: until the server drops them.
    native_ttl = False
    #: False for stores that cannot list or count every session (Memcached).
    lists_everything = True
    #: False for stores whose locks die with their holder (``flock``) rather than lapse.
    lock_leases = True
    #: The coarsest lease a store can keep, in seconds (memcached expires in whole seconds).
    lease_resolution = 0.0

    @pytest.fixture
    def store(self) -> t.Iterator[Store]:
        raise NotImplementedError("provide a 'store' fixture with a fresh, empty store")

    def test_implements_protocol(self, store: Store) -> None:
        """The store has every method of the Store protocol."""
        assert isinstance(store, Store)

    def test_missing_key_loads_none(self, store: Store) -> None:
        """A key that was never created loads as None."""
        assert store.load(_key()) is None

    def test_create_then_load(self, store: Store) -> None:
        """A created record loads back with its data and metadata."""
        now = time.time()
        key = _key()
        record = Record(
            data={"a": b"\x01", "b": b"\xa1x"},
            created_at=now - 10,
            last_seen=now,
            expires_at=now + HOUR,
            permanent=True,
            user="alice",
            client={"ip": "127.0.0.1", "user_agent": "test"},
        )
        store.create(key, record)
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.data == record.data
        assert loaded.created_at == pytest.approx(record.created_at, abs=1e-3)
        assert loaded.last_seen == pytest.approx(record.last_seen, abs=1e-3)
        assert loaded.expires_at == pytest.approx(record.expires_at, abs=1)
        assert loaded.permanent is True
        assert loaded.user == "alice"
        assert loaded.client == {"ip": "127.0.0.1", "user_agent": "test"}

    def test_apply_merges_with_current_record(self, store: Store) -> None:
        """A change sets and removes only its own keys; others are kept."""
        now = time.time()
        key = _key()
        store.create(key, _record(now, a=b"1", b=b"2", c=b"3"))
        assert store.apply(key, _change(now, set={"b": b"20", "d": b"4"}, removed=["c"])) == 3
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.data == {"a": b"1", "b": b"20", "d": b"4"}

    def test_apply_updates_metadata(self, store: Store) -> None:
        """A change moves last_seen/expires_at and sets permanent and the user."""
        now = time.time()
        key = _key()
        store.create(key, _record(now - 100, a=b"1"))
        store.apply(key, _change(now, set={"u": b"x"}, permanent=True, user_changed=True, user="bob"))
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.last_seen == pytest.approx(now, abs=1e-3)
        assert loaded.expires_at == pytest.approx(now + HOUR, abs=1)
        assert loaded.created_at == pytest.approx(now - 100, abs=1e-3)
        assert (loaded.permanent, loaded.user) == (True, "bob")

    def test_apply_updates_client_when_given(self, store: Store) -> None:
        """A change with client details replaces them; one without keeps them."""
        now = time.time()
        key = _key()
        store.create(
            key, Record(data={"a": b"1"}, created_at=now, last_seen=now, expires_at=now + HOUR, client={"ip": "1"})
        )
        store.apply(key, _change(now, set={"a": b"2"}))
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.client == {"ip": "1"}
        store.apply(key, _change(now, client={"ip": "2", "user_agent": "b"}))
        loaded = store.load(key)
        assert loaded is not None
        assert (loaded.client, loaded.data) == ({"ip": "2", "user_agent": "b"}, {"a": b"2"})

    def test_apply_keeps_user_unless_changed(self, store: Store) -> None:
        """A change that does not touch the user keeps the record's user."""
        now = time.time()
        key = _key()
        store.create(key, _record(now, user="carol", a=b"1"))
        store.apply(key, _change(now, set={"a": b"2"}))
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.user == "carol"
        store.apply(key, _change(now, set={"a": b"3"}, user_changed=True, user=None))
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.user is None

    def test_apply_to_missing_record_writes_nothing(self, store: Store) -> None:
        """A change to a record that is gone returns None and never resurrects it."""
        now = time.time()
        key = _key()
        store.create(key, _record(now, a=b"1"))
        assert store.delete(key) is True
        assert store.apply(key, _change(now, set={"a": b"2"})) is None
        assert store.load(key) is None

    def test_apply_that_empties_deletes(self, store: Store) -> None:
        """A change that leaves no key deletes the record and returns 0."""
        now = time.time()
        key = _key()
        store.create(key, _record(now, a=b"1"))
        assert store.apply(key, _change(now, removed=["a"])) == 0
        assert store.load(key) is None

    def test_touch(self, store: Store) -> None:
        """touch moves the expiry without changing data; False when the record is gone."""
        now = time.time()
        key = _key()
        store.create(key, _record(now - 50, a=b"1"))
        assert store.touch(key, now, now + 2 * HOUR) is True
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.data == {"a": b"1"}
        assert loaded.last_seen == pytest.approx(now, abs=1e-3)
        assert loaded.expires_at == pytest.approx(now + 2 * HOUR, abs=1)
        assert store.touch(_key(), now, now + HOUR) is False

    def test_delete(self, store: Store) -> None:
        """delete removes a record once; a second delete reports nothing there."""
        now = time.time()
        key = _key()
        store.create(key, _record(now, a=b"1"))
        assert store.delete(key) is True
        assert store.load(key) is None
        assert store.delete(key) is False

    def test_sessions_of_user(self, store: Store) -> None:
        """sessions(user=…) lists exactly that user's live records, following user changes."""
        now = time.time()
        keys = [_key() for _ in range(4)]
        store.create(keys[0], _record(now, user="dave", a=b"1"))
        store.create(keys[1], _record(now, user="dave", a=b"1"))
        store.create(keys[2], _record(now, user="erin", a=b"1"))
        store.create(keys[3], _record(now, a=b"1"))
        assert sorted(k for k, _ in store.sessions(now, "dave")) == sorted(keys[:2])
        store.apply(keys[3], _change(now, set={"u": b"1"}, user_changed=True, user="dave"))
        store.apply(keys[0], _change(now, set={"u": b"1"}, user_changed=True, user="erin"))
        store.delete(keys[1])
        assert [k for k, _ in store.sessions(now, "dave")] == [keys[3]]
        assert sorted(k for k, _ in store.sessions(now, "erin")) == sorted([keys[0], keys[2]])
        assert all(r.user == "erin" for _, r in store.sessions(now, "erin"))
        assert store.sessions(now, "nobody") == []

    def test_sessions_leave_out_expired(self, store: Store) -> None:
        """Records past expires_at are not listed or counted."""
        now = time.time()
        live, old = _key(), _key()
        store.create(live, Record(data={"a": b"1"}, created_at=now, last_seen=now, expires_at=now + 2 * HOUR, user="f"))
        store.create(old, _record(now, user="f", a=b"1"))
        later = now + 1.5 * HOUR
        assert [k for k, _ in store.sessions(later, "f")] == [live]
        if self.lists_everything:
            assert [k for k, _ in store.sessions(later)] == [live]
            assert store.count(later) == 1

    def test_cleanup_and_count(self, store: Store) -> None:
        """cleanup removes expired records only; count counts live ones (or says it cannot)."""
        now = time.time()
        if not self.lists_everything:
            with pytest.raises(NotSupported):
                store.count(now)
            with pytest.raises(NotSupported):
                store.sessions(now)
            assert store.cleanup(now) == 0
            return
        for _ in range(3):
            store.create(_key(), _record(now, a=b"1"))
        for _ in range(2):
            store.create(_key(), Record(data={"a": b"1"}, created_at=now, last_seen=now, expires_at=now + 3 * HOUR))
        assert store.count(now) == 5
        later = now + 2 * HOUR
        removed = store.cleanup(later)
        assert removed == (0 if self.native_ttl else 3)
        assert store.count(later) == 2
        assert len(store.sessions(later)) == 2

    def test_lock_is_exclusive(self, store: Store) -> None:
        """A session lock has one holder; a wrong token cannot release it; released, it can be taken again."""
        if not isinstance(store, LockingStore):
            pytest.skip(f"{type(store).__name__} does not lock sessions")
        key = _key()
        assert store.lock(key, "a", 30) is True
        assert store.lock(key, "b", 30) is False
        assert store.unlock(key, "b") is False
        assert store.lock(_key(), "b", 30) is True  # other sessions are not blocked
        assert store.unlock(key, "a") is True
        assert store.lock(key, "b", 30) is True
        assert store.unlock(key, "b") is True

    def test_lapsed_lock_can_be_taken(self, store: Store) -> None:
        """A lock whose holder never released it lapses after its lease, or dies with it (no deadlock after a crash)."""
        if not isinstance(store, LockingStore):
            pytest.skip(f"{type(store).__name__} does not lock sessions")
        key = _key()
        if not self.lock_leases:
            assert store.lock(key, "crashed", 0.2) is True
            store.close()  # what the holder's process exiting does to its locks
            assert store.lock(key, "next", 30) is True
            assert store.unlock(key, "next") is True
            return
        lease = 0.2 + self.lease_resolution
        assert store.lock(key, "crashed", lease) is True
        time.sleep(lease + self.lease_resolution + 0.1)
        assert store.lock(key, "next", 30) is True
        assert store.unlock(key, "crashed") is False
        assert store.unlock(key, "next") is True

    def test_late_change_never_shortens_the_session(self, store: Store) -> None:
        """A change from a request that read the record before another one refreshed it keeps the newer expiry."""
        now = time.time()
        key = _key()
        store.create(key, _record(now - 100, a=b"1"))
        assert store.load(key) is not None  # this request's read, before the refresh below
        assert store.touch(key, now, now + 1200)  # another request refreshed the session
        late = Change(set={"b": b"2"}, last_seen=now - 100, expires_at=now + 3500)
        assert store.apply(key, late) == 2
        loaded = store.load(key)
        assert loaded is not None
        assert (loaded.last_seen, loaded.expires_at) == (now, now + 1200)
        assert loaded.data == {"a": b"1", "b": b"2"}

    def test_concurrent_changes_all_survive(self, store: Store) -> None:
        """32 overlapping changes to different keys of one record are all kept."""
        now = time.time()
        key = _key()
        store.create(key, _record(now, base=b"0"))
        barrier = threading.Barrier(32)

        def work(i: int) -> int | None:
            barrier.wait()
            return store.apply(key, _change(now, set={f"k{i}": str(i).encode()}))

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            results = list(pool.map(work, range(32)))
        assert None not in results
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.data == {"base": b"0", **{f"k{i}": str(i).encode() for i in range(32)}}


# App-level contract --------------------------------------------------------


class CountingStore:
    """Wraps a store and records each call, to check how much I/O a request does."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> t.Any:
        method = getattr(self.inner, name)

        def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return call

    def writes(self) -> list[str]:
        return [c for c in self.calls if c not in ("load", "sessions", "count")]


@contextlib.contextmanager
def live_server(app: Flask) -> t.Iterator[tuple[str, int]]:
    """Serve ``app`` on a free loopback port with a real threaded WSGI server."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", server.port)
    finally:
        server.shutdown()
        thread.join(5)


def _get(address: tuple[str, int], path: str, cookie: str | None = None) -> tuple[int, str, str | None]:
    """GET over a real socket; returns status, body and the session cookie value it set, if any."""
    conn = http.client.HTTPConnection(*address, timeout=30)
    try:
        conn.request("GET", path, headers={"Cookie": f"session={cookie}"} if cookie else {})
        response = conn.getresponse()
        body = response.read().decode()
        set_cookie = response.getheader("Set-Cookie")
        value = None
        if set_cookie and set_cookie.startswith("session="):
            value = set_cookie.split(";", 1)[0].partition("=")[2]
        return response.status, body, value
    finally:
        conn.close()


def make_app(config: t.Mapping[str, t.Any], instance_path: t.Any) -> Flask:
    """An app on the configured store with the small set of views the contract suites drive.

    ``/set/<key>/<value>``, ``/get/<key>``, ``/dump``, ``/login/<user>`` (sets
    ``_user_id`` and regenerates), ``/handle``, ``/destroy``, ``/regenerate``,
    ``/plain`` (never touches the session), ``/slow-add/<i>`` and
    ``/increment`` (read, pause ``TEST_PAUSE`` seconds, write).
    """
    app = Flask("satchel_contract", instance_path=str(instance_path))
    app.config.update({"SECRET_KEY": "contract-test-secret", **config})
    app.config.setdefault("SESSION_KEY_PREFIX", f"contract-{uuid.uuid4().hex[:8]}:")
    Session(app)

    @app.get("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        session[key] = value
        return "ok"

    @app.get("/get/<key>")
    def get_value(key: str) -> str:
        return repr(session.get(key))

    @app.get("/dump")
    def dump() -> str:
        return repr(sorted(session.items()))

    @app.get("/plain")
    def plain() -> str:
        return "no session here"

    @app.get("/slow-add/<int:i>")
    def slow_add(i: int) -> str:
        session.get("_")  # load first, so the requests overlap between read and write
        time.sleep(float(app.config.get("TEST_PAUSE", 0.2)))
        session[f"k{i}"] = i
        return "ok"

    @app.get("/destroy")
    def destroy() -> str:
        session.destroy()
        return "gone"

    @app.get("/regenerate")
    def regenerate() -> str:
        session.regenerate()
        return session.handle

    @app.get("/login/<user>")
    def login(user: str) -> str:
        session["_user_id"] = user
        session.regenerate()
        return session.handle

    @app.get("/handle")
    def handle() -> str:
        return session.handle

    @app.get("/increment")
    def increment() -> str:
        n = session.get("n", 0)
        time.sleep(float(app.config.get("TEST_PAUSE", 0.02)))
        session["n"] = n + 1
        return "ok"

    return app


class SessionContract:
    """What every session store gives, the cookie store included, checked through a Flask app."""

    @pytest.fixture
    def config(self) -> dict[str, t.Any]:
        raise NotImplementedError("provide a 'config' fixture selecting the store")

    @pytest.fixture
    def app(self, config: dict[str, t.Any], tmp_path: t.Any) -> t.Iterator[Flask]:
        app = self.make_app(config, tmp_path)
        yield app
        app.extensions["satchel"].store.close()

    def make_app(self, config: dict[str, t.Any], tmp_path: t.Any) -> Flask:
        """An app on the store under test (see :func:`make_app`)."""
        return make_app(config, tmp_path / "instance")

    @pytest.fixture
    def manager(self, app: Flask) -> SessionManager:
        return t.cast(SessionManager, app.extensions["satchel"])

    @pytest.fixture
    def clock(self, app: Flask) -> list[float]:
        """A frozen clock for the interface; tests move it forward instead of sleeping."""
        now = [time.time()]
        interface = t.cast(SatchelSessionInterface, app.session_interface)
        interface.now = lambda: now[0]
        return now

    def _counting(self, app: Flask) -> CountingStore:
        interface = t.cast(SatchelSessionInterface, app.session_interface)
        counting = CountingStore(interface.store)
        interface.store = counting
        return counting

    # 1. Typed round trip -----------------------------------------------------

    def test_types_round_trip(self, app: Flask) -> None:
        """Every type Flask's cookie session accepts comes back as the same type, flashes included."""
        values: dict[str, t.Any] = {
            "dict": {"a": [1, 2], " t": "not a tag"},
            "list": [1, "two", 3.0, None, True],
            "str": "héllo",
            "int": 2**62,
            "float": 1.5,
            "bool": False,
            "none": None,
            "tuple": (1, ("nested", b"x"), [2]),
            "bytes": b"\x00\xff",
            "markup": Markup("<b>bold</b>"),
            "uuid": uuid.uuid4(),
            "aware": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "naive": dt.datetime(2026, 1, 2, 3, 4, 5),
        }

        @app.get("/store-types")
        def store_types() -> str:
            session.update(values)
            flash("saved", "info")
            return "ok"

        @app.get("/check-types")
        def check_types() -> str:
            for key, value in values.items():
                assert session[key] == value, key
                assert type(session[key]) is type(value), key
            assert type(session["tuple"][1]) is tuple
            assert session["aware"].utcoffset() == dt.timedelta(hours=2)
            assert get_flashed_messages(with_categories=True) == [("info", "saved")]
            return "checked"

        client = app.test_client()
        client.get("/store-types")
        assert client.get("/check-types").text == "checked"

    def test_big_ints_round_trip(self, app: Flask) -> None:
        """Ints beyond 64 bits come back exact, as in Flask's cookie session: alone, in a list, a tuple, as a key."""
        values = {"big": 2**70, "negative": -(2**100), "nested": [2**70, (-(2**100), {2**65: "k"})]}

        @app.get("/store-big")
        def store_big() -> str:
            session.update(values)
            return "ok"

        @app.get("/read-big")
        def read_big() -> str:
            return repr({key: session[key] for key in values})

        client = app.test_client()
        client.get("/store-big")
        assert client.get("/read-big").text == repr(values)

    def test_unstorable_value_names_its_key(self, app: Flask) -> None:
        """Storing a set raises SerializationError naming the key and the type; the stored session stays as it was."""
        app.testing = True

        @app.get("/store-set")
        def store_set() -> str:
            session["cart"] = {"apple"}
            return "ok"

        client = app.test_client()
        with pytest.raises(SerializationError, match=r"session key 'cart'.* type set "):
            client.get("/store-set")  # a new session
        client.get("/set/a/1")
        with pytest.raises(SerializationError, match=r"session key 'cart'.* type set "):
            client.get("/store-set")  # a stored one
        assert client.get("/dump").text == "[('a', '1')]"

    def test_new_session_is_empty(self, app: Flask) -> None:
        """A new session has no keys, even when it is permanent."""
        app.config["SESSION_PERMANENT"] = True

        @app.get("/fresh")
        def fresh() -> str:
            return f"{len(session)} {session.new}"

        assert app.test_client().get("/fresh").text == "0 True"

    def test_nested_mutation_is_saved(self, app: Flask) -> None:
        """Changing a nested list in place is saved without session.modified."""

        @app.get("/cart/<item>")
        def cart(item: str) -> str:
            session.setdefault("cart", {"items": []})["items"].append(item)
            return "ok"

        @app.get("/cart-plain/<item>")
        def cart_plain(item: str) -> str:
            session["cart"]["items"].append(item)
            return "ok"

        client = app.test_client()
        client.get("/cart/apple")
        client.get("/cart-plain/pear")
        assert client.get("/get/cart").text == repr({"items": ["apple", "pear"]})

    def test_destroy_deletes_cookie(self, app: Flask) -> None:
        """destroy() expires the cookie and leaves an empty session."""
        client = app.test_client()
        client.get("/set/a/1")
        response = client.get("/destroy")
        assert any("session=;" in h and "Expires=Thu, 01 Jan 1970" in h for h in response.headers.getlist("Set-Cookie"))
        assert client.get("/dump").text == "[]"

    def test_values_after_destroy_start_a_new_session(self, app: Flask) -> None:
        """Setting a value after destroy() creates a session with a fresh id."""

        @app.get("/destroy-then-set")
        def destroy_then_set() -> str:
            session.destroy()
            session["after"] = "yes"
            return "ok"

        client = app.test_client()
        client.get("/set/a/1")
        old = client.get_cookie("session")
        assert old is not None
        client.get("/destroy-then-set")
        new = client.get_cookie("session")
        assert new is not None
        assert new.value != old.value
        assert client.get("/dump").text == "[('after', 'yes')]"

    # 4. Strict ids ------------------------------------------------------------

    def test_unknown_sid_is_not_adopted(self, app: Flask) -> None:
        """A well-formed id the store does not hold gets a new id, never the planted one."""
        planted = "A" * 43
        client = app.test_client()
        client.set_cookie("session", planted)
        client.get("/set/a/1")
        cookie = client.get_cookie("session")
        assert cookie is not None
        assert cookie.value != planted
        client.set_cookie("session", planted)
        assert client.get("/get/a").text == "None"

    def test_handle_is_not_a_cookie(self, app: Flask) -> None:
        """A session's public handle does not work as a session cookie."""
        client = app.test_client()
        client.get("/set/a/1")
        handle = client.get("/handle").text
        other = app.test_client()
        other.set_cookie("session", handle)
        assert other.get("/get/a").text == "None"

    # 5. Expiry ----------------------------------------------------------------

    def test_idle_timeout(self, app: Flask, clock: list[float]) -> None:
        """A session idle for longer than PERMANENT_SESSION_LIFETIME is gone."""
        app.permanent_session_lifetime = dt.timedelta(minutes=30)
        client = app.test_client()
        client.get("/set/a/1")
        clock[0] += 20 * 60
        assert client.get("/get/a").text == "'1'"  # and this refreshes it
        clock[0] += 20 * 60
        assert client.get("/get/a").text == "'1'"
        clock[0] += 31 * 60
        assert client.get("/get/a").text == "None"

    def test_absolute_timeout(self, app: Flask, clock: list[float]) -> None:
        """An active session still ends SESSION_ABSOLUTE_LIFETIME after it was created."""
        app.permanent_session_lifetime = dt.timedelta(minutes=30)
        interface = t.cast(SatchelSessionInterface, app.session_interface)
        interface.settings = dataclasses.replace(interface.settings, absolute_lifetime=3600.0)
        client = app.test_client()
        client.get("/set/a/1")
        for _ in range(5):
            clock[0] += 10 * 60
            assert client.get("/set/b/2").status_code == 200
            assert client.get("/get/a").text == "'1'"
        clock[0] += 11 * 60
        assert client.get("/get/a").text == "None"

    # 6. Cheap requests ----------------------------------------------------------

    def test_untouched_request_does_no_io(self, app: Flask) -> None:
        """A request that never touches session does no store I/O and sends no cookie or Vary."""
        client = app.test_client()
        client.get("/set/a/1")
        counting = self._counting(app)
        response = client.get("/plain")
        assert counting.calls == []
        assert "Set-Cookie" not in response.headers
        assert "Vary" not in response.headers

    # 8. Bad input ----------------------------------------------------------------

    @pytest.mark.parametrize(
        "cookie",
        ["garbage", "A" * 42 + "!", "A" * 4000, "", "Zm9v.YmFy.YmF6", "%ff%fe", "A" * 42 + "é"],
    )
    def test_bad_cookie_is_empty_session(self, app: Flask, cookie: str, caplog: pytest.LogCaptureFixture) -> None:
        """Tampered, truncated, oversized and non-UTF-8 cookies are an empty session, never an error."""
        client = app.test_client()
        client.set_cookie("session", cookie)
        with caplog.at_level(logging.WARNING, "flask_satchel.security"):
            response = client.get("/dump")
        assert response.status_code == 200
        assert response.text == "[]"
        if cookie:
            assert any(r.name == "flask_satchel.security" for r in caplog.records)


class AppContract(SessionContract):
    """Every session semantic of the contract for a server-side store."""

    #: False for stores that cannot list or count every session (Memcached):
    #: ``count()`` must then raise ``NotSupported``.
    lists_everything = True

    def test_overlapping_requests_keep_every_key(self, app: Flask) -> None:
        """32 overlapping requests of one session, each adding its own key, all survive."""
        with live_server(app) as address:
            _, _, cookie = _get(address, "/set/start/1")
            assert cookie
            with concurrent.futures.ThreadPoolExecutor(32) as pool:
                statuses = list(pool.map(lambda i: _get(address, f"/slow-add/{i}", cookie)[0], range(32)))
            assert statuses == [200] * 32
            _, body, _ = _get(address, "/dump", cookie)
        expected = sorted([("start", "1"), *((f"k{i}", i) for i in range(32))])
        assert body == repr(expected)

    def test_only_changed_keys_are_written(self, app: Flask) -> None:
        """A request that changes one key sends only that key to the store."""
        client = app.test_client()
        client.get("/set/a/1")
        client.get("/set/b/2")
        interface = t.cast(SatchelSessionInterface, app.session_interface)
        applied: list[Change] = []
        real = interface.store.apply

        def spy(key: str, change: Change) -> int | None:
            applied.append(change)
            return real(key, change)

        interface.store.apply = spy  # type: ignore[method-assign]
        client.get("/set/b/3")
        assert [(c.set, c.removed) for c in applied] == [({"b": applied[0].set["b"]}, [])]

    def test_slow_write_after_destroy_stays_dead(self, app: Flask, manager: SessionManager) -> None:
        """A request that started before destroy() cannot bring the session back."""
        app.config["TEST_PAUSE"] = 0.5
        with live_server(app) as address:
            _, _, cookie = _get(address, "/set/a/1")
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                slow = pool.submit(_get, address, "/slow-add/7", cookie)
                time.sleep(0.2)
                status, _, _ = _get(address, "/destroy", cookie)
                assert status == 200
                assert slow.result()[0] == 200
            _, body, _ = _get(address, "/dump", cookie)
        assert body == "[]"
        if self.lists_everything:
            assert manager.sessions() == []

    def test_regenerate_kills_old_sid(self, app: Flask) -> None:
        """regenerate() keeps the data under a new id; the old id is dead at once."""
        client = app.test_client()
        client.get("/set/a/1")
        old = client.get_cookie("session")
        assert old is not None
        response = client.get("/regenerate")
        new = client.get_cookie("session")
        assert new is not None
        assert new.value != old.value
        assert response.headers.getlist("Set-Cookie")
        assert client.get("/get/a").text == "'1'"
        client.set_cookie("session", old.value)
        assert client.get("/get/a").text == "None"

    def test_store_is_keyed_by_a_hash(self, app: Flask, manager: SessionManager) -> None:
        """The store never sees the sid: records are listed under the handle, which differs."""
        client = app.test_client()
        client.get("/login/zoe")
        cookie = client.get_cookie("session")
        assert cookie is not None
        handles = [info.handle for info in manager.sessions_of("zoe")]
        assert handles == [client.get("/handle").text]
        assert cookie.value not in handles

    def test_crafted_values_read_as_missing(self, app: Flask, caplog: pytest.LogCaptureFixture) -> None:
        """Stored values crafted to overflow or to nest too deep read as missing, with a warning, never a 500."""
        client = app.test_client()
        client.get("/set/a/1")
        handle = client.get("/handle").text
        store = app.extensions["satchel"].store
        record = store.load(handle)
        assert record is not None
        crafted = {
            # The timedelta extension (code 7) of 10**12 days: past what datetime can hold.
            "overflow": msgspec.msgpack.encode(msgspec.msgpack.Ext(7, msgspec.msgpack.encode([10**12, 0, 0]))),
            "deep": b"\x91" * 100_000 + b"\x01",  # 100,000 nested one-item arrays
            "too-deep": b"\x91" * (MAX_DEPTH + 1) + b"\x01",  # decodable, but past the limit
        }
        store.apply(
            handle,
            Change(set=crafted, last_seen=record.last_seen, expires_at=record.expires_at, permanent=record.permanent),
        )
        with caplog.at_level(logging.WARNING, "flask_satchel.security"):
            response = client.get("/dump")
        assert (response.status_code, response.text) == (200, "[('a', '1')]")
        warned = " ".join(r.getMessage() for r in caplog.records if r.name == "flask_satchel.security")
        assert all(f"session key {key!r}" in warned for key in crafted)

    def test_read_only_request_reads_once(self, app: Flask, clock: list[float]) -> None:
        """A read-only request inside the refresh interval is one load, no write, no cookie."""
        client = app.test_client()
        client.get("/set/a/1")
        counting = self._counting(app)
        clock[0] += 1
        response = client.get("/get/a")
        assert counting.calls == ["load"]
        assert "Set-Cookie" not in response.headers
        assert response.headers["Vary"] == "Cookie"

    def test_refresh_after_interval_is_a_touch(self, app: Flask, clock: list[float]) -> None:
        """Past the refresh interval a read-only request touches the expiry and re-sends a permanent cookie."""

        @app.get("/permanent")
        def permanent() -> str:
            session.permanent = True
            session["p"] = 1
            return "ok"

        client = app.test_client()
        first = client.get("/permanent").headers["Set-Cookie"]
        assert "Expires=" in first
        counting = self._counting(app)
        clock[0] += 3600
        response = client.get("/get/p")
        assert counting.calls == ["load", "touch"]
        assert "Expires=" in response.headers["Set-Cookie"]

    def test_locking_serialises_same_key_writes(self, app: Flask, config: dict[str, t.Any], tmp_path: t.Any) -> None:
        """With SESSION_LOCKING, 32 concurrent read-modify-write requests of one key end at exactly 32."""
        if not isinstance(app.extensions["satchel"].store, LockingStore):
            pytest.skip("this store does not lock sessions")
        app = self.make_app({**config, "SESSION_LOCKING": True, "SESSION_LOCK_TIMEOUT": 30}, tmp_path / "locking")
        try:
            with live_server(app) as address:
                _, _, cookie = _get(address, "/set/n0/0")
                with concurrent.futures.ThreadPoolExecutor(32) as pool:
                    statuses = list(pool.map(lambda _: _get(address, "/increment", cookie)[0], range(32)))
                _, body, _ = _get(address, "/get/n", cookie)
            assert statuses == [200] * 32
            assert body == "32"
        finally:
            app.extensions["satchel"].store.close()

    def test_lock_timeout_is_a_clear_503(self, app: Flask, config: dict[str, t.Any], tmp_path: t.Any) -> None:
        """A session locked past SESSION_LOCK_TIMEOUT answers 503 with Retry-After, then recovers."""
        if not isinstance(app.extensions["satchel"].store, LockingStore):
            pytest.skip("this store does not lock sessions")
        app = self.make_app({**config, "SESSION_LOCKING": True, "SESSION_LOCK_TIMEOUT": 0.3}, tmp_path / "locking")
        try:
            client = app.test_client()
            handle = client.get("/login/lou").text
            store = t.cast(LockingStore, app.extensions["satchel"].store)
            assert store.lock(handle, "someone-else", 30)
            started = time.monotonic()
            response = client.get("/get/_user_id")
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "1"
            assert "busy with another request" in response.text
            assert time.monotonic() - started < 2
            assert store.unlock(handle, "someone-else")
            assert client.get("/get/_user_id").text == "'lou'"
        finally:
            app.extensions["satchel"].store.close()

    def test_rotation_honours_old_sid_for_grace(self, config: dict[str, t.Any], tmp_path: t.Any) -> None:
        """SESSION_ROTATE_INTERVAL renews the sid; the old one works for the grace window, then is dead."""
        app = self.make_app(
            {**config, "SESSION_ROTATE_INTERVAL": 3600, "SESSION_ROTATION_GRACE": 5}, tmp_path / "rotation"
        )
        now = [time.time()]
        t.cast(SatchelSessionInterface, app.session_interface).now = lambda: now[0]
        try:
            client = app.test_client()
            client.get("/login/rae")
            old = client.get_cookie("session")
            assert old is not None
            now[0] += 3601
            response = client.get("/get/_user_id")
            assert response.text == "'rae'"
            new = client.get_cookie("session")
            assert new is not None
            assert new.value != old.value
            assert "Set-Cookie" in response.headers
            stale = app.test_client()
            stale.set_cookie("session", old.value)
            now[0] += 2
            assert stale.get("/get/_user_id").text == "'rae'"  # a request of the same page, sent with the old sid
            stale.get("/set/from-old/1")
            assert client.get("/get/from-old").text == "'1'"  # written to the renewed session
            now[0] += 10
            assert stale.get("/get/_user_id").text == "None"
            assert client.get("/get/_user_id").text == "'rae'"
        finally:
            app.extensions["satchel"].store.close()

    def test_rotation_keeps_writes_of_requests_in_flight(self, config: dict[str, t.Any], tmp_path: t.Any) -> None:
        """A request that loaded the session before its sid rotated still has its change kept."""
        app = self.make_app(
            {**config, "SESSION_ROTATE_INTERVAL": 3600, "SESSION_ROTATION_GRACE": 30, "TEST_PAUSE": 0.6},
            tmp_path / "rotation",
        )
        start = time.time()
        now = [start]
        t.cast(SatchelSessionInterface, app.session_interface).now = lambda: now[0]
        try:
            with live_server(app) as address:
                _, _, cookie = _get(address, "/set/a/1")
                assert cookie
                now[0] = start + 3500  # not due yet when the slow request loads
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    slow = pool.submit(_get, address, "/slow-add/7", cookie)
                    time.sleep(0.3)
                    now[0] = start + 3601
                    _, _, renewed = _get(address, "/get/a", cookie)  # this one rotates
                    assert renewed
                    assert renewed != cookie
                    assert slow.result()[0] == 200
                _, body, _ = _get(address, "/dump", renewed)
            assert body == repr([("a", "1"), ("k7", 7)])
        finally:
            app.extensions["satchel"].store.close()

    def test_sessions_of_and_revoke_user(self, app: Flask, manager: SessionManager) -> None:
        """sessions_of lists a user's sessions; revoke_user(keep=…) logs out the others."""
        phones = [app.test_client() for _ in range(3)]
        handles = [c.get("/login/yan").text for c in phones]
        app.test_client().get("/login/someone-else")
        infos = manager.sessions_of("yan")
        assert sorted(i.handle for i in infos) == sorted(handles)
        assert all(i.user == "yan" and i.expires_at > i.created_at for i in infos)
        assert manager.revoke_user("yan", keep=handles[0]) == 2
        assert [c.get("/get/_user_id").text for c in phones] == ["'yan'", "None", "None"]
        assert [i.handle for i in manager.sessions_of("yan")] == [handles[0]]
        assert manager.revoke(handles[0]) is True
        assert manager.revoke(handles[0]) is False
        assert phones[0].get("/get/_user_id").text == "None"
        assert manager.revoke("not-a-handle") is False

    def test_logout_moves_session_out_of_user_index(self, app: Flask, manager: SessionManager) -> None:
        """Removing the user key takes the session off the user's list."""

        @app.get("/logout-keep")
        def logout_keep() -> str:
            session.pop("_user_id")
            session["theme"] = "dark"
            return "ok"

        client = app.test_client()
        client.get("/login/xia")
        assert len(manager.sessions_of("xia")) == 1
        client.get("/logout-keep")
        assert manager.sessions_of("xia") == []

    def test_count_and_cleanup(self, app: Flask, manager: SessionManager, clock: list[float]) -> None:
        """count() sees live sessions; cleanup() after expiry leaves none counted."""
        app.permanent_session_lifetime = dt.timedelta(minutes=5)
        for i in range(3):
            app.test_client().get(f"/set/n/{i}")
        if not self.lists_everything:
            with pytest.raises(NotSupported):
                manager.count()
            return
        assert manager.count() == 3
        clock[0] += 6 * 60
        manager.cleanup()
        assert manager.count() == 0
