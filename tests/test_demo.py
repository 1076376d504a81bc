"""The demo app (examples/demo), driven through Flask's test client."""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_satchel import SessionManager


@pytest.fixture
def app(tmp_path: Path, demo: t.Any) -> t.Iterator[Flask]:
    app: Flask = demo.create_app({"TESTING": True, "SESSION_URL": f"sqlite:///{tmp_path}/sessions.sqlite3"})
    yield app
    app.extensions["satchel"].store.close()


@pytest.fixture
def manager(app: Flask) -> SessionManager:
    return t.cast(SessionManager, app.extensions["satchel"])


def token(client: FlaskClient, path: str = "/login") -> str:
    """The CSRF token from a form on ``path``, as a browser would submit it."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert match is not None, f"no CSRF field on {path}"
    return match.group(1)


def cookie(client: FlaskClient) -> str | None:
    found = client.get_cookie("session")
    return None if found is None else found.value


def login(client: FlaskClient, name: str) -> None:
    response = client.post("/login", data={"username": name, "csrf_token": token(client)})
    assert response.status_code == 302


def cart_items(client: FlaskClient) -> list[str]:
    """The items the cart page lists."""
    return re.findall(r"<li>\s*<span>(.*?)</span>", client.get("/cart").text)


def post(client: FlaskClient, path: str, **data: t.Any) -> t.Any:
    return client.post(path, data={"csrf_token": token(client, "/cart"), **data})


def test_login_shows_name_and_changes_cookie(app: Flask) -> None:
    """Logging in shows "Logged in as NAME" and swaps the session cookie for a new id."""
    client = app.test_client()
    form_token = token(client)
    before = cookie(client)
    assert before is not None
    client.post("/login", data={"username": "alice", "csrf_token": form_token})
    after = cookie(client)
    assert after is not None
    assert after != before
    assert "Logged in as alice" in client.get("/").text


def test_pre_login_cookie_is_dead_after_login(app: Flask) -> None:
    """A cookie planted before login (session fixation) is not logged in afterwards."""
    victim = app.test_client()
    form_token = token(victim)
    planted = cookie(victim)
    victim.post("/login", data={"username": "alice", "csrf_token": form_token})
    attacker = app.test_client()
    attacker.set_cookie("session", t.cast(str, planted))
    page = attacker.get("/").text
    assert "Logged in as" not in page
    assert "Log in" in page


def test_bad_name_is_refused(app: Flask) -> None:
    """An empty or overlong name is refused with the form shown again."""
    client = app.test_client()
    for name in ("", "   ", "x" * 41):
        response = client.post("/login", data={"username": name, "csrf_token": token(client)})
        assert response.status_code == 400
    assert "Logged in as" not in client.get("/").text


def test_cart_add_and_remove(app: Flask) -> None:
    """Items added to the cart are listed; removing one leaves the others."""
    client = app.test_client()
    post(client, "/cart/add", item="apples")
    post(client, "/cart/add", item="pears")
    assert cart_items(client) == ["apples", "pears"]
    post(client, "/cart/remove", index=0)
    assert cart_items(client) == ["pears"]


def test_cart_survives_login(app: Flask) -> None:
    """The cart filled before logging in is still there after the session id changes."""
    client = app.test_client()
    post(client, "/cart/add", item="bread")
    login(client, "alice")
    assert cart_items(client) == ["bread"]


def test_sessions_page_lists_both_logins_and_revoke_logs_out(app: Flask, manager: SessionManager) -> None:
    """Two logins of one user are both listed; revoking one logs that browser out."""
    laptop, phone = app.test_client(), app.test_client()
    login(laptop, "alice")
    login(phone, "alice")
    handles = [info.handle for info in manager.sessions_of("alice")]
    assert len(handles) == 2
    page = laptop.get("/sessions").text
    for handle in handles:
        assert handle[:8] in page
    assert page.count("this session") == 1
    phone_row = phone.get("/sessions").text.split('class="current"', 1)[1]
    match = re.search(r'name="handle" value="([0-9a-f]+)"', phone_row)
    assert match is not None
    phone_handle = match.group(1)
    response = laptop.post("/sessions/revoke", data={"handle": phone_handle, "csrf_token": token(laptop, "/sessions")})
    assert response.status_code == 302
    assert "Logged in as" not in phone.get("/").text
    assert "Logged in as alice" in laptop.get("/").text
    assert [info.handle for info in manager.sessions_of("alice")] == [h for h in handles if h != phone_handle]


def test_revoke_refuses_another_users_session(app: Flask, manager: SessionManager) -> None:
    """A handle is public: posting someone else's handle does not log them out."""
    alice, mallory = app.test_client(), app.test_client()
    login(alice, "alice")
    login(mallory, "mallory")
    (alice_session,) = manager.sessions_of("alice")
    mallory.post("/sessions/revoke", data={"handle": alice_session.handle, "csrf_token": token(mallory, "/sessions")})
    assert "Logged in as alice" in alice.get("/").text


def test_log_out_others_keeps_current(app: Flask, manager: SessionManager) -> None:
    """Log out all other sessions ends the others and keeps this one logged in."""
    clients = [app.test_client() for _ in range(3)]
    for client in clients:
        login(client, "alice")
    keeper = clients[0]
    keeper.post("/sessions/revoke-others", data={"csrf_token": token(keeper, "/sessions")})
    assert "Logged in as alice" in keeper.get("/").text
    for other in clients[1:]:
        assert "Logged in as" not in other.get("/").text
    assert len(manager.sessions_of("alice")) == 1


def test_logout_destroys_the_session(app: Flask, manager: SessionManager) -> None:
    """Logging out removes the record on the server: a copy of the old cookie is worthless."""
    client = app.test_client()
    login(client, "alice")
    stolen = cookie(client)
    client.post("/logout", data={"csrf_token": token(client, "/")})
    assert cookie(client) is None
    assert manager.sessions_of("alice") == []
    thief = app.test_client()
    thief.set_cookie("session", t.cast(str, stolen))
    assert "Logged in as" not in thief.get("/").text
    assert "Log in" in client.get("/").text


def test_sessions_page_needs_login(app: Flask) -> None:
    """An anonymous visitor is sent to the login form instead of a session list."""
    response = app.test_client().get("/sessions")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/login")


@pytest.mark.parametrize("sent", [None, "", "forged-token"])
def test_csrf_rejects_forged_post(app: Flask, sent: str | None) -> None:
    """A POST without this session's CSRF token is refused and changes nothing."""
    client = app.test_client()
    login(client, "alice")
    data = {"item": "forged"} if sent is None else {"item": "forged", "csrf_token": sent}
    assert client.post("/cart/add", data=data).status_code == 400
    assert client.post("/logout", data=data).status_code == 400
    assert cart_items(client) == []
    assert "Logged in as alice" in client.get("/").text


def test_token_from_another_session_is_refused(app: Flask) -> None:
    """The CSRF token is per session: one taken from another browser does not work."""
    victim, attacker = app.test_client(), app.test_client()
    login(victim, "alice")
    foreign = token(attacker, "/cart")
    assert victim.post("/cart/add", data={"item": "forged", "csrf_token": foreign}).status_code == 400
    assert cart_items(victim) == []


@pytest.mark.parametrize(
    ("user_agent", "shown"),
    [
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
            "Chrome on Windows",
        ),
        ("Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/131.0 Safari/537.36 Edg/131.0", "Edge on Windows"),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Version/18.0 Mobile Safari/604.1", "Safari on iPhone"),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", "Firefox on Linux"),
        ("curl/8.5.0", "a browser"),
        (None, "unknown device"),
    ],
)
def test_sessions_page_names_devices(demo: t.Any, user_agent: str | None, shown: str) -> None:
    """The sessions page shows "Browser on System" instead of a raw user agent."""
    assert demo.device(user_agent) == shown


# Signed out elsewhere ------------------------------------------------------------------------

SIGNED_OUT = "You were signed out from another device."
ENDED = "You were signed out: your session ended. Please log in again."


def handle_of(client: FlaskClient) -> str:
    """This browser's session handle, as its sessions page marks it."""
    row = client.get("/sessions").text.split('class="current"', 1)[1]
    match = re.search(r'name="handle" value="([0-9a-f]+)"', row)
    assert match is not None
    return match.group(1)


def test_revoked_browser_is_told_it_was_signed_out(app: Flask) -> None:
    """A browser whose session was logged out from another device says so, once, above "You are not logged in"."""
    laptop, phone = app.test_client(), app.test_client()
    login(laptop, "alice")
    login(phone, "alice")
    laptop.post("/sessions/revoke", data={"handle": handle_of(phone), "csrf_token": token(laptop, "/sessions")})
    page = phone.get("/").text
    assert SIGNED_OUT in page
    assert "You are not logged in" in page
    assert SIGNED_OUT not in phone.get("/").text
    assert "Logged in as alice" in laptop.get("/").text


def test_log_out_others_tells_each_other_browser(app: Flask) -> None:
    """After "log out all other sessions", every other browser is told it was signed out from another device."""
    keeper, *others = [app.test_client() for _ in range(3)]
    for client in (keeper, *others):
        login(client, "alice")
    keeper.post("/sessions/revoke-others", data={"csrf_token": token(keeper, "/sessions")})
    for other in others:
        assert SIGNED_OUT in other.get("/cart").text
    assert SIGNED_OUT not in keeper.get("/").text


def test_no_notice_without_a_revocation(app: Flask) -> None:
    """A visitor who never logged in, or who logged out here, sees no signed-out notice."""
    visitor = app.test_client()
    assert "signed out" not in visitor.get("/").text
    client = app.test_client()
    login(client, "alice")
    client.post("/logout", data={"csrf_token": token(client, "/")})
    assert "signed out" not in client.get("/").text
    login(client, "alice")
    client.post("/sessions/revoke", data={"handle": handle_of(client), "csrf_token": token(client, "/sessions")})
    assert "signed out" not in client.get("/").text


def test_session_ended_elsewhere_gets_the_plain_notice(app: Flask, tmp_path: Path, demo: t.Any) -> None:
    """A session ended where this app did not see it (another process on the same store) is "your session ended"."""
    client = app.test_client()
    login(client, "alice")
    other = demo.create_app({"TESTING": True, "SESSION_URL": f"sqlite:///{tmp_path}/sessions.sqlite3"})
    try:
        assert other.extensions["satchel"].revoke_user("alice") == 1
    finally:
        other.extensions["satchel"].store.close()
    page = client.get("/").text
    assert ENDED in page
    assert SIGNED_OUT not in page


def test_stale_form_after_revocation_gets_the_demos_page(app: Flask) -> None:
    """A form sent from a page of a revoked session gets the demo's styled page saying why, not Werkzeug's."""
    laptop, phone = app.test_client(), app.test_client()
    login(laptop, "alice")
    login(phone, "alice")
    stale = token(phone, "/cart")
    laptop.post("/sessions/revoke-others", data={"csrf_token": token(laptop, "/sessions")})
    response = phone.post("/cart/add", data={"item": "pears", "csrf_token": stale})
    assert response.status_code == 400
    assert response.content_type == "text/html; charset=utf-8"
    page = response.text
    assert "<h1>This form has expired</h1>" in page
    assert SIGNED_OUT in page
    assert "demo.css" in page
    assert "Satchel demo" in page
    assert "Bad Request</title>" not in page
    assert cart_items(phone) == []


def test_http_errors_use_the_demos_page(app: Flask) -> None:
    """A 404 and a 405 are the demo's styled page too, with their status (and the 405's Allow header)."""
    client = app.test_client()
    missing = client.get("/no-such-page")
    assert missing.status_code == 404
    assert "<h1>404 Not Found</h1>" in missing.text
    assert "demo.css" in missing.text
    wrong = client.get("/logout")
    assert wrong.status_code == 405
    assert "POST" in wrong.headers["Allow"]
    assert "demo.css" in wrong.text
