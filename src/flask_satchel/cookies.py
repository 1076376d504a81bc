"""The session cookie: finding it in a request, and setting or deleting it on a response.

Flask's cookie keys (``SESSION_COOKIE_NAME``, ``…_DOMAIN``, ``…_PATH``,
``…_SECURE``, ``…_HTTPONLY``, ``…_SAMESITE``, ``…_PARTITIONED``) are read on
every request through the interface's ``get_cookie_*`` hooks, as Flask reads
them, so an app may change them at run time or override a hook. A cookie is
deleted with the attributes it was set with, or browsers keep it.
"""

from __future__ import annotations

import datetime as dt
import typing as t

from werkzeug.http import dump_cookie

if t.TYPE_CHECKING:
    from flask import Flask, Request, Response
    from flask.sessions import SessionInterface

    from .settings import Settings


class Expiry(t.Protocol):
    """What dates a cookie: a ``Record`` or a ``Change``."""

    expires_at: float
    permanent: bool


class Cookies:
    """Sets and deletes one app's session cookie, with Flask's attributes read per request."""

    def __init__(self, hooks: SessionInterface, settings: Settings) -> None:
        #: The interface whose ``get_cookie_*`` hooks say the cookie's name and attributes.
        self.hooks = hooks
        self.settings = settings

    def name(self, app: Flask) -> str:
        return self.hooks.get_cookie_name(app)

    def attributes(self, app: Flask, request: Request | None) -> dict[str, t.Any]:
        """Flask's cookie settings; ``SESSION_COOKIE_SECURE="auto"`` follows the request's scheme."""
        hooks = self.hooks
        secure = app.config["SESSION_COOKIE_SECURE"]
        if secure == "auto":
            secure = request is not None and request.is_secure
        return {
            "domain": hooks.get_cookie_domain(app),
            "path": hooks.get_cookie_path(app),
            "secure": bool(secure),
            "httponly": hooks.get_cookie_httponly(app),
            "samesite": hooks.get_cookie_samesite(app) or "Lax",
            "partitioned": hooks.get_cookie_partitioned(app),
        }

    def header(self, app: Flask, request: Request | None, value: str, expiry: Expiry, max_size: int) -> str:
        """The ``Set-Cookie`` value, as ``Response.set_cookie`` would make it.

        Dated for a permanent session, a browser-session cookie otherwise.
        """
        expires = dt.datetime.fromtimestamp(expiry.expires_at, dt.timezone.utc) if expiry.permanent else None
        attributes = self.attributes(app, request)
        return dump_cookie(self.name(app), value, expires=expires, max_size=max_size, **attributes)

    def set(self, app: Flask, request: Request | None, response: Response, value: str, expiry: Expiry) -> None:
        """Send the cookie with ``value`` on ``response``."""
        self.send(response, self.header(app, request, value, expiry, response.max_cookie_size))

    def send(self, response: Response, header: str) -> None:
        """Add a ``Set-Cookie`` header made by :meth:`header`."""
        response.headers.add("Set-Cookie", header)
        self.no_store(response)

    def delete(self, app: Flask, request: Request | None, response: Response, *, destroyed: bool) -> None:
        """Tell the browser to drop the cookie; after ``destroy()``, ``SESSION_CLEAR_SITE_DATA`` clears the rest."""
        response.delete_cookie(self.name(app), **self.attributes(app, request))
        self.no_store(response)
        if destroyed and self.settings.clear_site_data:
            response.headers["Clear-Site-Data"] = '"cookies"'

    def no_store(self, response: Response) -> None:
        """A response that hands out or ends a session must not be kept by a shared cache.

        A ``Cache-Control`` the view or another extension set is theirs to
        decide and is left alone; ``SESSION_NO_STORE = False`` sends none.
        """
        if self.settings.no_store and "Cache-Control" not in response.headers:
            response.cache_control.no_store = True


def cookie_value(request: Request, name: str) -> str | None:
    """The first cookie called ``name``, found in the raw header.

    Werkzeug's ``request.cookies`` parses every cookie of the request into a
    MultiDict on the path of every request; a session id is plain URL-safe
    text that splitting the header finds for a fraction of that (see
    ``bench/README.md``). The rules are Werkzeug's, and a property test holds
    the two to the same answers: pairs are separated by ";" alone (a comma
    belongs to the value, RFC 6265), space and tab around names and values
    are dropped, and a pair whose value has a space or tab inside is skipped.
    A header with a quoted value goes to Werkzeug's parser itself. There is
    no regular expression: ``re`` walks a 2 KB sealed cookie one character at
    a time, where ``str`` methods do not.
    """
    header: str | None = request.environ.get("HTTP_COOKIE")
    if not header:
        return None
    if '"' in header:
        return request.cookies.get(name)
    for pair in header.split(";"):
        key, _, value = pair.partition("=")
        if key.strip(" \t") == name:
            value = value.strip(" \t")
            if " " not in value and "\t" not in value:  # else not a token: Werkzeug skips the pair
                return value
    return None


def vary_cookie(response: Response) -> None:
    """Add ``Vary: Cookie`` without parsing the header into a set when it is absent."""
    # getlist: Headers.get raises and catches an exception when the header is absent.
    vary = response.headers.getlist("Vary")
    if not vary:
        response.headers.add("Vary", "Cookie")
    elif not any("cookie" in value.lower() for value in vary):
        response.vary.add("Cookie")
