"""Extensions that keep state in ``flask.session`` work unchanged on every store.

Flask-Login (login, remember-me, "basic" and "strong" session protection,
fresh logins), Flask-WTF's CSRF protection, Flask's flashes and the test
client's ``session_transaction()``, plus the Flask behaviours users lean on
without thinking: a new session is empty, an untouched request costs no
cookie, ``clear()`` deletes the cookie, and the ``modified``/``accessed``/
``new`` flags.

Every test runs on each store in :data:`STORES`; a new store joins by adding
its config there.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask import Flask, flash, get_flashed_messages, redirect, request
from flask import session as _session
from flask.globals import request_ctx

# Flask-Login 0.6, Flask-WTF 1.3 and WTForms 3.3 ship no type information (no py.typed): their names are Any.
from flask_login import (  # type: ignore[import-untyped]
    LoginManager,
    UserMixin,
    confirm_login,
    current_user,
    login_fresh,
    login_user,
    logout_user,
)
from flask_login import fresh_login_required as _fresh_login_required
from flask_login import login_required as _login_required
from flask_wtf import FlaskForm  # type: ignore[import-untyped]
from flask_wtf.csrf import CSRFProtect, generate_csrf  # type: ignore[import-untyped]
from wtforms import StringField  # type: ignore[import-untyped]

from flask_satchel import Session, SessionManager
from flask_satchel.interface import SatchelSessionInterface
from flask_satchel.session import ServerSession

#: ``flask.session``, typed as what Flask-Satchel puts there.
session = t.cast(ServerSession, _session)

View = t.TypeVar("View", bound=t.Callable[..., t.Any])


def login_required(view: View) -> View:
    """Flask-Login's ``login_required``, typed: it wraps the view with ``functools.wraps``."""
    return t.cast(View, _login_required(view))


def fresh_login_required(view: View) -> View:
    """Flask-Login's ``fresh_login_required``, typed: it wraps the view with ``functools.wraps``."""
    return t.cast(View, _fresh_login_required(view))


#: Store name to the config that selects it, given a fresh temporary directory.
STORES: dict[str, t.Callable[[Path], dict[str, t.Any]]] = {
    "memory": lambda tmp: {"SESSION_TYPE": "memory"},
    "sqlite": lambda tmp: {"SESSION_TYPE": "sqlite", "SESSION_URL": f"sqlite:///{tmp / 'sessions.sqlite3'}"},
    "filesystem": lambda tmp: {"SESSION_TYPE": "filesystem", "SESSION_FILE_DIR": str(tmp / "files")},
}

#: A browser's User-Agent; Flask-Login's session identifier hashes it with the address.
FIREFOX = {"User-Agent": "Mozilla/5.0 Firefox/140.0"}
CHROME = {"User-Agent": "Mozilla/5.0 Chrome/140.0"}


@pytest.fixture(params=sorted(STORES))
def make_app(request: pytest.FixtureRequest, tmp_path: Path) -> t.Iterator[t.Callable[..., Flask]]:
    """Build apps on the store under test, with extra config; their stores are closed afterwards."""
    apps: list[Flask] = []

    def make(**config: t.Any) -> Flask:
        home = tmp_path / f"app{len(apps)}"
        home.mkdir()
        app = Flask(__name__, instance_path=str(home / "instance"))
        app.config.update(TESTING=True, SECRET_KEY="compat-test-secret", **STORES[request.param](home))
        app.config.update(config)
        Session(app)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["satchel"].store.close()


@pytest.fixture
def app(make_app: t.Callable[..., Flask]) -> Flask:
    return make_app()


def manager_of(app: Flask) -> SessionManager:
    return t.cast(SessionManager, app.extensions["satchel"])


def frozen_clock(app: Flask) -> list[float]:
    """Freeze the interface's clock; tests move it forward instead of sleeping."""
    interface = t.cast(SatchelSessionInterface, app.session_interface)
    now = [interface.now()]
    interface.now = lambda: now[0]
    return now


def set_cookie_headers(response: t.Any, name: str = "session") -> list[str]:
    return [h for h in response.headers.getlist("Set-Cookie") if h.startswith(f"{name}=")]


# Flask-Login -------------------------------------------------------------------


class User(UserMixin):  # type: ignore[misc]  # UserMixin is Any (Flask-Login has no types)
    def __init__(self, user_id: str) -> None:
        self.id = user_id


@pytest.fixture
def login_app(app: Flask) -> Flask:
    """An app with Flask-Login: log in (optionally remembered or permanent), whoami, protected pages."""
    login_manager = LoginManager(app)

    def load_user(user_id: str) -> User:
        return User(user_id)

    login_manager.user_loader(load_user)

    @app.get("/login/<name>")
    def login(name: str) -> str:
        session.regenerate()  # what every login should do, against fixation
        login_user(User(name), remember="remember" in request.args)
        if "permanent" in request.args:
            session.permanent = True
        return session.handle

    @app.get("/me")
    def me() -> str:
        who = current_user.get_id() if current_user.is_authenticated else "anonymous"
        return f"{who} fresh={login_fresh()}"

    @app.get("/logout")
    def logout() -> str:
        logout_user()
        return "bye"

    @app.get("/secret")
    @login_required
    def secret() -> str:
        return "secret"

    @app.get("/fresh-secret")
    @fresh_login_required
    def fresh_secret() -> str:
        return "fresh secret"

    @app.get("/reauthenticate")
    @login_required
    def reauthenticate() -> str:
        confirm_login()
        return "confirmed"

    @app.get("/handle")
    def handle() -> str:
        return session.handle

    return app


def test_login_logout_across_requests(login_app: Flask) -> None:
    """login_user is remembered across requests through current_user; logout_user forgets it."""
    client = login_app.test_client()
    assert client.get("/me").text == "anonymous fresh=False"
    assert client.get("/secret").status_code == 401
    client.get("/login/alice")
    assert client.get("/me").text == "alice fresh=True"
    assert client.get("/secret").text == "secret"
    client.get("/logout")
    assert client.get("/me").text == "anonymous fresh=False"
    assert client.get("/secret").status_code == 401


def test_login_is_per_client(login_app: Flask) -> None:
    """Two browsers logged in as different users each see their own user."""
    alice, bob = login_app.test_client(), login_app.test_client()
    alice.get("/login/alice")
    bob.get("/login/bob")
    assert alice.get("/me").text == "alice fresh=True"
    assert bob.get("/me").text == "bob fresh=True"


def test_remember_me_restores_user_without_session(login_app: Flask) -> None:
    """remember=True: after the session cookie is dropped, the remember-me cookie logs the user back in, not fresh."""
    client = login_app.test_client()
    client.get("/login/carol?remember=1")
    assert client.get_cookie("remember_token") is not None
    client.delete_cookie("session")
    assert client.get("/me").text == "carol fresh=False"
    assert client.get_cookie("session") is not None  # the restored login is a new server-side session
    assert client.get("/me").text == "carol fresh=False"


def test_without_remember_me_dropping_session_logs_out(login_app: Flask) -> None:
    """Without remember=True, losing the session cookie is losing the login."""
    client = login_app.test_client()
    client.get("/login/dan")
    assert client.get_cookie("remember_token") is None
    client.delete_cookie("session")
    assert client.get("/me").text == "anonymous fresh=False"


def test_logout_clears_remember_me(login_app: Flask) -> None:
    """logout_user deletes the remember-me cookie, so the user stays logged out."""
    client = login_app.test_client()
    client.get("/login/erin?remember=1")
    client.get("/logout")
    assert client.get_cookie("remember_token") is None
    client.delete_cookie("session")
    assert client.get("/me").text == "anonymous fresh=False"


def test_strong_protection_logs_out_on_new_identifier(login_app: Flask) -> None:
    """session_protection='strong': a changed User-Agent on a non-permanent session logs the user out for good."""
    login_app.login_manager.session_protection = "strong"  # type: ignore[attr-defined]
    client = login_app.test_client()
    client.get("/login/frank?remember=1", headers=FIREFOX)
    assert client.get("/me", headers=FIREFOX).text == "frank fresh=True"
    assert client.get("/me", headers=CHROME).text == "anonymous fresh=False"
    # The user keys are gone from the stored session and the remember-me cookie is cleared.
    assert client.get_cookie("remember_token") is None
    assert client.get("/me", headers=FIREFOX).text == "anonymous fresh=False"
    assert manager_of(login_app).sessions_of("frank") == []


def test_strong_protection_only_unfreshens_permanent_session(login_app: Flask) -> None:
    """'strong' treats a permanent session like 'basic': still logged in, no longer fresh (the flag is kept)."""
    login_app.login_manager.session_protection = "strong"  # type: ignore[attr-defined]
    client = login_app.test_client()
    client.get("/login/gina?permanent=1", headers=FIREFOX)
    assert client.get("/me", headers=CHROME).text == "gina fresh=False"
    assert client.get("/fresh-secret", headers=CHROME).status_code == 401


def test_basic_protection_unfreshens(login_app: Flask) -> None:
    """session_protection='basic': a changed User-Agent keeps the user but marks the login not fresh."""
    client = login_app.test_client()
    client.get("/login/hugo", headers=FIREFOX)
    assert client.get("/me", headers=CHROME).text == "hugo fresh=False"
    assert client.get("/me", headers=FIREFOX).text == "hugo fresh=False"


def test_fresh_login_required(login_app: Flask) -> None:
    """A fresh login opens fresh_login_required pages; a remembered one must confirm first."""
    client = login_app.test_client()
    client.get("/login/ivy?remember=1")
    assert client.get("/fresh-secret").text == "fresh secret"
    client.delete_cookie("session")
    assert client.get("/fresh-secret").status_code == 401
    assert client.get("/secret").text == "secret"
    client.get("/reauthenticate")
    assert client.get("/me").text == "ivy fresh=True"
    assert client.get("/fresh-secret").text == "fresh secret"


def test_login_user_lists_session_for_user(login_app: Flask) -> None:
    """After login_user, sessions_of(user.get_id()) lists that session; after logout_user it does not."""
    manager = manager_of(login_app)
    phone, laptop = login_app.test_client(), login_app.test_client()
    handles = {phone.get("/login/jack").text, laptop.get("/login/jack").text}
    assert handles == {phone.get("/handle").text, laptop.get("/handle").text}
    assert {info.handle for info in manager.sessions_of(User("jack").get_id())} == handles
    assert all(info.user == "jack" for info in manager.sessions_of("jack"))
    phone.get("/logout")
    assert [info.handle for info in manager.sessions_of("jack")] == [laptop.get("/handle").text]


def test_revoking_user_logs_out_flask_login(login_app: Flask) -> None:
    """revoke_user ends a Flask-Login login on every device."""
    client = login_app.test_client()
    client.get("/login/kim")
    assert manager_of(login_app).revoke_user("kim") == 1
    assert client.get("/me").text == "anonymous fresh=False"


# Flask-WTF ----------------------------------------------------------------------


class NameForm(FlaskForm):  # type: ignore[misc]  # FlaskForm is Any (Flask-WTF has no types)
    name = StringField()


@pytest.fixture
def csrf_app(app: Flask) -> Flask:
    """An app with CSRFProtect on and a FlaskForm."""
    app.config["WTF_CSRF_ENABLED"] = True
    CSRFProtect(app)

    @app.get("/form")
    def form() -> str:
        return t.cast(str, generate_csrf())

    @app.post("/submit")
    def submit() -> str:
        form = NameForm()
        assert form.validate_on_submit(), form.errors
        return f"hello {form.name.data}"

    @app.get("/regenerate")
    def regenerate() -> str:
        session.regenerate()
        return "ok"

    @app.get("/destroy")
    def destroy() -> str:
        session.destroy()
        return "ok"

    return app


def test_csrf_token_accepted(csrf_app: Flask) -> None:
    """A POST carrying the session's CSRF token, as a field or a header, is accepted, more than once."""
    client = csrf_app.test_client()
    token = client.get("/form").text
    assert client.post("/submit", data={"csrf_token": token, "name": "ann"}).text == "hello ann"
    assert client.post("/submit", data={"name": "bo"}, headers={"X-CSRFToken": token}).text == "hello bo"
    assert client.post("/submit", data={"csrf_token": token, "name": "cy"}).text == "hello cy"


@pytest.mark.parametrize("token", [None, "", "not-a-token", "IjAwMCI.aGFuZA.c2lnbmF0dXJl"])
def test_csrf_missing_or_wrong_token_rejected(csrf_app: Flask, token: str | None) -> None:
    """A POST without the token, or with a wrong one, is rejected with 400."""
    client = csrf_app.test_client()
    client.get("/form")
    data = {"name": "eve"} if token is None else {"name": "eve", "csrf_token": token}
    response = client.post("/submit", data=data)
    assert response.status_code == 400
    assert "CSRF" in response.text


def test_csrf_token_of_another_session_rejected(csrf_app: Flask) -> None:
    """A token taken from another session does not work in this one."""
    victim, attacker = csrf_app.test_client(), csrf_app.test_client()
    victim.get("/form")
    stolen = attacker.get("/form").text
    assert victim.post("/submit", data={"csrf_token": stolen, "name": "x"}).status_code == 400


def test_csrf_token_survives_regenerate_not_destroy(csrf_app: Flask) -> None:
    """regenerate() keeps the session's CSRF token valid; destroy() makes it worthless."""
    client = csrf_app.test_client()
    token = client.get("/form").text
    client.get("/regenerate")
    assert client.post("/submit", data={"csrf_token": token, "name": "fay"}).text == "hello fay"
    client.get("/destroy")
    assert client.post("/submit", data={"csrf_token": token, "name": "fay"}).status_code == 400


# Flashes and session_transaction -----------------------------------------------------


def test_flash_across_redirect(app: Flask) -> None:
    """A message flashed before a redirect is shown once after it, with its category, then gone."""

    @app.get("/save")
    def save() -> t.Any:
        flash("saved")
        flash("careful", "warning")
        return redirect("/show")

    @app.get("/show")
    def show() -> str:
        return repr(get_flashed_messages(with_categories=True))

    client = app.test_client()
    response = client.get("/save", follow_redirects=True)
    assert response.text == "[('message', 'saved'), ('warning', 'careful')]"
    assert client.get("/show").text == "[]"
    # Reading the flashes emptied the session, so, as in Flask, its cookie is gone.
    assert client.get_cookie("session") is None


def test_flash_survives_other_keys(app: Flask) -> None:
    """Flashes and other session keys live side by side; showing flashes keeps the rest."""

    @app.get("/save")
    def save() -> t.Any:
        session["cart"] = ["apple"]
        flash("added")
        return redirect("/show")

    @app.get("/show")
    def show() -> str:
        return f"{get_flashed_messages()} {session.get('cart')}"

    client = app.test_client()
    assert client.get("/save", follow_redirects=True).text == "['added'] ['apple']"
    assert client.get("/show").text == "[] ['apple']"


@pytest.fixture
def dump_app(app: Flask) -> Flask:
    @app.get("/dump")
    def dump() -> str:
        return repr(sorted((key, value) for key, value in session.items()))

    @app.get("/add/<key>/<value>")
    def add(key: str, value: str) -> str:
        session[key] = value
        return "ok"

    return app


def test_session_transaction_values_reach_requests(dump_app: Flask) -> None:
    """Values set in session_transaction() are seen, with their types, by the next request."""
    client = dump_app.test_client()
    with client.session_transaction() as sess:
        assert len(sess) == 0
        sess["cart"] = ["apple", ("pear", 2)]
        sess["n"] = 3
    assert client.get("/dump").text == repr([("cart", ["apple", ("pear", 2)]), ("n", 3)])
    with client.session_transaction() as sess:
        del sess["n"]
    assert client.get("/dump").text == repr([("cart", ["apple", ("pear", 2)])])


def test_view_changes_seen_in_session_transaction(dump_app: Flask) -> None:
    """What a view writes is seen in session_transaction(), and changes made there merge with it."""
    client = dump_app.test_client()
    client.get("/add/a/1")
    with client.session_transaction() as sess:
        assert dict(sess) == {"a": "1"}
        sess["b"] = "2"
    client.get("/add/c/3")
    with client.session_transaction() as sess:
        assert dict(sess) == {"a": "1", "b": "2", "c": "3"}


def test_session_transaction_login(login_app: Flask) -> None:
    """Logging a user in through session_transaction(), as Flask-Login's docs suggest, works."""
    client = login_app.test_client()
    with client.session_transaction() as sess:
        sess["_user_id"] = "lena"
    # Not fresh: "basic" protection finds no session identifier (_id), as it would with Flask's session.
    assert client.get("/me").text == "lena fresh=False"
    assert [info.user for info in manager_of(login_app).sessions_of("lena")] == ["lena"]


# Flask behaviours users rely on ---------------------------------------------------------


@pytest.mark.parametrize("config_permanent", [False, True])
def test_new_session_is_empty(make_app: t.Callable[..., Flask], config_permanent: bool) -> None:
    """A new session has no keys, with SESSION_PERMANENT=True and after session.permanent = True."""
    app = make_app(SESSION_PERMANENT=config_permanent)

    @app.get("/fresh")
    def fresh() -> str:
        before = f"{len(session)} {list(session)} {session.permanent}"
        session.permanent = True
        return f"{before} | {len(session)} {list(session)} {dict(session)}"

    @app.get("/keep")
    def keep() -> str:
        session.permanent = True
        session["a"] = 1
        return "ok"

    @app.get("/keys")
    def keys() -> str:
        return f"{sorted(session)} {session.permanent}"

    client = app.test_client()
    assert client.get("/fresh").text == f"0 [] {config_permanent} | 0 [] {{}}"
    client.get("/keep")
    assert client.get("/keys").text == "['a'] True"
    with client.session_transaction() as sess:
        assert dict(sess) == {"a": 1}
        assert sess.permanent is True


def test_untouched_request_sends_no_cookie_or_vary(make_app: t.Callable[..., Flask]) -> None:
    """A request that never touches session gets no Set-Cookie and no Vary, even for a permanent, stale session."""
    app = make_app(SESSION_PERMANENT=True, SESSION_REFRESH_EACH_REQUEST=True)
    clock = frozen_clock(app)

    @app.get("/set")
    def set_value() -> str:
        session["a"] = 1
        return "ok"

    @app.get("/plain")
    def plain() -> str:
        return "plain"

    client = app.test_client()
    response = client.get("/plain")
    assert "Set-Cookie" not in response.headers
    assert "Vary" not in response.headers
    assert client.get("/set").headers["Vary"] == "Cookie"
    clock[0] += 86400  # well past the refresh interval
    response = client.get("/plain")
    assert "Set-Cookie" not in response.headers
    assert "Vary" not in response.headers


def test_clear_deletes_cookie_like_flask(make_app: t.Callable[..., Flask]) -> None:
    """session.clear() deletes the cookie with the same header Flask's own session sends, and the record."""
    cookie_config = {
        "SESSION_COOKIE_DOMAIN": "example.com",
        "SESSION_COOKIE_PATH": "/app",
        "SESSION_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Strict",
        "SESSION_COOKIE_PARTITIONED": True,
    }
    flask_app = Flask(__name__)
    flask_app.config.update(SECRET_KEY="compat-test-secret", **cookie_config)
    satchel_app = make_app(**cookie_config)
    deletions = []
    for app in (flask_app, satchel_app):

        @app.get("/app/set")
        def set_value() -> str:
            session["a"] = 1
            return "ok"

        @app.get("/app/clear")
        def clear() -> str:
            session.clear()
            return "ok"

        client = app.test_client()
        client.get("https://example.com/app/set")
        assert client.get_cookie("session", domain="example.com", path="/app") is not None
        deletions.append(set_cookie_headers(client.get("https://example.com/app/clear")))
        assert client.get_cookie("session", domain="example.com", path="/app") is None
    assert deletions[1] == deletions[0]
    assert len(deletions[0]) == 1
    assert manager_of(satchel_app).count() == 0


def test_clear_then_set_keeps_only_new_values(dump_app: Flask) -> None:
    """clear() followed by new values leaves exactly the new values, as in Flask."""

    @dump_app.get("/reset")
    def reset() -> str:
        session.clear()
        session["b"] = 2
        return "ok"

    client = dump_app.test_client()
    client.get("/add/a/1")
    client.get("/reset")
    assert client.get("/dump").text == "[('b', 2)]"


def _flags() -> str:
    # Read on the request's session object itself, as Flask's own tests do: through the
    # ``flask.session`` proxy, Flask (3.1.3+) marks the session accessed on any use.
    sess = t.cast(ServerSession, request_ctx._session)
    return f"accessed={sess.accessed} modified={sess.modified}"


def test_session_accessed_and_modified(dump_app: Flask) -> None:
    """accessed and modified read as in Flask: untouched, read, written, changed in place."""
    seen: dict[str, str] = {}

    @dump_app.after_request
    def record(response: t.Any) -> t.Any:
        seen[request.path] = _flags()
        return response

    @dump_app.get("/nothing")
    def nothing() -> str:
        return ""

    @dump_app.get("/read")
    def read() -> str:
        return repr(session.get("a"))

    @dump_app.get("/nested")
    def nested() -> str:
        session.setdefault("items", []).append("x")
        return ""

    @dump_app.get("/nested-flagged")
    def nested_flagged() -> str:
        session["items"].append("y")
        session.modified = True  # the Flask idiom for in-place changes keeps working
        return ""

    client = dump_app.test_client()
    client.get("/nothing")
    assert seen["/nothing"] == "accessed=False modified=False"
    client.get("/read")
    assert seen["/read"] == "accessed=True modified=False"
    client.get("/add/a/1")
    assert seen["/add/a/1"] == "accessed=True modified=True"
    client.get("/read")
    assert seen["/read"] == "accessed=True modified=False"
    client.get("/nothing")
    assert seen["/nothing"] == "accessed=False modified=False"
    client.get("/nested")
    assert seen["/nested"] == "accessed=True modified=True"
    client.get("/nested-flagged")
    assert seen["/nested-flagged"] == "accessed=True modified=True"
    assert client.get("/dump").text == repr([("a", "1"), ("items", ["x", "y"])])


def test_session_new(dump_app: Flask) -> None:
    """session.new is True until the session is stored, then False on later requests."""

    @dump_app.get("/new")
    def new() -> str:
        return str(session.new)

    @dump_app.get("/new-after-write")
    def new_after_write() -> str:
        session["w"] = 1
        return str(session.new)

    client = dump_app.test_client()
    assert client.get("/new").text == "True"
    assert client.get("/new-after-write").text == "True"
    assert client.get("/new").text == "False"
    other = dump_app.test_client()
    other.set_cookie("session", "A" * 43)  # an id the store does not hold
    assert other.get("/new").text == "True"


def test_session_new_is_right_on_first_look(dump_app: Flask) -> None:
    """session.new read before any other use of the session is False for a stored session."""

    @dump_app.get("/first-look")
    def first_look() -> str:
        return str(t.cast(ServerSession, request_ctx._session).new)

    client = dump_app.test_client()
    client.get("/add/a/1")
    assert client.get("/first-look").text == "False"
