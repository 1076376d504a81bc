"""Session stores, one module each, loaded only when configured.

Each store class has a ``from_settings(settings)`` constructor, given the
:class:`~flask_satchel.settings.StoreSettings` it reads its own keys from.
Importing a store module is what pulls in its client library, so an app on
the SQLite default never imports redis, SQLAlchemy or pymemcache.
"""

from __future__ import annotations

import importlib
import typing as t

from ..errors import ConfigError
from .base import Change, Record, Store, merge

if t.TYPE_CHECKING:
    from ..settings import StoreSettings

__all__ = ["Change", "Record", "Store", "merge", "open_store"]

#: Store type to ``module:Class`` below this package.
STORES = {
    "memory": "memory:MemoryStore",
    "sqlite": "sqlite:SQLiteStore",
    "filesystem": "filesystem:FileSystemStore",
    "redis": "redis:RedisStore",
    "sqlalchemy": "sql:SQLStore",
    "memcached": "memcached:MemcachedStore",
}


#: The top-level package a store may miss, to the extra that installs it.
EXTRAS = {
    "redis": "redis",
    "pymemcache": "memcached",
    "sqlalchemy": "sqlalchemy",
    "psycopg": "postgresql",
    "psycopg2": "postgresql",
    "pymysql": "mysql",
    "MySQLdb": "mysql",
    "cryptography": "cookie",
}


def missing_extra(error: ModuleNotFoundError, settings: StoreSettings) -> ConfigError | None:
    """The ``ConfigError`` naming the extra to install for a package a store needs; None for any other module."""
    missing = (error.name or "").partition(".")[0]
    if missing not in EXTRAS:
        return None
    return ConfigError(
        "SESSION_URL" if settings.url is not None else "SESSION_TYPE",
        f"the {settings.type} store needs the {missing!r} package, which is not installed;"
        f' pip install "flask-satchel[{EXTRAS[missing]}]"',
    )


def open_store(settings: StoreSettings) -> Store:
    """Build the store that ``settings`` describe.

    A client library that is not installed is a ``ConfigError`` that says
    which extra to install, not an import traceback.
    """
    module, _, name = STORES[settings.type].partition(":")
    try:
        cls = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        return t.cast(Store, cls.from_settings(settings))
    except ModuleNotFoundError as e:
        config_error = missing_extra(e, settings)
        if config_error is None:
            raise
        raise config_error from None
