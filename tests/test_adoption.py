"""Switching an existing app to Flask-Satchel: missing extras, late secrets, rotated keys, Cache-Control."""

from __future__ import annotations

import subprocess
import sys
import typing as t

import pytest
from conftest import add_value_views
from flask import Flask, make_response, session

from flask_satchel import Session


def make_app(tmp_path: t.Any, **config: t.Any) -> Flask:
    app = Flask("adoption", instance_path=str(tmp_path))
    app.config.update(config)
    return app


@pytest.mark.parametrize(
    ("config", "package", "key", "extra"),
    [
        ({"SESSION_TYPE": "redis"}, "redis", "SESSION_TYPE", "redis"),
        ({"SESSION_URL": "redis://127.0.0.1:6379/0"}, "redis", "SESSION_URL", "redis"),
        ({"SESSION_URL": "memcached://127.0.0.1:11211"}, "pymemcache", "SESSION_URL", "memcached"),
        ({"SESSION_URL": "postgresql://127.0.0.1/test"}, "sqlalchemy", "SESSION_URL", "sqlalchemy"),
        ({"SESSION_URL": "postgresql+psycopg://127.0.0.1/test"}, "psycopg", "SESSION_URL", "postgresql"),
        ({"SESSION_URL": "mysql+pymysql://root@127.0.0.1/test"}, "pymysql", "SESSION_URL", "mysql"),
        ({"SESSION_TYPE": "cookie", "SECRET_KEY": "k"}, "cryptography", "SESSION_TYPE", "cookie"),
    ],
)
def test_missing_extra_is_a_config_error_naming_it(
    tmp_path: t.Any, config: dict[str, t.Any], package: str, key: str, extra: str
) -> None:
    """A store whose client library is not installed is a ConfigError that names the key and the pip extra."""
    # A fresh interpreter, where None in sys.modules is how Python itself spells "this import fails".
    script = f"""
import sys
sys.modules[{package!r}] = None
from flask import Flask
from flask_satchel import ConfigError, Session
app = Flask("adoption", instance_path={str(tmp_path)!r})
app.config.update({config!r})
try:
    Session(app)
except ConfigError as e:
    print(e.key)
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.splitlines()[0] == key, out
    assert f'pip install "flask-satchel[{extra}]"' in out


@pytest.mark.parametrize("config", [{"SESSION_TYPE": "cookie"}, {"SESSION_TYPE": "memory", "SESSION_USE_SIGNER": True}])
def test_secret_key_may_come_after_init_app(tmp_path: t.Any, config: dict[str, t.Any]) -> None:
    """Without SECRET_KEY, Session(app) starts; reads are empty, writes raise Flask's own error; a later key works."""
    app = add_value_views(make_app(tmp_path, **config))
    Session(app)  # an app factory may set the key only after its extensions
    client = app.test_client()
    assert client.get("/get").text == "None"
    app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(RuntimeError, match="no secret key was set"):
        client.get("/set/x")
    app.secret_key = "set later"
    assert client.get("/set/x").status_code == 200
    assert client.get("/get").text == "'x'"


def test_written_session_is_signed_anew_with_the_newest_key(tmp_path: t.Any) -> None:
    """SESSION_USE_SIGNER: a session written after a key rotation gets a cookie signed with the new key."""
    app = add_value_views(make_app(tmp_path, SESSION_TYPE="memory", SESSION_USE_SIGNER=True, SECRET_KEY="old"))
    Session(app)
    client = app.test_client()
    client.get("/set/before")
    app.secret_key = "new"
    app.config["SECRET_KEY_FALLBACKS"] = ["old"]
    response = client.get("/set/after")  # a non-permanent session, written
    assert "Set-Cookie" in response.headers
    app.config["SECRET_KEY_FALLBACKS"] = []  # the old key retired
    assert client.get("/get").text == "'after'"


def cache_control_app(tmp_path: t.Any, **config: t.Any) -> Flask:
    app = add_value_views(make_app(tmp_path, SESSION_TYPE="memory", SECRET_KEY="k", **config))
    Session(app)

    @app.get("/private/<value>")
    def private(value: str) -> t.Any:
        session["v"] = value
        response = make_response("ok")
        response.headers["Cache-Control"] = "private, max-age=60"
        return response

    return app


def test_no_store_is_the_default_for_session_responses(tmp_path: t.Any) -> None:
    """A response that sets or deletes the session cookie is marked Cache-Control: no-store by default."""
    response = cache_control_app(tmp_path).test_client().get("/set/x")
    assert response.headers["Cache-Control"] == "no-store"


def test_cache_control_set_by_the_app_is_kept(tmp_path: t.Any) -> None:
    """A Cache-Control the view (or another extension) set is never replaced."""
    response = cache_control_app(tmp_path).test_client().get("/private/x")
    assert "Set-Cookie" in response.headers
    assert response.headers["Cache-Control"] == "private, max-age=60"


def test_no_store_can_be_turned_off(tmp_path: t.Any) -> None:
    """SESSION_NO_STORE = False sends no Cache-Control at all (Flask-Security's SECURITY_CACHE_CONTROL = None)."""
    response = cache_control_app(tmp_path, SESSION_NO_STORE=False).test_client().get("/set/x")
    assert "Set-Cookie" in response.headers
    assert "Cache-Control" not in response.headers
