"""Session stores, one module each, loaded only when configured.

Each store class has a ``from_settings(settings)`` constructor; importing a
store module is what pulls in its client library, so an app on the SQLite
default never imports redis, SQLAlchemy or pymemcache.
"""

from __future__ import annotations

import importlib
import typing as t

from .base import Change, Record, Store, merge

if t.TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["Change", "Record", "Store", "merge", "open_store"]

#: Store type to ``module:Class`` below this package.
STORES = {
    "memory": "memory:MemoryStore",
    "sqlite": "sqlite:SQLiteStore",
    "filesystem": "filesystem:FileSystemStore",
    "redis": "redis:RedisStore",
    "sqlalchemy": "sql:SQLStore",
    "memcached": "memcached:MemcachedStore",
    "cookie": "cookie:CookieStore",
}


def open_store(settings: Settings) -> Store:
    """Build the store that ``settings`` describe."""
    module, _, name = STORES[settings.type].partition(":")
    cls = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    return t.cast(Store, cls.from_settings(settings))
