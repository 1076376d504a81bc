"""What memcached limits: how far ahead an expiry reaches, how long a key is, how large an item.

- Expiry. Memcached reads an expiry of more than 30 days as an absolute Unix
  time, so a relative TTL of 31 days would be a date in January 1970 and the
  record would die at once. Expiries up to 30 days are sent as a TTL, longer
  ones as the record's ``expires_at`` timestamp. Either way one second is
  added to the expiry rounded up: memcached's clock counts whole seconds and
  moves once a second, so it runs up to a second behind the real time, and
  an item given a TTL of N seconds is gone after anything between N - 1 and
  N seconds. Without the extra second a session would end before its
  deadline; with it, the server drops the record at most two seconds late,
  and the interface, which checks expiry on read, still ends the session on
  time.
- Size. Memcached refuses an item larger than its ``item_size_max`` (``-I``,
  1 MB by default) with ``SERVER_ERROR object too large for cache``: no retry
  can store it, so that is ``SessionTooLarge`` naming both sizes, never
  ``StoreUnavailable``. Records are changed with ``cas``, which leaves the
  old value in place when it refuses, so the session keeps its last good
  state (a refused ``set`` drops the old value, but ``set`` only creates
  records under new keys). The limit is read from ``stats settings`` only when a server
  refuses a record, and kept: a later record larger than it is refused
  without sending it, after reading the limit again (one small round trip,
  in case the server was restarted with another ``-I``).
"""

from __future__ import annotations

import math
import time
import typing as t

from ...errors import ConfigError, SessionTooLarge

if t.TYPE_CHECKING:
    from .servers import Server

#: Memcached reads a larger expiry as an absolute Unix time, not a TTL.
_MAX_TTL = 30 * 86400
#: An expiry in the past: memcached drops the item at once.
GONE = -1
#: The longest key memcached accepts, in bytes.
_MAX_KEY = 250


def exptime(expires_at: float) -> int:
    """The expiry memcached needs for a record that must live until ``expires_at``, and not much longer.

    One second more than the time left, rounded up: memcached's clock runs
    up to a second behind (see the module docstring).
    """
    remaining = expires_at - time.time()
    if remaining <= 0:
        return GONE  # 0 would mean "never expires"
    ttl = math.ceil(remaining) + 1
    if ttl <= _MAX_TTL:
        return ttl
    return math.ceil(expires_at) + 1


def check_prefix(prefix: str, longest_suffix: int) -> None:
    """``ConfigError`` unless ``prefix`` followed by ``longest_suffix`` bytes makes a key memcached takes."""
    longest = len(prefix.encode()) + longest_suffix
    if not prefix.isascii() or any(c.isspace() or not c.isprintable() for c in prefix) or longest > _MAX_KEY:
        raise ConfigError(
            "SESSION_KEY_PREFIX",
            f"memcached keys are printable ASCII without spaces, at most {_MAX_KEY} bytes;"
            f" {prefix!r} cannot make such keys",
        )


def store_item(server: Server, command: str, full: str, value: bytes, *args: t.Any, expire: int) -> t.Any:
    """Write a record with ``command``; ``SessionTooLarge`` with both sizes when it is over the item size limit.

    Once a server has refused a record, its limit is known, and a record
    whose key and value alone are over it is refused without sending it.
    """
    size = len(full) + len(value)
    if server.item_size_max is not None and size > server.item_size_max:
        limit = server.read_item_size_max()  # it may have been restarted with another -I
        if limit is not None and size > limit:
            raise _too_large(server, len(value), limit)
    try:
        return server.call(command, full, value, *args, expire=expire, noreply=False)
    except SessionTooLarge as e:
        raise _too_large(server, len(value), server.read_item_size_max()) from e


def _too_large(server: Server, size: int, limit: int | None) -> SessionTooLarge:
    over = f"over the {limit}-byte item size limit" if limit is not None else "over the item size limit"
    return SessionTooLarge(
        f"The session is {size} bytes encoded, {over} of memcached {server.name} (item_size_max,"
        " memcached -I, counting the key and the item's header), so it was not stored;"
        " store less in the session, or start memcached with a larger -I",
        size=size,
        limit=limit,
    )
