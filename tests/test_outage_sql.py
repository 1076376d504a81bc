"""The SQL store when its database goes away, refuses, or hangs, and comes back.

The shared database servers are never stopped: the app talks to them through
a small loopback TCP relay written here, which can refuse connections (as a
stopped server does) or stall them (as a frozen server or a silent network
does). The database behind the relay is the real one.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
import typing as t
import uuid

import pytest
import sqlalchemy as sa
from conftest import add_value_views, require
from flask import Flask

from flask_satchel import Session
from flask_satchel.stores.sql import SQLStore

TARGETS = {
    "postgresql": ("postgresql+psycopg", 5432, "postgres@", "/test"),
    "mariadb": ("mysql+pymysql", 3306, "root@", "/test"),
}


class Relay:
    """Forwards loopback TCP connections to ``upstream``; can refuse or stall them."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            #: The loopback port the app connects to.
            self.port: int = probe.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None

    def _spawn(self, target: t.Callable[..., None], *args: t.Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def start(self) -> None:
        """Listen again (after :meth:`refuse`) and let data flow (after :meth:`stall`)."""
        self._flowing.set()
        if self._listener is None:
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
            self._spawn(self._accept, listener)

    def refuse(self) -> None:
        """Act as a stopped server: close the port and drop every open connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def stall(self) -> None:
        """Act as a frozen server: accept connections, answer nothing."""
        self._flowing.clear()

    def close(self) -> None:
        self._stopped.set()
        self.refuse()
        for thread in self._threads:
            thread.join(5)

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                ready, _, _ = select.select([listener], [], [], 0.05)
                if not ready:
                    continue
                client, _ = listener.accept()
            except (OSError, ValueError):  # closed by refuse()
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            self._spawn(self._pump, client, server)
            self._spawn(self._pump, server, client)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while not self._stopped.is_set():
                if not self._flowing.wait(0.05):
                    continue  # stalled: leave the bytes where they are
                ready, _, _ = select.select([source], [], [], 0.05)
                if not ready:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                # A chunk that arrived as the relay stalled is held too: else
                # one exchange already in flight would still get through.
                while not self._flowing.wait(0.05) and not self._stopped.is_set():
                    pass
                if self._stopped.is_set():
                    break
                target.sendall(data)
        except (OSError, ValueError):
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        with self._lock:
            self._sockets = [s for s in self._sockets if s not in (source, target)]


def _url(target: str, port: int) -> str:
    driver, _, user, database = TARGETS[target]
    return f"{driver}://{user}127.0.0.1:{port}{database}"


@pytest.fixture(params=sorted(TARGETS))
def target(request: pytest.FixtureRequest) -> str:
    port = TARGETS[request.param][1]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError as e:
        require(False, f"{request.param} is not reachable on 127.0.0.1:{port}: {e}")
    return t.cast(str, request.param)


@pytest.fixture
def relay(target: str) -> t.Iterator[Relay]:
    relay = Relay(("127.0.0.1", TARGETS[target][1]))
    relay.start()
    yield relay
    relay.close()


@pytest.fixture
def app(target: str, relay: Relay) -> t.Iterator[Flask]:
    table = f"satchel_outage_{uuid.uuid4().hex[:10]}"
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="outage-test",
        SESSION_URL=_url(target, relay.port),
        SESSION_SQLALCHEMY_TABLE=table,
        SESSION_STORE_TIMEOUT=2.0,
    )
    Session(app)

    add_value_views(app)

    yield app
    app.extensions["satchel"].store.close()
    direct = sa.create_engine(_url(target, TARGETS[target][1]))
    SQLStore(direct, table=table).metadata.drop_all(direct, checkfirst=True)
    direct.dispose()


def _timed_get(client: t.Any, path: str) -> tuple[t.Any, float]:
    start = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - start


def _assert_unavailable(response: t.Any) -> None:
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert "Traceback" not in response.text


def test_refused_database_is_503_then_recovers(app: Flask, relay: Relay) -> None:
    """A database that refuses connections gives 503 with Retry-After; service resumes when it is back."""
    client = app.test_client()
    assert client.get("/set/before").status_code == 200
    relay.refuse()
    response, elapsed = _timed_get(client, "/get")
    _assert_unavailable(response)
    assert elapsed < 1.0
    _assert_unavailable(app.test_client().get("/set/new"))
    relay.start()
    assert client.get("/get").text == "'before'"
    assert client.get("/set/after").status_code == 200
    assert client.get("/get").text == "'after'"


def test_hung_database_is_503_within_timeout(app: Flask, relay: Relay) -> None:
    """A database that stops answering gives 503 within SESSION_STORE_TIMEOUT, for pooled and new connections."""
    client = app.test_client()
    assert client.get("/set/before").status_code == 200
    relay.stall()
    for path in ("/get", "/get", "/set/during"):
        response, elapsed = _timed_get(client, path)
        _assert_unavailable(response)
        assert elapsed < 2.0 + 0.75, path
    relay.start()
    assert client.get("/get").text == "'before'"
    assert client.get("/set/after").status_code == 200
    assert client.get("/get").text == "'after'"
