"""What every session store gives through a Flask app, the cookie store included: :class:`SessionContract`."""

from __future__ import annotations

import datetime as dt
import logging
import time
import typing as t
import uuid

import pytest
from flask import Flask, flash, get_flashed_messages
from markupsafe import Markup

from ...errors import SerializationError
from ...interface import SatchelSessionInterface
from ...manager import SessionManager
from ...stores.memory import MemoryStore
from ..app import make_app, session
from ..counting import CountingStore

if t.TYPE_CHECKING:
    from ...cookie import CookieSessionInterface

__all__ = ["SessionContract"]


class SessionContract:
    """What every session store gives, the cookie store included, checked through a Flask app."""

    @pytest.fixture
    def config(self) -> dict[str, t.Any]:
        raise NotImplementedError("provide a 'config' fixture selecting the store")

    @pytest.fixture
    def app(self, config: dict[str, t.Any], tmp_path: t.Any) -> t.Iterator[Flask]:
        app = self.make_app(config, tmp_path)
        yield app
        app.extensions["satchel"].close()

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
        """Count the store calls the app makes from now on (the cookie mode's: its revocation marks')."""
        interface = app.session_interface
        if isinstance(interface, SatchelSessionInterface):
            counting = CountingStore(interface.store)
            interface.store = counting
            return counting
        revocations = t.cast("CookieSessionInterface", interface).revocations
        counting = CountingStore(revocations.store or MemoryStore())
        revocations.store = counting
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

    def test_absolute_timeout(self, config: dict[str, t.Any], tmp_path: t.Any) -> None:
        """An active session still ends SESSION_ABSOLUTE_LIFETIME after it was created."""
        app = self.make_app({**config, "SESSION_ABSOLUTE_LIFETIME": 3600}, tmp_path / "absolute")
        app.permanent_session_lifetime = dt.timedelta(minutes=30)
        clock = [time.time()]
        t.cast(SatchelSessionInterface, app.session_interface).now = lambda: clock[0]
        client = app.test_client()
        client.get("/set/a/1")
        for _ in range(5):
            clock[0] += 10 * 60
            assert client.get("/set/b/2").status_code == 200
            assert client.get("/get/a").text == "'1'"
        clock[0] += 11 * 60
        assert client.get("/get/a").text == "None"
        app.extensions["satchel"].close()

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
