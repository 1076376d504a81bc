"""Sessions in memcached, with pymemcache.

One value per session under ``prefix + key``: the msgpack-encoded record
(``store``), changed by compare-and-set. The modules, one job each:

- ``store``: the Store protocol, and locks;
- ``servers``: the servers behind a client, each called safely from several
  threads, every failure to reach one a ``StoreUnavailable``;
- ``clients``: the client handed over in ``SESSION_MEMCACHED``, or made from
  a ``memcached://`` URL;
- ``index``: each user's sessions, for listing and "log out everywhere";
- ``limits``: memcached's expiry, key length and item size limits.
"""

from __future__ import annotations

from .store import MemcachedStore as MemcachedStore

__all__ = ["MemcachedStore"]
