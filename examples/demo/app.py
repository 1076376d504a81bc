"""The classic Flask login demo, on Flask-Satchel's server-side sessions.

Run it with ``make demo`` or ``flask --app examples/demo/app.py run``. It
keeps sessions in SQLite under ``examples/demo/instance/`` (the default
store), and shows the four things a login needs to get right:

- log in: put the user in the session, then ``current_session.regenerate()`` so an
  id planted before the login (session fixation) is worthless;
- log out: ``current_session.destroy()``, which removes the record on the server,
  not only the cookie in this browser;
- "your sessions": list the user's other devices and end any of them;
- every POST carries a per-session CSRF token, so another site cannot make
  the browser log in, log out or change the cart.

A browser whose session was ended from another device is told so. A new
session cannot say that by itself: to the store, a revoked session and one
that never existed look the same (no record), and the cookie that named it
is just an id that names nothing. So at login the demo also sets a plain
cookie, ``demo_signed_in``, holding the session's *handle* (public, not a
credential: it logs nobody in), and deletes it on logout. A request that
comes with that cookie but no logged-in session was signed out behind its
back; the demo remembers the handles it revoked (through the
``session_revoked`` signal), so it can say "from another device" when that
is what happened, and "your session ended" otherwise (it expired, or was
revoked by ``flask session revoke`` in another process).
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
import secrets
import typing as t

from flask import Flask, current_app, flash, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.wrappers import Response

from flask_satchel import Session, current_session
from flask_satchel.signals import session_revoked

HERE = os.path.dirname(os.path.abspath(__file__))

#: Used when the environment sets no SECRET_KEY. It is public (it is in this
#: file), so it is only good for trying the demo on your own machine.
DEV_SECRET_KEY = "dev-only-not-secret-set-SECRET_KEY-in-production"

#: The session key that names the user; Flask-Satchel indexes sessions by it.
USER_KEY = "username"
#: The session key that holds this session's CSRF token.
CSRF_KEY = "_csrf"
#: Keep the cart and the names small: the demo is public-facing by nature.
MAX_NAME = 40
MAX_CART = 20
#: The cookie that remembers a login (by the session's public handle) to tell a
#: browser that was signed out elsewhere from one that never logged in.
SIGNED_IN_COOKIE = "demo_signed_in"
#: How many revoked handles the demo remembers, per app, to word the message.
MAX_REVOKED = 1000
#: The flash category of the signed-out notice (the pages style it apart).
SIGNED_OUT = "signed-out"


class FormExpired(BadRequest):
    """A POST without this session's CSRF token: a forged form, or one from a session that has ended."""

    description = "The form expired or did not come from this site. Go back, reload the page and try again."


def csrf_token() -> str:
    """This session's CSRF token, created the first time a form needs one.

    The token lives in the server-side session, so it never leaves the
    server except inside our own pages; a forged form from another site
    cannot know it.
    """
    token = current_session.get(CSRF_KEY)
    if not isinstance(token, str):
        token = current_session[CSRF_KEY] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Refuse any POST whose form does not carry this session's token."""
    if request.method != "POST":
        return
    expected = current_session.get(CSRF_KEY)
    sent = request.form.get("csrf_token", "")
    if not isinstance(expected, str) or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise FormExpired()


def _revoked(app: Flask) -> dict[str, None]:
    """The handles this app revoked, oldest first (a dict as an ordered set)."""
    return t.cast("dict[str, None]", app.extensions.setdefault("demo_revoked", {}))


def remember_revoked(sender: Flask, handle: str, **extra: t.Any) -> None:
    """Note a handle the manager ended, so its browser can be told it was signed out from elsewhere."""
    revoked = _revoked(sender)
    revoked[handle] = None
    while len(revoked) > MAX_REVOKED:
        del revoked[next(iter(revoked))]


def notice_signed_out() -> None:
    """Tell a browser that was logged in, and no longer is without having logged out, what happened."""
    handle = request.cookies.get(SIGNED_IN_COOKIE)
    if handle is None or request.endpoint == "static" or current_session.get(USER_KEY) is not None:
        return
    g.forget_login = True
    revoked = _revoked(current_app)
    if handle in revoked:
        del revoked[handle]
        flash("You were signed out from another device.", SIGNED_OUT)
    else:
        flash("You were signed out: your session ended. Please log in again.", SIGNED_OUT)


def remember_login(response: Response) -> Response:
    """Set or delete the login cookie as this request logged in, out, or was found signed out."""
    if g.get("logged_in_as") is not None:
        response.set_cookie(SIGNED_IN_COOKIE, g.logged_in_as, httponly=True, samesite="Lax")
    elif g.get("forget_login"):
        response.delete_cookie(SIGNED_IN_COOKIE, httponly=True, samesite="Lax")
    return response


#: (marker in the user agent, name), first match wins: Edge and Opera also say "Chrome".
_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"), ("Safari/", "Safari"))
_SYSTEMS = (
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Android", "Android"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
)


def device(user_agent: str | None) -> str:
    """A readable "Browser on System" from a user agent string, for the sessions page."""
    if not user_agent:
        return "unknown device"
    browser = next((name for marker, name in _BROWSERS if marker in user_agent), "a browser")
    system = next((name for marker, name in _SYSTEMS if marker in user_agent), None)
    return f"{browser} on {system}" if system else browser


def when(value: dt.datetime) -> str:
    """A timestamp the way a person reads it on the sessions page."""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def create_app(config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Build the demo app; ``config`` overrides the defaults (tests use it)."""
    app = Flask(__name__, root_path=HERE, instance_path=os.path.join(HERE, "instance"))
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY") or DEV_SECRET_KEY,
        SESSION_USER_KEY=USER_KEY,
        SESSION_TRACK_CLIENT=True,
    )
    app.config.update(config or {})
    if app.config["SECRET_KEY"] == DEV_SECRET_KEY and not app.testing:
        app.logger.warning("Using the demo's built-in development SECRET_KEY; set SECRET_KEY for anything real.")
    Session(app)
    # In this order: a stale form after a revocation says why it is stale.
    app.before_request(notice_signed_out)
    app.before_request(check_csrf)
    app.after_request(remember_login)
    session_revoked.connect(remember_revoked, sender=app)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.filters["when"] = when
    app.jinja_env.filters["device"] = device

    @app.errorhandler(HTTPException)
    def error_page(e: HTTPException) -> Response:
        """The demo's own page for an HTTP error, with the status and headers (say, 405's Allow) it had."""
        response = e.get_response()
        title = "This form has expired" if isinstance(e, FormExpired) else f"{e.code} {e.name}"
        response.set_data(render_template("error.html", title=title, error=e))
        response.content_type = "text/html; charset=utf-8"
        return response

    @app.get("/")
    def index() -> str:
        return render_template("index.html", user=current_session.get(USER_KEY), cart=current_session.get("cart", []))

    @app.route("/login", methods=["GET", "POST"])
    def login() -> ResponseReturnValue:
        if request.method == "POST":
            name = request.form.get("username", "").strip()
            if not name or len(name) > MAX_NAME:
                flash(f"Please enter a name of 1 to {MAX_NAME} characters.", "error")
                return render_template("login.html"), 400
            current_session[USER_KEY] = name
            # A new id for the logged-in session: whoever knew the old one
            # (it may have been planted on this browser) knows nothing now.
            current_session.regenerate()
            g.logged_in_as = current_session.handle
            flash(f"Welcome, {name}.")
            return redirect(url_for("index"))
        return render_template("login.html")

    @app.post("/logout")
    def logout() -> Response:
        # destroy() deletes the record on the server: a copy of the cookie
        # taken from this browser stops working too.
        current_session.destroy()
        g.forget_login = True
        return redirect(url_for("index"))

    @app.get("/cart")
    def cart() -> str:
        return render_template("cart.html", cart=current_session.get("cart", []))

    @app.post("/cart/add")
    def cart_add() -> Response:
        item = request.form.get("item", "").strip()[:MAX_NAME]
        items = current_session.setdefault("cart", [])
        if item and len(items) < MAX_CART:
            items.append(item)  # a change inside the list is saved without current_session.modified
        elif item:
            flash(f"The cart holds at most {MAX_CART} items.", "error")
        return redirect(url_for("cart"))

    @app.post("/cart/remove")
    def cart_remove() -> Response:
        items = current_session.get("cart", [])
        index = request.form.get("index", type=int)
        if index is not None and 0 <= index < len(items):
            del items[index]
        return redirect(url_for("cart"))

    @app.get("/sessions")
    def sessions() -> str | Response:
        user = current_session.get(USER_KEY)
        if user is None:
            return redirect(url_for("login"))
        mine = app.extensions["satchel"].sessions_of(user)
        return render_template("sessions.html", user=user, sessions=mine, current=current_session.handle)

    @app.post("/sessions/revoke")
    def revoke() -> Response:
        user = current_session.get(USER_KEY)
        if user is None:
            return redirect(url_for("login"))
        manager = app.extensions["satchel"]
        handle = request.form.get("handle", "")
        if handle == current_session.handle:
            current_session.destroy()
            g.forget_login = True
            return redirect(url_for("index"))
        # Only the user's own sessions: a handle is not secret, so knowing
        # one must not be enough to end somebody else's current_session.
        if handle in {info.handle for info in manager.sessions_of(user)}:
            manager.revoke(handle)
            flash("That session is logged out.")
        return redirect(url_for("sessions"))

    @app.post("/sessions/revoke-others")
    def revoke_others() -> Response:
        user = current_session.get(USER_KEY)
        if user is None:
            return redirect(url_for("login"))
        ended = app.extensions["satchel"].revoke_user(user, keep=current_session.handle)
        flash(f"Logged out {ended} other session{'s' if ended != 1 else ''}.")
        return redirect(url_for("sessions"))

    return app


app = create_app()
