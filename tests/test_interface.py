"""Interface behaviour beyond the store contract: signing, cookies, the 503 path, periodic cleanup."""

from __future__ import annotations

import copy
import datetime as dt
import fcntl
import os
import sqlite3
import string
import time
import typing as t

import pytest
from conftest import value_app
from flask import Flask, Request
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup
from werkzeug.test import EnvironBuilder

from flask_satchel import Session
from flask_satchel import current_session as session
from flask_satchel.cookies import cookie_value


def make_app(tmp_path: t.Any, **config: t.Any) -> Flask:
    return value_app(tmp_path, SECRET_KEY="one", **config)


def test_signed_ids_and_key_rotation(tmp_path: t.Any) -> None:
    """With SESSION_USE_SIGNER the cookie is signed; a fallback key still verifies, an unsigned id does not."""
    app = make_app(tmp_path, SESSION_TYPE="memory", SESSION_USE_SIGNER=True)
    client = app.test_client()
    client.get("/set/x")
    cookie = client.get_cookie("session")
    assert cookie is not None
    sid, _, signature = cookie.value.rpartition(".")
    assert len(sid) == 43
    assert signature
    app.secret_key = "two"
    app.config["SECRET_KEY_FALLBACKS"] = ["one"]
    assert client.get("/get").text == "'x'"
    app.config["SECRET_KEY_FALLBACKS"] = []
    assert client.get("/get").text == "None"
    client.set_cookie("session", sid)
    assert client.get("/get").text == "None"


def test_cookie_attributes_follow_flask_config_per_request(tmp_path: t.Any) -> None:
    """Cookie name and attributes are Flask's keys, read on each request; SameSite defaults to Lax."""
    app = make_app(tmp_path, SESSION_TYPE="memory")
    client = app.test_client()
    assert "SameSite=Lax" in client.get("/set/a").headers["Set-Cookie"]
    app.config.update(
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_DOMAIN="example.test",
    )
    header = app.test_client().get("/set/a").headers["Set-Cookie"]
    assert header.startswith("sid=")
    for part in ("SameSite=Strict", "Secure", "Path=/app", "Domain=example.test", "HttpOnly"):
        assert part in header


def test_permanent_cookie_expiry_is_capped_by_absolute_lifetime(tmp_path: t.Any) -> None:
    """A permanent session's cookie expires at the earlier of the idle and absolute timeouts."""
    app = make_app(tmp_path, SESSION_TYPE="memory", SESSION_PERMANENT=True, SESSION_ABSOLUTE_LIFETIME=3600)
    app.permanent_session_lifetime = dt.timedelta(days=7)
    response = app.test_client().get("/set/a")
    cookie = response.headers["Set-Cookie"]
    expires = dt.datetime.strptime(cookie.split("Expires=")[1].split(";")[0], "%a, %d %b %Y %H:%M:%S GMT")
    assert abs(expires.replace(tzinfo=dt.timezone.utc).timestamp() - (time.time() + 3600)) < 5


def test_locked_sqlite_store_is_503_then_recovers(tmp_path: t.Any) -> None:
    """A store that cannot answer in SESSION_STORE_TIMEOUT is a 503 with Retry-After; service resumes after."""
    app = make_app(tmp_path, SESSION_STORE_TIMEOUT=0.3)
    client = app.test_client()
    client.get("/set/before")
    blocker = sqlite3.connect(os.path.join(str(tmp_path), "flask_satchel.sqlite3"), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        response = client.get("/set/during")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert "session store is unavailable" in response.text
        assert time.monotonic() - started < 2
    finally:
        blocker.rollback()
        blocker.close()
    assert client.get("/get").text == "'before'"
    assert client.get("/set/after").status_code == 200
    assert client.get("/get").text == "'after'"


def test_locked_file_is_503_when_saving(tmp_path: t.Any) -> None:
    """A session file locked past the timeout during save gives a 503, and the data is intact afterwards."""
    app = make_app(tmp_path, SESSION_TYPE="filesystem", SESSION_STORE_TIMEOUT=0.3)
    client = app.test_client()
    handle = None

    @app.get("/handle")
    def get_handle() -> str:
        return session.handle

    client.get("/set/before")
    handle = client.get("/handle").text
    path = os.path.join(str(tmp_path), "flask_satchel_sessions", handle[:2], handle)
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        response = client.get("/set/during")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
    finally:
        os.close(fd)
    assert client.get("/get").text == "'before'"


def test_periodic_cleanup(tmp_path: t.Any) -> None:
    """SESSION_CLEANUP_N_REQUESTS runs cleanup every N saved requests."""
    app = make_app(tmp_path, SESSION_TYPE="memory", SESSION_CLEANUP_N_REQUESTS=3)
    app.permanent_session_lifetime = dt.timedelta(seconds=60)
    interface = app.session_interface
    now = [time.time()]
    interface.now = lambda: now[0]  # type: ignore[attr-defined]
    app.test_client().get("/set/old")
    now[0] += 120
    store = app.extensions["satchel"].store
    assert len(store._records) == 1
    client = app.test_client()
    client.get("/set/a")
    client.get("/get")
    assert len(store._records) == 1  # the new one; the expired one went on the 3rd save
    assert client.get("/get").text == "'a'"


def test_idle_timeout_follows_the_lifetime_set_at_run_time(tmp_path: t.Any) -> None:
    """PERMANENT_SESSION_LIFETIME is read per request: shortening it expires a session idle longer."""
    app = make_app(tmp_path, SESSION_TYPE="memory", SESSION_PERMANENT=True)
    app.permanent_session_lifetime = dt.timedelta(hours=1)
    interface = app.session_interface
    now = [time.time()]
    interface.now = lambda: now[0]  # type: ignore[attr-defined]
    client = app.test_client()
    client.get("/set/kept")
    now[0] += 120
    assert client.get("/get").text == "'kept'"  # two minutes idle, inside an hour
    app.config["PERMANENT_SESSION_LIFETIME"] = 60  # seconds, as Flask also accepts
    now[0] += 120
    assert client.get("/get").text == "None"  # two minutes idle, past one
    app.permanent_session_lifetime = dt.timedelta(hours=1)
    client.get("/set/again")
    now[0] += 120
    assert client.get("/get").text == "'again'"


def test_serialization_error_names_the_type(tmp_path: t.Any) -> None:
    """Storing a value that would need pickle fails like Flask's serializer does, naming the type."""
    app = make_app(tmp_path, SESSION_TYPE="memory")
    app.config["PROPAGATE_EXCEPTIONS"] = True

    @app.get("/bad")
    def bad() -> str:
        session["s"] = {1, 2}
        return "ok"

    with pytest.raises(TypeError, match="type set cannot be stored"):
        app.test_client().get("/bad")


def test_unreadable_value_is_dropped_and_the_rest_kept(tmp_path: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    """One value that will not decode reads as missing and is deleted; the session and its other keys live on."""
    app = make_app(tmp_path, SESSION_TYPE="memory")

    @app.get("/fill")
    def fill() -> str:
        session.update(good=[1, 2], bad="x", user="ann")
        return "ok"

    @app.get("/read/<key>")
    def read(key: str) -> str:
        return repr(session.get(key, "missing"))

    client = app.test_client()
    client.get("/fill")
    store = app.extensions["satchel"].store
    (record,) = store._records.values()
    record.data = {**record.data, "bad": b"\xc1"}  # 0xc1 is never valid msgpack
    assert client.get("/read/good").text == "[1, 2]"
    with caplog.at_level("WARNING", logger="flask_satchel.security"):
        assert client.get("/read/bad").text == "'missing'"
    assert "Unreadable value of session key 'bad'" in caplog.text
    assert "bad" not in record_of(store).data
    assert client.get("/read/user").text == "'ann'"


def test_regenerate_keeps_values_no_view_read(tmp_path: t.Any) -> None:
    """A new id carries every value over, read or not, and the user index follows it."""
    app = make_app(tmp_path, SESSION_TYPE="memory", SESSION_USER_KEY="user")

    @app.get("/login")
    def login() -> str:
        session.update(user="ann", cart=[("sku", 2)], when=dt.date(2026, 11, 27))
        return "ok"

    @app.get("/again")
    def again() -> str:
        session.regenerate()
        return "ok"

    @app.get("/show")
    def show() -> str:
        return repr(sorted(session.items()))

    client = app.test_client()
    client.get("/login")
    before = client.get_cookie("session")
    client.get("/again")
    after = client.get_cookie("session")
    assert before is not None
    assert after is not None
    assert before.value != after.value
    assert client.get("/show").text == repr([("cart", [("sku", 2)]), ("user", "ann"), ("when", dt.date(2026, 11, 27))])
    manager = app.extensions["satchel"]
    assert [info.user for info in manager.sessions_of("ann")] == ["ann"]


def record_of(store: t.Any) -> t.Any:
    (record,) = store._records.values()
    return record


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s["cart"].append("x"),
        lambda s: s.get("cart").append("x"),
        lambda s: s.setdefault("cart", []).append("x"),
        lambda s: next(v for k, v in s.items() if k == "cart").append("x"),
        lambda s: next(iter(s.values())).append("x"),
        lambda s: dict(s)["cart"].append("x"),
        lambda s: s["box"][0].append("x"),
    ],
    ids=["getitem", "get", "setdefault", "items", "values", "dict", "list-in-tuple"],
)
def test_in_place_changes_are_found_through_every_accessor(tmp_path: t.Any, mutate: t.Any) -> None:
    """A nested value changed in place is saved whichever way the view reached it."""
    app = make_app(tmp_path, SESSION_TYPE="memory")

    @app.get("/init")
    def init() -> str:
        session["cart"] = []
        session["box"] = ([],)
        return "ok"

    @app.get("/mutate")
    def mutate_view() -> str:
        mutate(session)
        return "ok"

    @app.get("/show")
    def show() -> str:
        return repr((session["cart"], session["box"]))

    client = app.test_client()
    client.get("/init")
    client.get("/mutate")
    cart, box = eval(client.get("/show").text)
    assert cart == ["x"] or box == (["x"],)


@pytest.mark.parametrize(
    ("stored", "mutate", "expected"),
    [
        ([("sku", 2)], lambda v: v.__setitem__(0, ["sku", 2]), [["sku", 2]]),
        ([True], lambda v: v.__setitem__(0, 1), [1]),
        ([1], lambda v: v.__setitem__(0, 1.0), [1.0]),
        ([0.0], lambda v: v.__setitem__(0, -0.0), [-0.0]),
        (["ann"], lambda v: v.__setitem__(0, Markup("ann")), [Markup("ann")]),
        ({"a": 1, "b": 2}, lambda v: v.__setitem__("a", v.pop("a")), {"b": 2, "a": 1}),
        ([[]], lambda v: v[0].append(dt.date(2026, 11, 28)), [[dt.date(2026, 11, 28)]]),
    ],
    ids=["tuple-to-list", "true-to-1", "int-to-float", "zero-sign", "str-to-markup", "key-order", "date-inside"],
)
def test_changes_that_compare_equal_are_still_saved(
    tmp_path: t.Any, stored: t.Any, mutate: t.Any, expected: t.Any
) -> None:
    """A value changed in place into one that is ``==`` but encodes differently is saved as changed."""
    app = make_app(tmp_path, SESSION_TYPE="memory")

    @app.get("/init")
    def init() -> str:
        session["v"] = stored
        return "ok"

    @app.get("/mutate")
    def mutate_view() -> str:
        mutate(session["v"])
        session["v"]  # handed out again after the change: still compared with the stored value
        return "ok"

    @app.get("/show")
    def show() -> str:
        return repr(session["v"])

    client = app.test_client()
    client.get("/init")
    client.get("/mutate")
    assert client.get("/show").text == repr(expected)


@pytest.mark.parametrize("default", [[], {}], ids=["list", "dict"])
def test_a_default_handed_out_then_stored_is_saved(tmp_path: t.Any, default: t.Any) -> None:
    """``session.get(key, [])`` then ``session[key] = that`` stores the key, even left empty."""
    app = make_app(tmp_path, SESSION_TYPE="memory")

    @app.get("/init")
    def init() -> str:
        session["other"] = 1
        return "ok"

    @app.get("/adopt")
    def adopt() -> str:
        value = session.get("v", type(default)())
        session["v"] = value
        return "ok"

    @app.get("/show")
    def show() -> str:
        return repr(session.get("v", "missing"))

    client = app.test_client()
    client.get("/init")
    client.get("/adopt")
    assert client.get("/show").text == repr(default)


_VALUES = st.sampled_from([[], [1], [True], [1.0], [(1, "x")], [[1]], {"x": 1}, {"x": [1]}, "s", 1])
_KEYS = st.sampled_from(["a", "b", "c"])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), _KEYS, _VALUES),
        st.tuples(st.just("delete"), _KEYS),
        st.tuples(st.just("adopt"), _KEYS),
        st.tuples(st.just("append"), _KEYS),
        st.tuples(st.just("retype"), _KEYS),
        st.tuples(st.just("setdefault"), _KEYS),
    ),
    max_size=6,
)


def _retyped(item: t.Any) -> t.Any:
    """An item equal to ``item`` (``==``) but of another type, where there is one."""
    if type(item) is bool:
        return int(item)
    if type(item) is int:
        return float(item)
    if type(item) is tuple:
        return list(item)
    if type(item) is list:
        return tuple(item)
    return item


def _run_ops(data: t.Any, ops: list[tuple[t.Any, ...]]) -> None:
    """Apply ``ops`` to ``data`` (a session or a plain dict), the way views use a session."""
    for op, key, *rest in ops:
        if op == "set":
            data[key] = copy.deepcopy(rest[0])
        elif op == "delete":
            data.pop(key, None)
        elif op == "adopt":  # flash()'s pattern: read with a default, store it back
            data[key] = data.get(key, [])
        elif op == "append":
            value = data.get(key, [])
            if type(value) is list:
                value.append(2)
        elif op == "retype":
            value = data.get(key)
            if type(value) is list and value:
                value[0] = _retyped(value[0])
            elif type(value) is dict and "x" in value:
                value["x"] = _retyped(value["x"])
        elif op == "setdefault":
            value = data.setdefault(key, [])
            if type(value) is list:
                value.append(3)


def _unshared(data: dict[str, t.Any]) -> dict[str, t.Any]:
    """A deep copy in which no two keys share a value (as after a store round trip)."""
    return {key: copy.deepcopy(value) for key, value in data.items()}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, min_size=1), _OPS)
def test_what_a_request_changes_is_what_the_next_one_sees(stored: dict[str, t.Any], ops: list[t.Any]) -> None:
    """Any mix of writes, deletes and in-place changes (type-only ones too) is saved exactly."""
    app = Flask("ops_test")
    app.config.update(SECRET_KEY="one", SESSION_TYPE="memory")
    Session(app)

    @app.get("/init")
    def init() -> str:
        session.update(_unshared(stored))
        return "ok"

    @app.get("/ops")
    def run() -> str:
        _run_ops(session, ops)
        return "ok"

    @app.get("/show")
    def show() -> str:
        return repr(sorted(session.items()))

    expected = _unshared(stored)
    _run_ops(expected, ops)
    client = app.test_client()
    client.get("/init")
    client.get("/ops")
    if expected:
        assert client.get("/show").text == repr(sorted(expected.items()))


def test_a_read_only_request_that_hands_out_mutable_values_writes_nothing(tmp_path: t.Any) -> None:
    """Lists and dicts handed to a view and left alone cost no write."""
    app = make_app(tmp_path, SESSION_TYPE="memory")
    store = app.extensions["satchel"].store

    @app.get("/init")
    def init() -> str:
        session.update(cart=[("sku", 2, 1.5)], prefs={"langs": ["en"], "when": dt.date(2026, 11, 28)})
        return "ok"

    @app.get("/look")
    def look() -> str:
        return repr((session["cart"], session.get("prefs")))

    client = app.test_client()
    client.get("/init")
    before = record_of(store)
    assert client.get("/look").text == repr(([("sku", 2, 1.5)], {"langs": ["en"], "when": dt.date(2026, 11, 28)}))
    assert record_of(store) is before


@settings(max_examples=500)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["session", "sessionx", "xsession", "other", "Session", "__Host-session", "session\t", " session "]
            ),
            st.text(alphabet=string.ascii_letters + string.digits + '-_.=" \\;,%\t\x0b\x1c\xa0\x01', max_size=12),
        ),
        max_size=5,
    ),
    st.sampled_from(["; ", ";", ", ", " ; "]),
)
def test_cookie_lookup_agrees_with_werkzeug(pairs: list[tuple[str, str]], separator: str) -> None:
    """The fast cookie lookup finds exactly what Werkzeug's parser finds."""
    header = separator.join(f"{name}={value}" for name, value in pairs)
    request = Request(EnvironBuilder(headers=[("Cookie", header)]).get_environ())
    for name in ("session", "__Host-session"):
        expected = request.cookies.get(name)
        found = cookie_value(request, name)
        assert found == expected
