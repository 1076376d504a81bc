"""The memcached servers behind a pymemcache client, and how the store talks to each.

- Errors surface. A server that is down or does not answer within the
  timeout is ``StoreUnavailable`` (HTTP 503), never "no session": reading it
  as "no session" would log the user out and, worse, hand out a new session
  while the old one lives on. So clients with ``ignore_exc`` are refused, and
  with several servers the store picks the server itself, with the
  HashClient's own hashing, and calls that server's client directly:
  HashClient's failover would answer "no session" while a server is marked
  failing, and would send the session to another server, from which a revoked
  session could come back when the first server returns.
"""

from __future__ import annotations

import threading
import typing as t

from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import MemcacheServerError, MemcacheUnexpectedCloseError, MemcacheUnknownError

from ...errors import ConfigError, SessionTooLarge, StoreUnavailable

#: Errors that mean the server closed a connection we had open, as it does
#: when it restarts: worth one more try on a fresh connection.
_CLOSED = (MemcacheUnexpectedCloseError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
#: Errors that mean the server is down, unreachable or in trouble. Refused
#: connections are ``OSError``\\s.
_DOWN = (OSError, MemcacheServerError, MemcacheUnknownError)

_ACCEPTED = "a pymemcache Client, PooledClient or HashClient"

#: What memcached answers to an item over its size limit.
_TOO_LARGE = b"object too large for cache"


def _refused_as_too_large(error: MemcacheServerError) -> bool:
    """Whether the server refused an item for being over its size limit."""
    answer = error.args[0] if error.args else b""
    return _TOO_LARGE in (answer if isinstance(answer, bytes) else str(answer).encode())


class Server:
    """One memcached server, and how to call it safely from several threads."""

    def __init__(self, name: str, client: t.Any) -> None:
        #: ``host:port``, for error messages.
        self.name = name
        self.client = client
        # A PooledClient hands each thread its own connection. Its methods
        # wrap every command in a context manager, a cost on every read, so
        # the store takes a connection from the pool itself, and drops it on
        # any error, as the wrapper would.
        self._pool: t.Any = client.client_pool if isinstance(client, PooledClient) else None
        # A plain Client is one socket: two threads using it at once would
        # read each other's answers.
        self._lock = threading.Lock()
        #: The server's item size limit, once a refused record made the store read it.
        self.item_size_max: int | None = None

    def read_item_size_max(self) -> int | None:
        """The server's item size limit (``-I``) from ``stats settings``; None if it does not say."""
        stats = self.call("stats", "settings")
        value = stats.get(b"item_size_max", stats.get("item_size_max"))
        try:
            self.item_size_max = int(value)
        except (TypeError, ValueError):
            self.item_size_max = None
        return self.item_size_max

    def _run(self, method: str, args: tuple[t.Any, ...], kwargs: dict[str, t.Any]) -> t.Any:
        pool = self._pool
        if pool is None:
            with self._lock:
                return getattr(self.client, method)(*args, **kwargs)
        connection = pool.get()
        try:
            result = getattr(connection, method)(*args, **kwargs)
        except BaseException:
            pool.destroy(connection)  # its socket is in an unknown state
            raise
        pool.release(connection)
        return result

    def call(self, method: str, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Run one client command; every failure to reach the server is ``StoreUnavailable``."""
        retries: int | None = None  # counted after a first failure: the first try is the whole hot path
        while True:
            try:
                return self._run(method, args, kwargs)
            except _CLOSED as e:
                closed = e
            except TimeoutError as e:  # socket.timeout: the client's timeout=, or connect_timeout=
                raise StoreUnavailable(f"memcached {self.name} did not answer in time") from e
            except _DOWN as e:
                if isinstance(e, MemcacheServerError) and _refused_as_too_large(e):
                    raise SessionTooLarge(f"memcached {self.name} refused a value as too large") from e
                raise StoreUnavailable(f"memcached {self.name} is unavailable: {e!r}") from e
            if retries is None:
                # Each pooled connection may have been closed by a server restart
                # since it was last used; those fail at once and are dropped by the
                # pool, so trying as many times as there are idle connections reaches
                # a fresh one. A server that is really down refuses that connection.
                retries = 1 + (len(self._pool.free) if self._pool is not None else 0)
            if retries == 0:
                break
            retries -= 1
        raise StoreUnavailable(f"memcached {self.name} keeps closing the connection: {closed!r}") from closed


class Cluster:
    """The servers behind a client handed over or made by the store, and which one holds a key."""

    def __init__(self, client: t.Any) -> None:
        self.client = client
        #: Each server by its name, as the HashClient's hasher names it.
        self.servers = {server.name: server for server in servers_of(client)}
        self._only = next(iter(self.servers.values())) if len(self.servers) == 1 else None

    def server(self, full_key: str) -> Server:
        """The server that holds ``full_key``: the HashClient's own hashing, without its failover."""
        if self._only is not None:
            return self._only
        name = self.client.hasher.get_node(full_key)
        if name not in self.servers:
            raise StoreUnavailable("the memcached client has no servers left")
        return self.servers[name]

    def by_server(self, full_keys: t.Iterable[str]) -> dict[Server, list[str]]:
        """Keys grouped by the server that holds them, for one multi-key command per server."""
        grouped: dict[Server, list[str]] = {}
        for full in full_keys:
            grouped.setdefault(self.server(full), []).append(full)
        return grouped


def _name(server: t.Any) -> str:
    if isinstance(server, tuple):
        return f"{server[0]}:{server[1]}"
    return str(server)


def _check_client(client: t.Any) -> None:
    """Refuse clients that would hide errors or unpickle what they read."""
    if getattr(client, "ignore_exc", False):
        raise ConfigError(
            "SESSION_MEMCACHED",
            "the client has ignore_exc=True, which turns a server that is down into 'no session'"
            " (the user is logged out and a new session is handed out); create it with ignore_exc=False",
        )
    serde = getattr(client, "serde", None)
    if serde is None:
        return
    try:
        stored, _ = serde.serialize(b"probe", b"\x80")
        # A pickled None, flagged as pickled: a serde that unpickles it would
        # also unpickle whatever anyone who can reach memcached writes there.
        read = serde.deserialize(b"probe", b"\x80\x04N.", 1)
    except Exception:
        stored = read = None
    if stored != b"\x80" or read != b"\x80\x04N.":
        raise ConfigError(
            "SESSION_MEMCACHED",
            "the client's serde must hand bytes through unchanged (pymemcache's default, no serde=);"
            " Flask-Satchel encodes sessions itself and never unpickles",
        )


def servers_of(client: t.Any) -> list[Server]:
    """The servers behind a client handed over in ``SESSION_MEMCACHED``; ``ConfigError`` for a client refused."""
    if isinstance(client, HashClient):
        _check_client(client)
        servers = [Server(name, node) for name, node in client.clients.items()]
    elif isinstance(client, (Client, PooledClient)):
        servers = [Server(_name(client.server), client)]
    else:
        raise ConfigError("SESSION_MEMCACHED", f"expected {_ACCEPTED}, got {type(client).__qualname__}")
    for server in servers:
        _check_client(server.client)
    return servers
