"""The typed usage file (usage.py) runs as well as it type-checks, and ``current_session`` is ``flask.session``."""

from __future__ import annotations

import importlib.util
import sys
import typing as t
from pathlib import Path

import flask
import pytest
from flask import Flask

import flask_satchel

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def usage() -> t.Any:
    """usage.py, imported by path (tests/typing is not a package, and must not shadow the standard library)."""
    spec = importlib.util.spec_from_file_location("satchel_typed_usage", HERE / "usage.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture
def app(usage: t.Any, tmp_path: Path) -> t.Iterator[Flask]:
    app: Flask = usage.create_app(str(tmp_path), SESSION_TRACK_CLIENT=True)
    yield app
    app.extensions["satchel"].store.close()


def test_usage_app_logs_in_lists_and_logs_out(app: Flask) -> None:
    """The typed app logs in with a new id, lists and revokes the user's other devices, and logs out."""
    laptop, phone = app.test_client(), app.test_client()
    anonymous = laptop.get("/").json
    assert anonymous is not None
    assert anonymous["user"] is None
    for client in (laptop, phone):
        assert client.post("/login/ada").status_code == 302
    me = laptop.get("/").json
    assert me is not None
    assert (me["user"], me["new"], me["has_sid"]) == ("ada", False, True)
    assert me["handle"] != anonymous["handle"]

    devices = laptop.get("/devices", headers={"User-Agent": "typed-test"}).json
    assert devices is not None
    listed, mine = devices[:-1], devices[-1]
    assert len(listed) == 2
    assert {row["user"] for row in listed} == {"ada"}
    assert all(row["keys"] is None for row in listed)
    assert (mine["handle"], mine["keys"]) == (me["handle"], ["_user_id"])

    assert laptop.post("/devices/revoke-others").json == {"revoked": 1}
    phone_now = phone.get("/").json
    assert phone_now is not None
    assert phone_now["user"] is None
    assert laptop.post("/devices/revoke", data={"handle": "0" * 32}).json == {"revoked": False}
    stats = laptop.get("/admin/stats").json
    assert stats is not None
    assert (stats["count"], stats["users"]) == (1, 1)

    assert laptop.post("/logout").status_code == 302
    assert laptop.get_cookie("session") is None
    assert app.extensions["satchel"].sessions_of("ada") == []


def test_current_session_is_flask_session(app: Flask) -> None:
    """current_session is flask.session itself: what one writes, the other reads, in the same request."""
    assert flask_satchel.current_session is flask.session
    with app.test_request_context("/"):
        flask.session["cart"] = ["apple"]
        assert flask_satchel.current_session["cart"] == ["apple"]
        assert isinstance(flask_satchel.current_session, flask_satchel.ServerSession)


def test_current_session_outside_a_request() -> None:
    """Outside a request, current_session raises Flask's own "outside of request context" error."""
    with pytest.raises(RuntimeError, match="outside of request context"):
        flask_satchel.current_session.get("x")


def test_current_session_on_a_null_session(tmp_path: Path) -> None:
    """Without the SECRET_KEY a signed id needs, current_session is Flask's NullSession: empty, no writes, no handle."""
    app = Flask("null_session", instance_path=str(tmp_path))
    app.config.update(SESSION_TYPE="memory", SESSION_USE_SIGNER=True)
    flask_satchel.Session(app)
    with app.test_request_context("/"):
        assert dict(flask_satchel.current_session) == {}
        with pytest.raises(RuntimeError, match="no secret key was set"):
            flask_satchel.current_session["x"] = 1
        with pytest.raises(AttributeError, match="handle"):
            _ = flask_satchel.current_session.handle
