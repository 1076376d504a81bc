"""A small RESP2 client for the Redis store's per-request commands.

Every request that uses its session sends Redis one script (a login also
sends the user's index commands with it, in the same write), and redis-py
spends about as long in Python around that command as the loopback round
trip itself takes: pool bookkeeping, a readiness poll, observability hooks,
a general reply parser. Measured on a quiet machine, a store load costs
100 to 125 µs over these sockets and 145 to 190 µs through redis-py, and a
one-key change about 100 µs against 180. This module sends commands over
plain pooled sockets and reads their replies, nothing else.

It is used only where it cannot behave differently from redis-py: a plain
``redis.Redis`` on one server (TCP or a Unix socket, no TLS, no Sentinel, no
Cluster) whose connection settings it fully understands (:func:`for_client`
says None otherwise). Everything else the store does (listing, scans,
cleanup of the user index) still goes through redis-py, and so does every
client this module does not understand. Errors are redis-py's own exception
classes, so the store handles them the same way whichever path a command
took.
"""

from __future__ import annotations

import os
import socket
import time
import typing as t
import weakref

import redis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from . import _net

#: Settings of a redis-py pool that these sockets reproduce.
_USED = frozenset({"host", "port", "path", "db", "username", "password", "socket_timeout", "socket_connect_timeout"})
#: Settings that only concern redis-py's own connections or replies.
_IGNORED = frozenset(
    {
        "retry",
        "retry_on_error",
        "health_check_interval",  # replaced by IDLE_LIMIT
        "socket_keepalive",
        "socket_keepalive_options",
        "socket_read_size",
        "encoding",
        "encoding_errors",
        "decode_responses",  # the store refuses True
        "legacy_responses",
        "driver_info",
        "himport_registry",
        "maint_notifications_pool_handler",
        "maint_notifications_config",
        "orig_host_address",
        "orig_socket_timeout",
        "orig_socket_connect_timeout",
    }
)
#: Settings that change what a connection does, honoured only at their defaults.
_DEFAULTS: dict[str, tuple[t.Any, ...]] = {
    "client_name": (None,),
    "credential_provider": (None,),
    "redis_connect_func": (None,),
    "protocol": (None, 2, "2"),
}

#: A socket idle this long is closed instead of reused: a connection that a
#: failover or a NAT box dropped silently would otherwise cost a timeout.
IDLE_LIMIT = 30.0

#: Server errors by their first word, as redis-py raises them (its parser's
#: table, for the replies the store's commands can get), so the store maps
#: an error the same way whichever path the command took.
_ERRORS: dict[bytes, type[redis.RedisError]] = {
    b"ERR": ResponseError,
    b"NOSCRIPT": NoScriptError,
    b"READONLY": ReadOnlyError,
    b"LOADING": BusyLoadingError,
    b"OOM": OutOfMemoryError,
    b"MASTERDOWN": MasterDownError,
    b"TRYAGAIN": TryAgainError,
    b"CLUSTERDOWN": ClusterDownError,
    b"NOAUTH": AuthenticationError,
    b"WRONGPASS": AuthenticationError,
    b"NOPERM": NoPermissionError,
}
#: ``ERR`` replies that redis-py raises as a class of their own.
_ERR_MESSAGES: dict[str, type[redis.RedisError]] = {
    "max number of clients reached": redis.ConnectionError,
    "invalid password": AuthenticationError,
}

Reply = t.Any


def for_client(client: t.Any) -> Connections | None:
    """Sockets that behave like ``client``'s connections, or None when this module cannot promise that."""
    if type(client) is not redis.Redis:
        return None
    pool = client.connection_pool
    if type(pool) is not redis.ConnectionPool:
        return None
    kwargs = pool.connection_kwargs
    for name, value in kwargs.items():
        if name not in _USED and name not in _IGNORED and value not in _DEFAULTS.get(name, ()):
            return None  # TLS, socket options, RESP3, a credential provider…: redis-py knows best
    if pool.connection_class is redis.Connection:
        address: tuple[str, int] | str = (kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)))
    elif pool.connection_class is redis.UnixDomainSocketConnection:
        address = kwargs["path"]
    else:
        return None
    return Connections(
        address,
        db=int(kwargs.get("db") or 0),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        timeout=kwargs.get("socket_timeout"),
        connect_timeout=kwargs.get("socket_connect_timeout"),
    )


def _pack(args: t.Sequence[t.Any]) -> bytes:
    """A command in RESP: an array of bulk strings (from bytes, str or int)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class _Socket:
    """One connection: a socket and what it has received but not yet parsed."""

    __slots__ = ("buf", "sock", "used")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.used = time.monotonic()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise redis.ConnectionError("Redis closed the connection")
        self.buf += chunk

    def reply(self) -> Reply:
        """Read one reply. A server error is returned as an exception object, not raised."""
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        kind, line = self.buf[:1], self.buf[1:end]
        self.buf = self.buf[end + 2 :]
        if kind == b"$":
            size = int(line)
            if size < 0:
                return None
            while len(self.buf) < size + 2:
                self._fill()
            value, self.buf = self.buf[:size], self.buf[size + 2 :]
            return value
        if kind == b":":
            return int(line)
        if kind == b"*":
            size = int(line)
            return None if size < 0 else [self.reply() for _ in range(size)]
        if kind == b"+":
            return line
        if kind == b"-":
            word = line.split(b" ", 1)[0]
            message = line.decode("utf-8", "replace")
            if word not in _ERRORS:
                return ResponseError(message)
            message = message[len(word) + 1 :]  # redis-py drops the code word of the errors it names
            if word == b"ERR":
                return _ERR_MESSAGES.get(message, ResponseError)(message)
            return _ERRORS[word](message)
        raise redis.ConnectionError(f"unexpected reply from Redis: {self.buf[:40]!r}")


class Connections:
    """A pool of plain sockets to one Redis server, each used by one thread at a time."""

    def __init__(
        self,
        address: tuple[str, int] | str,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.connect_timeout = connect_timeout if connect_timeout is not None else timeout
        hello: list[list[t.Any]] = []
        if password is not None:
            hello.append(["AUTH", username, password] if username else ["AUTH", password])
        if db:
            hello.append(["SELECT", db])
        #: Sent on every new socket, in one write: credentials, then the database.
        self._hello = [(command[0], _pack(command)) for command in hello]
        # list.pop() and list.append() are atomic: no lock on the hot path.
        self._idle: list[_Socket] = []
        _LIVE.add(self)
        # A store handed an app's own client is often never closed: its
        # sockets are then closed when it is collected, not leaked.
        weakref.finalize(self, _close_all, self._idle)

    def _connect(self) -> _Socket:
        sock = None
        try:
            if isinstance(self.address, str):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.connect_timeout)
                sock.connect(self.address)
            else:
                sock = socket.create_connection(self.address, timeout=self.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _net.set_timeout(sock, self.timeout)
            conn = _Socket(sock)
            if self._hello:
                sock.sendall(b"".join(packed for _, packed in self._hello))
                for name, _ in self._hello:
                    answer = conn.reply()
                    if isinstance(answer, Exception):
                        raise redis.AuthenticationError(str(answer)) if name == "AUTH" else answer
            return conn
        except BaseException as e:
            if sock is not None:
                sock.close()
            error = _as_redis_error(e, self.address)
            if error is None:
                raise
            raise error from e

    def _take(self) -> tuple[_Socket, bool]:
        """A socket to use, and whether it was pooled (so may have died while idle)."""
        now = time.monotonic()
        while self._idle:
            try:
                conn = self._idle.pop()
            except IndexError:  # another thread took the last one
                break
            if now - conn.used < IDLE_LIMIT:
                return conn, True
            conn.sock.close()
        return self._connect(), False

    def pipeline(self, commands: t.Sequence[t.Sequence[t.Any]]) -> list[Reply]:
        """Send ``commands`` in one write and return their replies, in one round trip.

        Like redis-py's non-transactional pipeline, every command runs and
        the first server error among the replies is raised. A pooled socket
        that turns out to be closed (a restarted server, an idle timeout on
        the server) fails at once; the commands then get one more try on a
        new socket, as redis-py's default retry does, so they must be safe
        to run twice (the store's are). A timeout is never retried: that
        would double the wait of a hung server.
        """
        packed = b"".join(_pack(command) for command in commands)
        conn, pooled = self._take()
        try:
            answers = self._exchange(conn, packed, len(commands))
        except redis.TimeoutError:
            raise
        except redis.ConnectionError:
            if not pooled:
                raise
            conn = self._connect()
            answers = self._exchange(conn, packed, len(commands))
        conn.used = time.monotonic()
        self._idle.append(conn)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers

    def _exchange(self, conn: _Socket, packed: bytes, count: int) -> list[Reply]:
        """Send ``packed`` and read ``count`` replies; on any failure the socket is closed, never reused."""
        try:
            conn.sock.sendall(packed)
            return [conn.reply() for _ in range(count)]
        except BaseException as e:
            conn.sock.close()  # half a reply may still be on its way
            error = _as_redis_error(e, self.address)
            if error is None:
                raise
            raise error from e

    def close(self) -> None:
        _close_all(self._idle)


def _as_redis_error(error: BaseException, address: tuple[str, int] | str) -> redis.RedisError | None:
    """A socket error as redis-py would raise it; None for anything else (raised as it is)."""
    if isinstance(error, (TimeoutError, BlockingIOError)):  # BlockingIOError: a kernel timeout (_net)
        return redis.TimeoutError(f"Redis at {address} did not answer in time: {error}")
    if isinstance(error, OSError):
        return redis.ConnectionError(f"Redis at {address}: {error}")
    return None


#: Every pool of this process, for the fork hook below.
_LIVE: weakref.WeakSet[Connections] = weakref.WeakSet()


def _forget_parent_sockets() -> None:
    """In a forked child (gunicorn's workers): the parent's sockets are not ours to share.

    Closing the child's copies leaves the parent's open. A hook rather than a
    ``getpid()`` on every command, which is a system call each time.
    """
    for pool in list(_LIVE):
        _close_all(pool._idle)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_sockets)


def _close_all(idle: list[_Socket]) -> None:
    while True:
        try:
            conn = idle.pop()
        except IndexError:  # empty, or another thread took the last one
            return
        conn.sock.close()
