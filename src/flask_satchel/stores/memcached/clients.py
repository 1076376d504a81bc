"""The pymemcache client of a store: the one the app hands over, or one made from a URL.

Writes wait for memcached's answer (``noreply=False``): pymemcache's
default sends writes without waiting, so a failed write would vanish.
Waiting also keeps Nagle's algorithm out of the way: after a write sent
without waiting, the next command sits ~40 ms in the kernel until the
server's delayed ACK arrives. Clients this store creates set
``TCP_NODELAY`` all the same, and time out after ``SESSION_STORE_TIMEOUT``.
"""

from __future__ import annotations

import logging
import typing as t
from urllib.parse import urlsplit

from pymemcache.client.base import PooledClient
from pymemcache.client.hash import HashClient

from ...errors import ConfigError
from .servers import servers_of

if t.TYPE_CHECKING:
    from ...settings import StoreSettings

log = logging.getLogger("flask_satchel")

_DEFAULT_PORT = 11211


def client_from(settings: StoreSettings) -> tuple[t.Any, bool]:
    """The client ``settings`` give (``SESSION_MEMCACHED``) or describe, and whether the store made it."""
    client = settings.client("SESSION_MEMCACHED")
    if client is not None:
        # No_delay does not matter here (every command waits for its
        # answer, see above), but a missing timeout does.
        if any(getattr(server.client, "timeout", 0) is None for server in servers_of(client)):
            # Logged, not warned: -W error would turn advice into a crash.
            log.warning(
                "SESSION_MEMCACHED: the client has timeout=None, so a memcached that hangs hangs requests"
                " for ever instead of answering 503; create it with timeout= and connect_timeout="
            )
        return client, False
    # Flask-Session's default when neither a client nor a URL is given.
    servers = _parse_url(settings.url) if settings.url is not None else [("127.0.0.1", _DEFAULT_PORT)]
    return _connect(servers, settings.timeout), True


def _parse_url(url: t.Any) -> list[tuple[str, int]]:
    """``memcached://host:port[,host:port…]`` (already split) as a list of addresses."""
    if url.path not in ("", "/") or url.query or url.fragment or "@" in url.netloc:
        raise ConfigError(
            "SESSION_URL", f"expected memcached://host:port[,host:port...] and nothing else, got {url.geturl()!r}"
        )
    servers = []
    for part in url.netloc.split(","):
        try:
            address = urlsplit(f"//{part.strip()}")
            host, port = address.hostname, address.port or _DEFAULT_PORT
        except ValueError:
            host = None
        if not host:
            raise ConfigError("SESSION_URL", f"cannot read a host:port from {part!r} in {url.geturl()!r}")
        servers.append((host, port))
    return servers


def _connect(servers: list[tuple[str, int]], timeout: float) -> t.Any:
    """A thread-safe client for ``servers``: pooled connections, no Nagle, timeouts."""
    options: dict[str, t.Any] = {
        "connect_timeout": timeout,
        "timeout": timeout,
        "no_delay": True,
        "default_noreply": False,
    }
    if len(servers) == 1:
        return PooledClient(servers[0], **options)
    # The store routes keys itself and never uses HashClient's failover (see
    # ``servers``); these settings keep that true for anyone who
    # calls the client directly too: errors raise, no server is ever dropped.
    return HashClient(servers, use_pooling=True, ignore_exc=False, retry_attempts=2**62, retry_timeout=-1, **options)
