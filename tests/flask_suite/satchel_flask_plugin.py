"""A pytest plugin that runs Flask's own test-suite with Flask-Satchel installed.

Flask's tests build their apps with ``Flask(...)`` directly, mostly through a
fixture we must not edit. Wrapping ``Flask.__init__`` is the one place where
every one of those apps can be given Flask-Satchel before the test touches it,
so the tests run unchanged against our session interface.

Configured by environment variables, set by ``tests/test_compat_flask.py``:

- ``SATCHEL_FLASK_TYPE``: the ``SESSION_TYPE`` every app gets;
- ``SATCHEL_FLASK_TMP``: a directory for the apps' instance folders (the
  SQLite database and the filesystem store live there);
- ``SATCHEL_FLASK_CONFIG`` (optional): JSON of extra config keys, to show
  that a test which differs by design passes once the setting behind the
  difference is turned.

Apps whose class brings its own ``session_interface`` (Flask tests of custom
interfaces) are left alone. Each test records, as a junit property, how many
apps it ran on Flask-Satchel, so the caller can tell a real run from one where
the plugin did nothing.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
import typing as t

import _pytest.monkeypatch
import pytest
from _pytest.compat import NOTSET
from flask import Flask

from flask_satchel import Session

if t.TYPE_CHECKING:
    from flask_satchel import SessionManager

# Flask's conftest uses ``_pytest.monkeypatch.notset``, which pytest 9 renamed
# to ``_pytest.compat.NOTSET``; restore the old name so it runs unchanged.
if not hasattr(_pytest.monkeypatch, "notset"):
    _pytest.monkeypatch.notset = NOTSET  # type: ignore[attr-defined]

_original_init = Flask.__init__
_signature = inspect.signature(_original_init)
#: The managers of the apps made during the running test: their stores are closed when it ends.
_managers: list[SessionManager] = []


def _satchel_init(self: Flask, *args: t.Any, **kwargs: t.Any) -> None:
    bound = _signature.bind(self, *args, **kwargs)
    if bound.arguments.get("instance_path") is None:
        # An instance folder per app, so no test sees another test's sessions.
        bound.arguments["instance_path"] = tempfile.mkdtemp(prefix="app-", dir=os.environ["SATCHEL_FLASK_TMP"])
    _original_init(*bound.args, **bound.kwargs)
    if type(self).session_interface is not Flask.session_interface:
        return  # the test brings its own interface: that is what it tests
    self.config["SESSION_TYPE"] = os.environ["SATCHEL_FLASK_TYPE"]
    self.config.update(json.loads(os.environ.get("SATCHEL_FLASK_CONFIG") or "{}"))
    _managers.append(Session().init_app(self))


def pytest_configure(config: pytest.Config) -> None:
    Flask.__init__ = _satchel_init  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    Flask.__init__ = _original_init  # type: ignore[method-assign]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> t.Iterator[None]:
    yield
    item.user_properties.append(("satchel_apps", len(_managers)))
    while _managers:
        _managers.pop().close()
