"""Every session semantic of the contract for a server-side store: :class:`AppContract`."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import time
import typing as t

import msgspec
import pytest
from flask import Flask

from ...errors import NotSupported
from ...interface import SatchelSessionInterface
from ...manager import SessionManager
from ...serialization import MAX_DEPTH
from ...stores.base import Change, LockingStore
from ..app import session
from ..server import http_get, live_server
from .session import SessionContract

__all__ = ["AppContract"]


class AppContract(SessionContract):
    """Every session semantic of the contract for a server-side store."""

    #: False for stores that cannot list or count every session (Memcached):
    #: ``count()`` must then raise ``NotSupported``.
    lists_everything = True

    def test_overlapping_requests_keep_every_key(self, app: Flask) -> None:
        """32 overlapping requests of one session, each adding its own key, all survive."""
        with live_server(app) as address:
            _, _, cookie = http_get(address, "/set/start/1")
            assert cookie
            with concurrent.futures.ThreadPoolExecutor(32) as pool:
                statuses = list(pool.map(lambda i: http_get(address, f"/slow-add/{i}", cookie).status, range(32)))
            assert statuses == [200] * 32
            _, body, _ = http_get(address, "/dump", cookie)
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
            _, _, cookie = http_get(address, "/set/a/1")
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                slow = pool.submit(http_get, address, "/slow-add/7", cookie)
                time.sleep(0.2)
                status, _, _ = http_get(address, "/destroy", cookie)
                assert status == 200
                assert slow.result().status == 200
            _, body, _ = http_get(address, "/dump", cookie)
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
                _, _, cookie = http_get(address, "/set/n0/0")
                with concurrent.futures.ThreadPoolExecutor(32) as pool:
                    statuses = list(pool.map(lambda _: http_get(address, "/increment", cookie).status, range(32)))
                _, body, _ = http_get(address, "/get/n", cookie)
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
                _, _, cookie = http_get(address, "/set/a/1")
                assert cookie
                now[0] = start + 3500  # not due yet when the slow request loads
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    slow = pool.submit(http_get, address, "/slow-add/7", cookie)
                    time.sleep(0.3)
                    now[0] = start + 3601
                    _, _, renewed = http_get(address, "/get/a", cookie)  # this one rotates
                    assert renewed
                    assert renewed != cookie
                    assert slow.result().status == 200
                _, body, _ = http_get(address, "/dump", renewed)
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
