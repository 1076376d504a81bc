"""Shared fixtures. Services are real; a test that cannot reach one is skipped
locally with the reason, and fails in CI (``CI=true``) so nothing is silently
skipped there."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest
import redis
from flask import Flask, session

from flask_satchel import Session

IN_CI = os.environ.get("CI") == "true"


def require(available: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) when a service a test needs is missing."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{reason} (a missing service fails under CI=true)")
    pytest.skip(reason)


@pytest.fixture
def need() -> t.Callable[[bool, str], None]:
    """``need(ok, reason)``: skip locally / fail in CI when a service is missing."""
    return require


@pytest.fixture(scope="session")
def demo() -> t.Any:
    """The demo app's module (examples/demo/app.py), imported by path: the demo is not a package."""
    if "satchel_demo" not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "examples" / "demo" / "app.py"
        spec = importlib.util.spec_from_file_location("satchel_demo", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["satchel_demo"] = module
        spec.loader.exec_module(module)
    return sys.modules["satchel_demo"]


def free_port(*, bus: bool = False) -> int:
    """A free loopback port; with ``bus``, one whose cluster bus port (+10000) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not bus:
            return port
        if port + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                    return port
                except OSError:
                    pass


class ServerProcess:
    """A private server process the tests start, freeze (SIGSTOP), thaw and stop; subclasses start it."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.kill()


class MemcachedServer(ServerProcess):
    """A private memcached on a free loopback port; ``options`` go on its command line (``-I 64k``)."""

    def __init__(self, *options: str) -> None:
        super().__init__()
        self.options = options

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"memcached://{self.address}"

    def start(self) -> MemcachedServer:
        command = ["memcached", "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64", *self.options]
        if os.geteuid() == 0:
            command[1:1] = ["-u", "nobody"]  # memcached refuses to run as root
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:  # poll until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"memcached did not start on port {self.port}") from None
                time.sleep(0.01)


def started_memcached(*options: str) -> t.Iterator[MemcachedServer]:
    """A fixture's body: a private memcached, stopped afterwards (skips, or fails in CI, without the binary)."""
    require(shutil.which("memcached") is not None, "memcached is not installed (apt-get install memcached)")
    server = MemcachedServer(*options)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def memcached() -> t.Iterator[MemcachedServer]:
    """A private memcached for the module, with its default settings (1 MB items)."""
    yield from started_memcached()


def reachable(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class RedisServer(ServerProcess):
    """A private redis-server (or Sentinel) process on a free loopback port, for tests to stop or freeze."""

    def __init__(self, folder: str, *args: str, port: int | None = None, sentinel: bool = False) -> None:
        super().__init__(port)
        self.folder = folder
        self.args = args
        self.sentinel = sentinel

    def start(self) -> RedisServer:
        os.makedirs(self.folder, exist_ok=True)
        if self.sentinel:
            config = os.path.join(self.folder, f"sentinel-{self.port}.conf")
            with open(config, "w") as f:
                f.write(f"port {self.port}\nbind 127.0.0.1\ndir {self.folder}\n" + "".join(a + "\n" for a in self.args))
            command = ["redis-server", config, "--sentinel"]
        else:
            command = [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            command += ["--dir", self.folder, *self.args]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while not reachable(client):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.02)
        finally:
            client.close()
        return self

    def client(self, **kw: t.Any) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2, **kw)


@pytest.fixture
def servers(tmp_path: t.Any) -> t.Iterator[t.Callable[..., RedisServer]]:
    """``servers(*args, port=None, sentinel=False)`` starts a private redis-server; all are stopped at the end."""
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    started: list[RedisServer] = []

    def start(*args: str, port: int | None = None, sentinel: bool = False) -> RedisServer:
        server = RedisServer(str(tmp_path / f"redis-{len(started)}"), *args, port=port, sentinel=sentinel)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def add_value_views(app: Flask) -> Flask:
    """``/set/<value>`` stores one value in the session, ``/get`` shows it: the smallest app a store test needs."""

    @app.get("/set/<value>")
    def set_value(value: str) -> str:
        session["v"] = value
        return "ok"

    @app.get("/get")
    def get_value() -> str:
        return repr(session.get("v"))

    return app


def value_app(instance_path: str | os.PathLike[str] | None = None, *, init: bool = True, **config: t.Any) -> Flask:
    """An app with ``config`` and :func:`add_value_views`, Flask-Satchel on it unless ``init`` is False.

    The one factory of the store and interface tests; a test that calls
    ``Session(app)`` itself (to time it, or to see it fail) passes ``init=False``.
    """
    app = Flask(__name__, instance_path=None if instance_path is None else str(instance_path))
    app.config.update(config)
    if init:
        Session(app)
    return add_value_views(app)
