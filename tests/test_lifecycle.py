"""Session management beyond the dict: signals, client tracking, the per-user cap, cookie hardening."""

from __future__ import annotations

import contextlib
import time
import typing as t

import pytest
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_satchel import ConfigError, Session
from flask_satchel import current_session as session
from flask_satchel import signals as sig
from flask_satchel.errors import TooManySessions


def make_app(tmp_path: t.Any, **config: t.Any) -> Flask:
    app = Flask("lifecycle_test", instance_path=str(tmp_path))
    app.config.update(SECRET_KEY="s", SESSION_TYPE="memory")
    app.config.update(config)
    Session(app)

    @app.get("/set/<value>")
    def set_value(value: str) -> str:
        session["v"] = value
        return session.handle

    @app.get("/get")
    def get_value() -> str:
        return repr(session.get("v"))

    @app.get("/login/<user>")
    def login(user: str) -> tuple[str, int]:
        try:
            session["_user_id"] = user
        except TooManySessions as e:
            return str(e), 409
        session.regenerate()
        return session.handle, 200

    @app.get("/destroy")
    def destroy() -> str:
        session.destroy()
        return "bye"

    return app


@contextlib.contextmanager
def recording(app: Flask) -> t.Iterator[list[tuple[str, dict[str, t.Any]]]]:
    events: list[tuple[str, dict[str, t.Any]]] = []
    receivers = {}
    for name in ("created", "regenerated", "destroyed", "revoked", "expired"):
        signal = getattr(sig, f"session_{name}")

        def receiver(sender: Flask, _name: str = name, **kwargs: t.Any) -> None:
            events.append((_name, kwargs))

        receivers[name] = receiver
        signal.connect(receiver, app)
    try:
        yield events
    finally:
        for name, receiver in receivers.items():
            getattr(sig, f"session_{name}").disconnect(receiver, app)


def test_signals_carry_handles_never_sids(tmp_path: t.Any) -> None:
    """created, regenerated, destroyed and expired are sent with handles, in order, and no sid."""
    app = make_app(tmp_path)
    now = [time.time()]
    app.session_interface.now = lambda: now[0]  # type: ignore[attr-defined]
    client = app.test_client()
    with recording(app) as events:
        first = client.get("/set/a").text
        second = client.get("/login/ann").text
        client.get("/destroy")
        client.get("/set/b")
        now[0] += 40 * 86400
        client.get("/get")
    names = [name for name, _ in events]
    assert names == ["created", "regenerated", "destroyed", "created", "expired"]
    assert events[0][1] == {"handle": first}
    assert events[1][1] == {"handle": second, "old_handle": first}
    assert events[2][1] == {"handle": second}
    sid = client.get_cookie("session")
    assert sid is None or all(sid.value not in kwargs.values() for _, kwargs in events)


def test_revocations_are_signalled(tmp_path: t.Any) -> None:
    """revoke and revoke_user send session_revoked once per session ended, with its handle."""
    app = make_app(tmp_path)
    handles = [app.test_client().get("/login/fay").text for _ in range(3)]
    manager = app.extensions["satchel"]
    with recording(app) as events:
        assert manager.revoke(handles[0]) is True
        assert manager.revoke(handles[0]) is False
        assert manager.revoke_user("fay", keep=handles[1]) == 1
    assert events == [("revoked", {"handle": handles[0]}), ("revoked", {"handle": handles[2]})]


def test_client_details_are_tracked_behind_proxyfix(tmp_path: t.Any) -> None:
    """With SESSION_TRACK_CLIENT the session list shows the client's ip (via ProxyFix) and user agent."""
    app = make_app(tmp_path, SESSION_TRACK_CLIENT=True)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    client = app.test_client()
    client.get("/login/bo", headers={"User-Agent": "Firefox/140", "X-Forwarded-For": "203.0.113.9"})
    [info] = app.extensions["satchel"].sessions_of("bo")
    assert (info.ip, info.user_agent) == ("203.0.113.9", "Firefox/140")


def test_client_details_update_at_refresh_granularity(tmp_path: t.Any) -> None:
    """A new user agent is recorded once the refresh interval has passed, not on every request."""
    app = make_app(tmp_path, SESSION_TRACK_CLIENT=True)
    now = [time.time()]
    app.session_interface.now = lambda: now[0]  # type: ignore[attr-defined]
    client = app.test_client()
    client.get("/login/cy", headers={"User-Agent": "old"})
    manager = app.extensions["satchel"]
    now[0] += 5
    client.get("/get", headers={"User-Agent": "new"})
    assert manager.sessions_of("cy")[0].user_agent == "old"
    now[0] += 120
    client.get("/get", headers={"User-Agent": "new"})
    assert manager.sessions_of("cy")[0].user_agent == "new"


def test_cap_revokes_the_oldest(tmp_path: t.Any) -> None:
    """Past SESSION_MAX_PER_USER the least recently seen sessions are logged out, with a signal."""
    app = make_app(tmp_path, SESSION_MAX_PER_USER=2)
    now = [time.time()]
    app.session_interface.now = lambda: now[0]  # type: ignore[attr-defined]
    devices = [app.test_client() for _ in range(3)]
    with recording(app) as events:
        handles = []
        for device in devices:
            now[0] += 1
            handles.append(device.get("/login/di").text)
    assert [d.get("/get").status_code for d in devices] == [200] * 3
    assert [name for name, _ in events].count("revoked") == 1
    assert ("revoked", {"handle": handles[0]}) in events
    assert sorted(i.handle for i in app.extensions["satchel"].sessions_of("di")) == sorted(handles[1:])


def test_cap_can_refuse_the_new_login(tmp_path: t.Any) -> None:
    """With the "refuse" policy a login past the cap raises TooManySessions in the view; others stay."""
    app = make_app(tmp_path, SESSION_MAX_PER_USER=1, SESSION_MAX_PER_USER_POLICY="refuse")
    first, second = app.test_client(), app.test_client()
    assert first.get("/login/ed").status_code == 200
    response = second.get("/login/ed")
    assert response.status_code == 409
    assert "already has 1 sessions" in response.text
    assert len(app.extensions["satchel"].sessions_of("ed")) == 1


def test_secure_auto_follows_the_request(tmp_path: t.Any) -> None:
    """SESSION_COOKIE_SECURE="auto" marks the cookie Secure on HTTPS requests only."""
    app = make_app(tmp_path, SESSION_COOKIE_SECURE="auto")
    plain = app.test_client().get("/set/a").headers["Set-Cookie"]
    secure = app.test_client().get("/set/a", base_url="https://example.test").headers["Set-Cookie"]
    assert "Secure" not in plain
    assert "Secure" in secure


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"SESSION_COOKIE_NAME": "__Host-s"}, "SESSION_COOKIE_SECURE"),
        ({"SESSION_COOKIE_NAME": "__Secure-s", "SESSION_COOKIE_SECURE": "auto"}, "SESSION_COOKIE_SECURE"),
        (
            {"SESSION_COOKIE_NAME": "__Host-s", "SESSION_COOKIE_SECURE": True, "SESSION_COOKIE_DOMAIN": "a.test"},
            "SESSION_COOKIE_DOMAIN",
        ),
        (
            {"SESSION_COOKIE_NAME": "__Host-s", "SESSION_COOKIE_SECURE": True, "SESSION_COOKIE_PATH": "/app"},
            "SESSION_COOKIE_PATH",
        ),
        ({"SESSION_COOKIE_SECURE": "yes"}, "SESSION_COOKIE_SECURE"),
        ({"SESSION_MAX_PER_USER": 0}, "SESSION_MAX_PER_USER"),
        ({"SESSION_MAX_PER_USER_POLICY": "drop"}, "SESSION_MAX_PER_USER_POLICY"),
    ],
)
def test_cookie_rules_are_checked_at_startup(tmp_path: t.Any, config: dict[str, t.Any], key: str) -> None:
    """A cookie prefix whose rules the config breaks, and a bad cap, are ConfigErrors naming the key."""
    with pytest.raises(ConfigError) as info:
        make_app(tmp_path, **config)
    assert info.value.key == key


def test_host_prefixed_cookie_works(tmp_path: t.Any) -> None:
    """A __Host- cookie with Secure, no domain and path / is accepted and sent as configured."""
    app = make_app(tmp_path, SESSION_COOKIE_NAME="__Host-session", SESSION_COOKIE_SECURE=True)
    header = app.test_client().get("/set/a", base_url="https://example.test").headers["Set-Cookie"]
    assert header.startswith("__Host-session=")
    assert "Secure" in header


def test_no_store_on_responses_that_carry_the_cookie(tmp_path: t.Any) -> None:
    """Responses that set or delete the session cookie say Cache-Control: no-store; others are untouched."""
    app = make_app(tmp_path)
    client = app.test_client()
    assert client.get("/set/a").headers["Cache-Control"] == "no-store"
    assert "Cache-Control" not in client.get("/get").headers
    assert client.get("/destroy").headers["Cache-Control"] == "no-store"


def test_clear_site_data_on_destroy(tmp_path: t.Any) -> None:
    """With SESSION_CLEAR_SITE_DATA, destroy() also asks the browser to clear the site's cookies."""
    app = make_app(tmp_path, SESSION_CLEAR_SITE_DATA=True)
    client = app.test_client()
    client.get("/set/a")
    assert client.get("/destroy").headers["Clear-Site-Data"] == '"cookies"'
    plain = make_app(tmp_path / "b").test_client()
    plain.get("/set/a")
    assert "Clear-Site-Data" not in plain.get("/destroy").headers
