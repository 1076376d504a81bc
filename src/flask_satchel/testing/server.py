"""A real threaded WSGI server for an app, and a GET over a real socket.

Flask's test client runs one request at a time in the calling thread; these
let a test send overlapping requests, as browsers do.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import typing as t

from flask import Flask
from werkzeug.serving import make_server

__all__ = ["LiveResponse", "http_get", "live_server"]


@contextlib.contextmanager
def live_server(app: Flask) -> t.Iterator[tuple[str, int]]:
    """Serve ``app`` on a free loopback port with a real threaded WSGI server; yields ``(host, port)``."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", server.port)
    finally:
        server.shutdown()
        thread.join(5)


class LiveResponse(t.NamedTuple):
    """What :func:`http_get` read back."""

    #: The HTTP status code.
    status: int
    #: The body, decoded as UTF-8.
    body: str
    #: The session cookie's value if the response set one, else None.
    cookie: str | None


def http_get(
    address: tuple[str, int], path: str, cookie: str | None = None, *, cookie_name: str = "session"
) -> LiveResponse:
    """GET ``path`` from ``address`` over a new connection, sending ``cookie`` as the session cookie if given."""
    conn = http.client.HTTPConnection(*address, timeout=30)
    try:
        conn.request("GET", path, headers={"Cookie": f"{cookie_name}={cookie}"} if cookie else {})
        response = conn.getresponse()
        body = response.read().decode()
        value = None
        for set_cookie in response.headers.get_all("Set-Cookie") or ():
            if set_cookie.startswith(f"{cookie_name}="):
                value = set_cookie.split(";", 1)[0].partition("=")[2]
        return LiveResponse(response.status, body, value)
    finally:
        conn.close()
