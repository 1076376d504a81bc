"""Flask-Session's memcached records: ``SESSION_KEY_PREFIX + sid``, the encoded session.

The record is read through Flask-Satchel's own store, on the server the
store picks for that key (one server, or the HashClient's hashing, which is
also how Flask-Session's writes were spread), with its connections, its
locks and its errors: an unreachable server is ``StoreUnavailable``.

A cookie that names nothing costs one ``gets``. A record that is there
costs two more round trips, once per user: memcached's meta get
``mg <key> t`` for the remaining lifetime (through pymemcache's public
``raw_command``, whose answer is one line: ``HD t<seconds>``), then a
``cas`` with an expiry in the past, which deletes the record only if it is
still the value read, so of two requests racing with the same old cookie
only one imports it. Memcached counts whole seconds and its clock lags by
up to one, so a second is taken off the remaining lifetime: the imported
session never outlives the old one. A server without meta commands (before
memcached 1.6) cannot tell the remaining lifetime; the session then gets
``PERMANENT_SESSION_LIFETIME`` from now, the most Flask-Session's own next
request would have given it.
"""

from __future__ import annotations

import typing as t

from pymemcache.exceptions import MemcacheError

from ..stores.memcached.limits import GONE
from . import BaseImporter, Taken

if t.TYPE_CHECKING:
    from flask import Flask

    from ..settings import Settings
    from ..stores.base import Store
    from ..stores.memcached import MemcachedStore


def _remaining(answer: bytes) -> int | None:
    """Seconds left from a meta get's ``HD t<seconds>`` answer; -1 for no expiry, None when gone."""
    words = answer.split()
    if not words or words[0] != b"HD":
        return None
    for word in words[1:]:
        if word.startswith(b"t"):
            return int(word[1:])
    return None


class MemcachedImporter(BaseImporter):
    """Takes Flask-Session's record with ``gets``, ``mg … t`` and a deleting ``cas``."""

    backend = "memcached"

    def __init__(self, settings: Settings, app: Flask, store: Store) -> None:
        super().__init__(settings, app)
        self._store = t.cast("MemcachedStore", store)

    def take_record(self, store_id: str, now: float, lifetime: float) -> Taken | None:
        # The store's own route to the server of this key; see the module docstring.
        value, cas = self._store.call(store_id, "gets", store_id)
        if not value:  # Flask-Session, too, reads an empty value as no session
            return None
        try:
            left = _remaining(self._store.call(store_id, "raw_command", f"mg {store_id} t", "\r\n"))
        except (MemcacheError, ValueError):  # no meta commands: an old server
            left = -1
        if left is None:
            return None  # gone since the gets
        if not self._store.call(store_id, "cas", store_id, b"", cas, expire=GONE, noreply=False):
            return None  # changed or taken since the gets: another request imports it
        expires_at = now + lifetime if left < 0 else now + left - 1
        return Taken(value, expires_at)
