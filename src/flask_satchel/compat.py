"""Flask-Session's configuration, read the way Flask-Session reads it.

An app switching from Flask-Session keeps its config. Most keys mean the
same here and are read by the core or by the store that uses them; this
module holds the rest: the types that stand for one of our stores
(``"cachelib"``, ``"sqlalchemy"`` with no engine given), the types we have
no store for, and the keys we ignore or refuse. What a type stands for is
put in front of the app's config as the keys our stores read, so a store
never knows whether its client came from ``SESSION_REDIS`` or from a
``RedisCache``.
"""

from __future__ import annotations

import logging
import os
import typing as t
from urllib.parse import SplitResult, urlsplit

from .errors import ConfigError

log = logging.getLogger("flask_satchel")

#: Flask-Session types Flask-Satchel has no store for, with what to use instead.
UNSUPPORTED_TYPES = {
    "mongodb": "use 'redis', 'sqlalchemy' or 'sqlite'",
    "dynamodb": "use 'redis' or 'sqlalchemy'",
    "null": "leave SESSION_TYPE unset for the SQLite default",
}

#: Flask-Session keys that mean nothing here: (level, why), logged once at startup.
_IGNORED = {
    "SESSION_FILE_THRESHOLD": (
        logging.WARNING,
        "is ignored: Flask-Satchel never evicts a live session to make room;"
        " expired sessions are removed by 'flask session cleanup'",
    ),
    "SESSION_SQLALCHEMY_SEQUENCE": (logging.INFO, "is ignored: Flask-Satchel's table is keyed by the session's hash"),
}


class Resolved(t.NamedTuple):
    """The store a Flask-Session type stands for, and the config keys that configure it."""

    type: str
    url: SplitResult | None
    #: Keys that go in front of the app's config (``SESSION_REDIS``, ``SESSION_FILE_DIR`` …).
    overrides: dict[str, t.Any]


def resolve(
    kind: str, url: SplitResult | None, config: t.Mapping[str, t.Any], extensions: t.Mapping[str, t.Any]
) -> Resolved:
    """The store type ``kind`` stands for, and what configures it; ``ConfigError`` for a type we have no store for."""
    if kind in UNSUPPORTED_TYPES:
        raise ConfigError("SESSION_TYPE", f"{kind!r} is not supported by Flask-Satchel; {UNSUPPORTED_TYPES[kind]}")
    _check_keys(config)
    if kind == "cachelib":
        return _from_cachelib(config.get("SESSION_CACHELIB"))
    if kind == "sqlalchemy" and url is None and config.get("SESSION_SQLALCHEMY") is None:
        return _sqlalchemy_source(config, extensions)
    return Resolved(kind, url, {})


def _check_keys(config: t.Mapping[str, t.Any]) -> None:
    if config.get("SESSION_SQLALCHEMY_BIND_KEY") is not None:
        raise ConfigError(
            "SESSION_SQLALCHEMY_BIND_KEY",
            "is not read by Flask-Satchel; hand the bind's engine over instead:"
            " SESSION_SQLALCHEMY = db.engines[<bind key>]",
        )
    for key, (level, why) in _IGNORED.items():
        if config.get(key) is not None:
            log.log(level, "%s %s", key, why)
    fmt = config.get("SESSION_SERIALIZATION_FORMAT")
    if fmt is not None:
        # Flask-Session's choice of record encoding; no user of Flask-Satchel can observe its own.
        log.info("SESSION_SERIALIZATION_FORMAT=%r is Flask-Session's; Flask-Satchel stores typed msgpack", fmt)


def _from_cachelib(cache: t.Any) -> Resolved:
    """``SESSION_TYPE = "cachelib"``: the store that keeps the same data natively.

    Flask-Session 0.7 deprecated "filesystem" for "cachelib" with a
    ``FileSystemCache``, so this is what apps that followed its advice have.
    cachelib offers no public accessor for a cache's folder or client; they
    are read once here, at startup, and a cachelib release that renames them
    is a ``ConfigError`` saying what to set instead, never a failing request.
    """
    name = type(cache).__name__
    if not type(cache).__module__.startswith("cachelib"):
        raise ConfigError("SESSION_CACHELIB", f"expected a cachelib cache for SESSION_TYPE 'cachelib', got {name}")
    if name == "SimpleCache":
        return Resolved("memory", None, {})
    # (type, the key our store reads, what cachelib keeps it in, what to configure instead when it moves)
    known = {
        "FileSystemCache": (
            "filesystem",
            "SESSION_FILE_DIR",
            "_path",
            "SESSION_TYPE = 'filesystem' and SESSION_FILE_DIR",
        ),
        "RedisCache": ("redis", "SESSION_REDIS", "_write_client", "SESSION_TYPE = 'redis' and SESSION_REDIS"),
        "MemcachedCache": (
            "memcached",
            "SESSION_MEMCACHED",
            "_client",
            "SESSION_TYPE = 'memcached' and SESSION_MEMCACHED",
        ),
    }
    if name not in known:
        raise ConfigError(
            "SESSION_CACHELIB",
            f"a cachelib {name} has no Flask-Satchel store; use a FileSystemCache, SimpleCache, RedisCache or"
            " MemcachedCache, or set SESSION_TYPE to 'sqlite', 'filesystem', 'redis', 'memcached' or 'sqlalchemy'",
        )
    kind, key, attribute, instead = known[name]
    value = getattr(cache, attribute, None)
    if value is None:
        raise ConfigError("SESSION_CACHELIB", f"cannot tell what this cachelib {name} uses; set {instead}")
    return Resolved(kind, None, {key: os.fspath(value) if kind == "filesystem" else value})


def _sqlalchemy_source(config: t.Mapping[str, t.Any], extensions: t.Mapping[str, t.Any]) -> Resolved:
    """``SESSION_TYPE = "sqlalchemy"`` without ``SESSION_SQLALCHEMY`` or ``SESSION_URL``, as Flask-Session reads it.

    The app's Flask-SQLAlchemy extension when it is initialised already,
    else a connection of our own to ``SQLALCHEMY_DATABASE_URI``. A SQLite
    URI is the file the SQLite store opens (relative paths are in the
    instance folder, as in Flask-SQLAlchemy): ``sqlite`` is that store's URL.
    """
    db = extensions.get("sqlalchemy")
    if db is not None:
        return Resolved("sqlalchemy", None, {"SESSION_SQLALCHEMY": db})
    uri = config.get("SQLALCHEMY_DATABASE_URI")
    if not uri:
        raise ConfigError(
            "SESSION_SQLALCHEMY",
            "SESSION_TYPE 'sqlalchemy' needs SESSION_SQLALCHEMY (an Engine or a Flask-SQLAlchemy db),"
            " SQLALCHEMY_DATABASE_URI or SESSION_URL",
        )
    if not isinstance(uri, str):
        uri = uri.render_as_string(hide_password=False)  # a SQLAlchemy URL object
    url = urlsplit(uri)
    return Resolved("sqlite" if url.scheme.partition("+")[0] == "sqlite" else "sqlalchemy", url, {})
