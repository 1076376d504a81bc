"""Helpers for testing an app that uses Flask-Satchel, and a store of your own.

Importing this module needs nothing beyond Flask-Satchel itself (pytest is not
required):

- :func:`make_app`: a small app on any store, with views that set, read,
  regenerate and destroy the session (``/set/<key>/<value>``, ``/get/<key>``,
  ``/dump``, ``/login/<user>``, ...).
- :func:`live_server` and :func:`http_get`: the app behind a real threaded
  server on a free loopback port, and a GET over a real socket, for tests
  that need overlapping requests (Flask's test client runs one at a time).
- :class:`CountingStore`: wraps a store and records each call, to check how
  much store I/O a request does.

``SESSION_TYPE = "memory"`` gives tests real session semantics with no
server or file.

The contract test-suites that Flask-Satchel runs against every store
(``StoreContract``, ``SessionContract``, ``AppContract``) are pytest test
classes and live in :mod:`flask_satchel.testing.contract`, which needs pytest
(``pip install 'flask-satchel[testing]'``)::

    from flask_satchel.testing import http_get, live_server, make_app

    def test_overlapping_requests(tmp_path):
        app = make_app({"SESSION_TYPE": "memory"}, tmp_path)
        with live_server(app) as address:
            status, _, cookie = http_get(address, "/set/a/1")
            assert http_get(address, "/get/a", cookie).body == "'1'"
"""

from .app import make_app as make_app
from .counting import CountingStore as CountingStore
from .server import LiveResponse as LiveResponse
from .server import http_get as http_get
from .server import live_server as live_server

__all__ = ["CountingStore", "LiveResponse", "http_get", "live_server", "make_app"]
