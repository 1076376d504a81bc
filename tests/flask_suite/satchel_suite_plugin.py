"""A pytest plugin that runs an extension's own test-suite with its apps switched to Flask-Satchel.

An extension's tests (Flask-Login's, Flask-Security's) build their apps with
``Flask(...)`` and then configure them, in fixtures and test bodies we must
not edit. A user switching to Flask-Satchel calls ``Session(app)`` once the
app is configured, so this plugin does the same at the last moment it can:
the first time the app opens a request context (``Flask.request_context``,
which test clients, ``test_request_context`` and ``session_transaction`` all
go through), with the config the test gave the app by then. An app that never
serves a request never needs a session.

Configured by environment variables, set by ``tests/suites.py``'s callers:

- ``SATCHEL_SUITE_CONFIG``: JSON of the config keys that select the store
  (``{"SESSION_TYPE": "memory"}``); unset or empty for the baseline run,
  which leaves Flask's own cookie session in place and only counts apps.
  A ``SESSION_KEY_PREFIX`` in it is made unique per app (``<prefix><n>:``),
  so the apps of one run never share sessions or per-user indexes on a shared
  Redis, and the caller removes every key under the prefix afterwards;
- ``SATCHEL_SUITE_TMP``: a directory for the apps' instance folders (where the
  SQLite store keeps its database), one per app.

Flask-Security's ``SECURITY_CACHE_CONTROL = None`` asks for no
``Cache-Control`` header at all; an app configured so also gets
``SESSION_NO_STORE = False``, the other half of the pair
``docs/flask-session-config.md`` tells Flask-Security users to set.

Some of Flask-Security's tests read the session's contents out of the
cookie, decoding Flask's signed JSON by hand in two helpers of their
``tests/test_utils.py`` (:data:`COOKIE_READERS`). A server-side session's
cookie holds only its id, so those helpers find nothing. With
``SATCHEL_SUITE_COOKIE_READERS=store`` they read the same session through the
app's session interface instead (the cookie they were given, opened in a test
request context), so the tests check Flask-Security's session state on our
stores; with ``spy`` they run unchanged and count how often they found
nothing, to show that is the only reason those tests fail.

Apps that bring their own ``session_interface`` are left alone. Each test
records, as junit properties, how many apps opened a request
(``request_apps``), how many of those ran on Flask-Satchel
(``satchel_apps``), and how many cookie reads were served from the store or
came back empty (``cookie_reads``), so the caller can tell a real run from one
where the plugin did nothing.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
import json
import os
import tempfile
import typing as t
import weakref

import flask
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.http import parse_cookie
from werkzeug.test import TestResponse

from flask_satchel import Session

if t.TYPE_CHECKING:
    from flask.ctx import RequestContext

    from flask_satchel import SessionManager

#: The suite's helpers that decode Flask's session cookie, and what each is given.
COOKIE_READERS = {"tests.test_utils": {"get_session": "response", "get_existing_session": "client"}}

_original_init = Flask.__init__
_original_request_context = Flask.request_context
_signature = inspect.signature(_original_init)

#: Apps already seen opening a request, switched or left alone.
_seen: weakref.WeakSet[Flask] = weakref.WeakSet()
#: The app that opened the latest request: the one a response came from.
_last_app: Flask | None = None
#: Apps that opened a request during the running test.
_request_apps = 0
#: The managers of the apps switched to Flask-Satchel: their stores are closed when the test ends.
_managers: list[SessionManager] = []
#: Cookie reads in the running test: served from the store, or (spying) that found nothing.
_cookie_reads = 0
_app_numbers = itertools.count()


def _config() -> dict[str, t.Any]:
    return t.cast("dict[str, t.Any]", json.loads(os.environ.get("SATCHEL_SUITE_CONFIG") or "{}"))


def _satchel_init(self: Flask, *args: t.Any, **kwargs: t.Any) -> None:
    bound = _signature.bind(self, *args, **kwargs)
    if bound.arguments.get("instance_path") is None:
        # An instance folder per app, so no test sees another test's sessions.
        bound.arguments["instance_path"] = tempfile.mkdtemp(prefix="app-", dir=os.environ["SATCHEL_SUITE_TMP"])
    _original_init(*bound.args, **bound.kwargs)


def _switch(app: Flask) -> None:
    """``Session(app)``, as the app's author would call it once the app is configured."""
    global _request_apps
    _seen.add(app)
    _request_apps += 1
    config = _config()
    if not config or app.session_interface is not Flask.session_interface:
        return  # the baseline, or the test brings its own interface: that is what it tests
    prefix = config.pop("SESSION_KEY_PREFIX", None)
    if prefix is not None:
        config["SESSION_KEY_PREFIX"] = f"{prefix}{next(_app_numbers)}:"
    if "SESSION_NO_STORE" not in config and app.config.get("SECURITY_CACHE_CONTROL", ...) is None:
        config["SESSION_NO_STORE"] = False  # an explicit value in SATCHEL_SUITE_CONFIG wins
    app.config.update(config)
    _managers.append(Session().init_app(app))


def _satchel_request_context(self: Flask, environ: t.Any) -> RequestContext:
    global _last_app
    if self not in _seen:
        _switch(self)
    _last_app = self
    return _original_request_context(self, environ)


def _read_through_interface(app: Flask, value: str) -> dict[str, t.Any]:
    """The session a cookie value names, as the app's session interface opens it for a request."""
    global _cookie_reads
    _cookie_reads += 1
    name = app.session_interface.get_cookie_name(app)
    with app.test_request_context(headers={"Cookie": f"{name}={value}"}):
        return dict(flask.session)


def _session_of_response(response: TestResponse) -> dict[str, t.Any] | None:
    """``get_session(response)``: the session the client holds once it has this response.

    Flask's cookie session re-sends its cookie whenever the session changes,
    so the suite looks for it on the response. A server-side session's cookie
    names the session and is sent only when that changes: a response that
    sets none leaves the client on the session its request named.
    """
    assert _last_app is not None
    name = _last_app.session_interface.get_cookie_name(_last_app)
    value = next(
        (c[name] for c in map(parse_cookie, response.headers.getlist("Set-Cookie")) if name in c),
        response.request.cookies.get(name),
    )
    return _read_through_interface(_last_app, value) if value else None


def _session_of_client(client: FlaskClient) -> dict[str, t.Any] | None:
    """``get_existing_session(client)``: the session of the client's cookie, or None if it holds none."""
    app = client.application
    cookie = client.get_cookie(app.session_interface.get_cookie_name(app))
    return _read_through_interface(app, cookie.value) if cookie else None


_STORE_READERS = {"response": _session_of_response, "client": _session_of_client}


def _spy(reader: t.Callable[[t.Any], t.Any]) -> t.Callable[[t.Any], t.Any]:
    """The suite's own reader, counting the reads that found no session in the cookie."""

    @functools.wraps(reader)
    def spying(arg: t.Any) -> t.Any:
        global _cookie_reads
        found = reader(arg)
        if found is None:
            _cookie_reads += 1
        return found

    return spying


def pytest_sessionstart(session: pytest.Session) -> None:
    """Swap the suite's cookie readers, once its conftest has made its helper modules importable."""
    mode = os.environ.get("SATCHEL_SUITE_COOKIE_READERS")
    if not mode:
        return
    for module_name, readers in COOKIE_READERS.items():
        module = importlib.import_module(module_name)
        for name, given in readers.items():
            replacement = _STORE_READERS[given] if mode == "store" else _spy(getattr(module, name))
            setattr(module, name, replacement)


def pytest_configure(config: pytest.Config) -> None:
    Flask.__init__ = _satchel_init  # type: ignore[method-assign]
    Flask.request_context = _satchel_request_context  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    Flask.__init__ = _original_init  # type: ignore[method-assign]
    Flask.request_context = _original_request_context  # type: ignore[method-assign]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> t.Iterator[None]:
    global _request_apps, _cookie_reads
    yield
    item.user_properties.append(("request_apps", _request_apps))
    item.user_properties.append(("satchel_apps", len(_managers)))
    item.user_properties.append(("cookie_reads", _cookie_reads))
    _request_apps = _cookie_reads = 0
    while _managers:
        _managers.pop().close()
