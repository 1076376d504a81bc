"""Flask-Satchel's own configuration, read once at ``init_app``.

Flask's keys (cookie attributes, ``PERMANENT_SESSION_LIFETIME``,
``SESSION_REFRESH_EACH_REQUEST``, the secret) are not here: Flask reads them
on every request, and so does the interface. Everything here is checked up
front, so a mistake is a ``ConfigError`` naming the key when the app starts,
not a 500 on the first request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import typing as t
from urllib.parse import SplitResult, urlsplit

from .errors import ConfigError

#: Advice that is not an error goes here, once, at ``init_app``: not through
#: ``warnings``, which a test-suite run with ``-W error`` turns into a crash.
log = logging.getLogger("flask_satchel")

#: The store types, as ``SESSION_TYPE`` names them ("cachelib" maps to one of them).
TYPES = ("sqlite", "filesystem", "sqlalchemy", "redis", "memcached", "memory", "cookie")

#: URL scheme (the part before ``+`` for SQLAlchemy drivers) to store type.
SCHEMES = {
    "sqlite": "sqlite",
    "file": "filesystem",
    "redis": "redis",
    "rediss": "redis",
    "redis+sentinel": "redis",
    "redis+cluster": "redis",
    "memcached": "memcached",
    "postgresql": "sqlalchemy",
    "postgres": "sqlalchemy",
    "mysql": "sqlalchemy",
    "mariadb": "sqlalchemy",
    "memory": "memory",
    "cookie": "cookie",
}

#: Flask-Session types Flask-Satchel has no store for, with what to use instead.
_UNSUPPORTED_TYPES = {
    "mongodb": "use 'redis', 'sqlalchemy' or 'sqlite'",
    "dynamodb": "use 'redis' or 'sqlalchemy'",
    "null": "leave SESSION_TYPE unset for the SQLite default",
}

_DAY = 86400.0
#: The absolute lifetime when neither it nor a longer idle lifetime is set.
_ABSOLUTE_DEFAULT = 30 * _DAY


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every Flask-Satchel setting, validated. Times are in seconds."""

    type: str = "sqlite"
    #: ``SESSION_URL`` parsed, or None when the store is configured by type and client.
    url: SplitResult | None = None
    permanent: bool = False
    key_prefix: str = "session:"
    id_length: int = 32
    use_signer: bool = False
    absolute_lifetime: float = _ABSOLUTE_DEFAULT
    refresh_interval: float = 60.0
    user_key: str = "_user_id"
    track_client: bool = False
    locking: bool = False
    #: How long a request waits for its session's lock before a 503.
    lock_timeout: float = 10.0
    #: How long a lock lives if its holder never releases it (a crashed process).
    lock_lease: float = 60.0
    store_timeout: float = 2.0
    cleanup_n_requests: int | None = None
    #: Where the SQLite database lives (``sqlite`` type).
    sqlite_path: str = ""
    #: Where the filesystem store keeps its files (``filesystem`` type).
    file_dir: str = ""
    file_mode: int = 0o600
    #: Clients handed over in the config (``SESSION_REDIS``, …), by store type.
    client: t.Any = None
    sqlalchemy_table: str = "satchel_sessions"
    sqlalchemy_schema: str | None = None
    sqlalchemy_create_table: bool = True
    #: Give a long-lived session a new sid this often (None: never); the old
    #: sid keeps working for ``rotation_grace`` seconds.
    rotate_interval: float | None = None
    rotation_grace: float = 5.0
    #: ``SESSION_MAX_PER_USER`` and what happens past it: "revoke_oldest" or "refuse".
    max_per_user: int | None = None
    max_per_user_policy: str = "revoke_oldest"
    #: Send ``Clear-Site-Data: "cookies"`` when ``destroy()`` deletes the cookie.
    clear_site_data: bool = False
    #: ``Cache-Control: no-store`` on responses that set or delete the cookie,
    #: unless the app already chose a ``Cache-Control`` (``SESSION_NO_STORE``).
    no_store: bool = True
    #: Accept a valid legacy Flask cookie session once and move it into this store.
    migrate_flask_cookies: bool = False
    #: Take over a live Flask-Session record once, under a new id (``SESSION_MIGRATE_FLASK_SESSION``).
    migrate_flask_session: bool = False
    #: Where the cookie store keeps per-user revocation marks (``SESSION_COOKIE_REVOCATION_URL``).
    revocation_settings: Settings | None = None


def _seconds(config: t.Mapping[str, t.Any], key: str, default: float, *, zero: bool) -> float:
    value = config.get(key, default)
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigError(key, f"expected a timedelta or a number of seconds, got {value!r}")
    if seconds < 0 or (seconds == 0 and not zero):
        raise ConfigError(key, f"must be {'zero or more' if zero else 'more than zero'}, got {value!r}")
    return seconds


def _flag(config: t.Mapping[str, t.Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected True or False, got {value!r}")
    return value


class _Cachelib(t.NamedTuple):
    """What a cachelib cache handed to Flask-Session (``SESSION_CACHELIB``) becomes here."""

    kind: str
    #: ``SESSION_FILE_DIR`` for a ``FileSystemCache``.
    file_dir: str | None = None
    #: The Redis or memcached client of a ``RedisCache`` or ``MemcachedCache``.
    client: t.Any = None


def _from_cachelib(cache: t.Any) -> _Cachelib:
    """Map ``SESSION_TYPE = "cachelib"`` to the store that keeps the same data natively.

    Flask-Session 0.7 deprecated "filesystem" for "cachelib" with a
    ``FileSystemCache``, so this is what apps that followed its advice have.
    cachelib offers no public accessor for a cache's folder or client; they
    are read once here, at startup, and a cachelib release that renames them
    is a ``ConfigError`` saying what to set instead, never a failing request.
    """
    name = type(cache).__name__
    module = type(cache).__module__
    if not module.startswith("cachelib"):
        raise ConfigError("SESSION_CACHELIB", f"expected a cachelib cache for SESSION_TYPE 'cachelib', got {name}")
    if name == "SimpleCache":
        return _Cachelib("memory")
    # (type, what cachelib keeps it in, what to configure instead when it moves)
    known = {
        "FileSystemCache": ("filesystem", "_path", "SESSION_TYPE = 'filesystem' and SESSION_FILE_DIR"),
        "RedisCache": ("redis", "_write_client", "SESSION_TYPE = 'redis' and SESSION_REDIS"),
        "MemcachedCache": ("memcached", "_client", "SESSION_TYPE = 'memcached' and SESSION_MEMCACHED"),
    }
    if name not in known:
        raise ConfigError(
            "SESSION_CACHELIB",
            f"a cachelib {name} has no Flask-Satchel store; use a FileSystemCache, SimpleCache, RedisCache or"
            " MemcachedCache, or set SESSION_TYPE to 'sqlite', 'filesystem', 'redis', 'memcached' or 'sqlalchemy'",
        )
    kind, attribute, instead = known[name]
    value = getattr(cache, attribute, None)
    if value is None:
        raise ConfigError("SESSION_CACHELIB", f"cannot tell what this cachelib {name} uses; set {instead}")
    if kind == "filesystem":
        return _Cachelib(kind, file_dir=os.fspath(value))
    return _Cachelib(kind, client=value)


def _type_and_url(config: t.Mapping[str, t.Any]) -> tuple[str, SplitResult | None]:
    kind = config.get("SESSION_TYPE")
    raw_url = config.get("SESSION_URL")
    url = None
    if raw_url is not None:
        if not isinstance(raw_url, str) or "://" not in raw_url:
            raise ConfigError("SESSION_URL", "expected a URL such as 'redis://127.0.0.1:6379/0'")
        try:
            url = urlsplit(raw_url)
            for host in url.netloc.rpartition("@")[2].split(","):  # several hosts: cluster, sentinels
                urlsplit(f"//{host}").port  # noqa: B018 - parses each port, which raises on garbage
        except ValueError as e:
            # The URL itself is not repeated: it may hold a password.
            raise ConfigError("SESSION_URL", f"cannot parse the URL: {e}") from None
        scheme = url.scheme.lower()
        from_url = SCHEMES.get(scheme) or SCHEMES.get(scheme.split("+")[0])
        if from_url is None:
            raise ConfigError("SESSION_URL", f"unknown scheme {url.scheme!r}; accepted: {', '.join(sorted(SCHEMES))}")
        if kind is not None and kind != from_url:
            raise ConfigError("SESSION_TYPE", f"{kind!r} does not match SESSION_URL, which is a {from_url!r} URL")
        kind = from_url
    if kind is None:
        kind = "sqlite"
    if kind in _UNSUPPORTED_TYPES:
        raise ConfigError("SESSION_TYPE", f"{kind!r} is not supported by Flask-Satchel; {_UNSUPPORTED_TYPES[kind]}")
    if kind not in (*TYPES, "cachelib"):
        raise ConfigError("SESSION_TYPE", f"unknown type {kind!r}; accepted: {', '.join(TYPES)}")
    return kind, url


def _local_path(url: SplitResult | None, key: str, default: str, instance_path: str) -> str:
    """A file path from ``sqlite:///rel``, ``sqlite:////abs`` or ``file:///abs``.

    Relative paths are relative to the instance folder, as Flask-SQLAlchemy does.
    """
    if url is None:
        return default
    if url.netloc:
        raise ConfigError(key, f"a {url.scheme} URL names a local path and no host, got {url.geturl()!r}")
    path = url.path
    if url.scheme == "sqlite":
        path = path[1:]  # sqlite:///relative and sqlite:////absolute
    if not path or path == ":memory:":
        raise ConfigError(key, "needs a file path (use 'memory://' for an in-memory store)")
    return path if os.path.isabs(path) else os.path.join(instance_path, path)


def _check_cookie(config: t.Mapping[str, t.Any]) -> None:
    """Flask's cookie keys are read per request, but a cookie browsers would reject is caught here."""
    secure = config.get("SESSION_COOKIE_SECURE", False)
    if secure not in (True, False, "auto"):
        raise ConfigError("SESSION_COOKIE_SECURE", f"expected True, False or 'auto', got {secure!r}")
    name = config.get("SESSION_COOKIE_NAME", "session")
    if not isinstance(name, str) or not name.startswith(("__Host-", "__Secure-")):
        return
    if secure is not True:
        raise ConfigError(
            "SESSION_COOKIE_SECURE", f"must be True for a cookie named {name!r}: browsers drop it otherwise"
        )
    if name.startswith("__Host-"):
        if config.get("SESSION_COOKIE_DOMAIN"):
            raise ConfigError("SESSION_COOKIE_DOMAIN", f"must be unset for a cookie named {name!r}")
        if config.get("SESSION_COOKIE_PATH") not in (None, "/"):
            raise ConfigError("SESSION_COOKIE_PATH", f"must be '/' for a cookie named {name!r}")


_CLIENT_KEYS = {"redis": "SESSION_REDIS", "memcached": "SESSION_MEMCACHED", "sqlalchemy": "SESSION_SQLALCHEMY"}


def _absolute_lifetime(config: t.Mapping[str, t.Any], idle: float) -> float:
    """``SESSION_ABSOLUTE_LIFETIME``: by default 30 days, or the idle lifetime when that is longer.

    An app that sets ``PERMANENT_SESSION_LIFETIME`` to 90 days expects its
    users to stay logged in for 90 days; a cap it never asked for would cut
    them off silently. An explicit cap below the idle lifetime is honoured,
    with a word in the log, since then the idle lifetime never applies.
    """
    if config.get("SESSION_ABSOLUTE_LIFETIME") is None:
        return max(_ABSOLUTE_DEFAULT, idle)
    absolute = _seconds(config, "SESSION_ABSOLUTE_LIFETIME", _ABSOLUTE_DEFAULT, zero=False)
    if absolute < idle:
        log.warning(
            "SESSION_ABSOLUTE_LIFETIME (%g s) is shorter than PERMANENT_SESSION_LIFETIME (%g s):"
            " every session ends %g s after it began, however active",
            absolute,
            idle,
            absolute,
        )
    return absolute


def _sqlalchemy_source(
    config: t.Mapping[str, t.Any], extensions: t.Mapping[str, t.Any]
) -> tuple[t.Any, SplitResult | None]:
    """``SESSION_TYPE = "sqlalchemy"`` without ``SESSION_SQLALCHEMY`` or ``SESSION_URL``, as Flask-Session reads it.

    The app's Flask-SQLAlchemy extension when it is initialised already,
    else a connection of our own to ``SQLALCHEMY_DATABASE_URI``. A SQLite
    URI is the file the SQLite store opens (relative paths are in the
    instance folder, as in Flask-SQLAlchemy): ``sqlite`` is that store's URL.
    """
    db = extensions.get("sqlalchemy")
    if db is not None:
        return db, None
    uri = config.get("SQLALCHEMY_DATABASE_URI")
    if not uri:
        raise ConfigError(
            "SESSION_SQLALCHEMY",
            "SESSION_TYPE 'sqlalchemy' needs SESSION_SQLALCHEMY (an Engine or a Flask-SQLAlchemy db),"
            " SQLALCHEMY_DATABASE_URI or SESSION_URL",
        )
    if not isinstance(uri, str):
        uri = uri.render_as_string(hide_password=False)  # a SQLAlchemy URL object
    return None, urlsplit(uri)


def load(
    config: t.Mapping[str, t.Any], instance_path: str, extensions: t.Mapping[str, t.Any] | None = None
) -> Settings:
    """Read and check Flask-Satchel's keys from an app's config.

    The secret is not among them: like Flask, the interface reads
    ``app.secret_key`` when a request needs it, so an app factory may set it
    after ``init_app``. ``extensions`` is the app's, for Flask-SQLAlchemy.
    """
    kind, url = _type_and_url(config)
    cachelib = _from_cachelib(config.get("SESSION_CACHELIB")) if kind == "cachelib" else None
    if cachelib is not None:
        kind = cachelib.kind

    id_length = config.get("SESSION_ID_LENGTH", 32)
    if not isinstance(id_length, int) or isinstance(id_length, bool) or id_length < 32:
        raise ConfigError("SESSION_ID_LENGTH", f"must be at least 32 bytes (256 bits), got {id_length!r}")

    use_signer = _flag(config, "SESSION_USE_SIGNER", False)

    # Flask's own key is read per request, but a value that can never work is
    # a startup error here rather than a 500 later.
    idle = _seconds(config, "PERMANENT_SESSION_LIFETIME", 31 * _DAY, zero=False)

    prefix = config.get("SESSION_KEY_PREFIX", "session:")
    if not isinstance(prefix, str):
        raise ConfigError("SESSION_KEY_PREFIX", f"expected a string, got {prefix!r}")
    user_key = config.get("SESSION_USER_KEY", "_user_id")
    if not isinstance(user_key, str) or not user_key:
        raise ConfigError("SESSION_USER_KEY", f"expected a non-empty string, got {user_key!r}")

    cleanup_n = config.get("SESSION_CLEANUP_N_REQUESTS")
    if cleanup_n is not None and (not isinstance(cleanup_n, int) or isinstance(cleanup_n, bool) or cleanup_n < 1):
        raise ConfigError("SESSION_CLEANUP_N_REQUESTS", f"expected a positive integer or None, got {cleanup_n!r}")

    file_dir = config.get("SESSION_FILE_DIR")
    if file_dir is not None and not isinstance(file_dir, (str, os.PathLike)):
        raise ConfigError("SESSION_FILE_DIR", f"expected a directory path, got {file_dir!r}")
    if config.get("SESSION_FILE_THRESHOLD") is not None:
        log.warning(
            "SESSION_FILE_THRESHOLD is ignored: Flask-Satchel never evicts a live session to make room;"
            " expired sessions are removed by 'flask session cleanup'"
        )
    file_mode = config.get("SESSION_FILE_MODE", 0o600)
    if not isinstance(file_mode, int) or not 0 <= file_mode <= 0o777:
        raise ConfigError("SESSION_FILE_MODE", f"expected permission bits such as 0o600, got {file_mode!r}")

    if config.get("SESSION_SQLALCHEMY_BIND_KEY") is not None:
        raise ConfigError(
            "SESSION_SQLALCHEMY_BIND_KEY",
            "is not read by Flask-Satchel; hand the bind's engine over instead:"
            " SESSION_SQLALCHEMY = db.engines[<bind key>]",
        )
    if config.get("SESSION_SQLALCHEMY_SEQUENCE") is not None:
        log.info("SESSION_SQLALCHEMY_SEQUENCE is ignored: Flask-Satchel's table is keyed by the session's hash")
    fmt = config.get("SESSION_SERIALIZATION_FORMAT")
    if fmt is not None:
        # Flask-Session's choice of record encoding; no user of Flask-Satchel can observe its own.
        log.info("SESSION_SERIALIZATION_FORMAT=%r is Flask-Session's; Flask-Satchel stores typed msgpack", fmt)

    client = config.get(_CLIENT_KEYS.get(kind, ""))
    if cachelib is not None:
        client = cachelib.client
        file_dir = cachelib.file_dir or file_dir
    elif kind == "sqlalchemy" and client is None and url is None:
        client, url = _sqlalchemy_source(config, extensions or {})
        if url is not None and url.scheme.partition("+")[0] == "sqlite":
            kind = "sqlite"
    table = config.get("SESSION_SQLALCHEMY_TABLE", "satchel_sessions")
    if not isinstance(table, str) or not table:
        raise ConfigError("SESSION_SQLALCHEMY_TABLE", f"expected a table name, got {table!r}")
    schema = config.get("SESSION_SQLALCHEMY_SCHEMA")
    if schema is not None and not isinstance(schema, str):
        raise ConfigError("SESSION_SQLALCHEMY_SCHEMA", f"expected a schema name or None, got {schema!r}")

    revocation_settings = None
    revocation_url = config.get("SESSION_COOKIE_REVOCATION_URL")
    if revocation_url is not None:
        if kind != "cookie":
            raise ConfigError("SESSION_COOKIE_REVOCATION_URL", "is only used with SESSION_TYPE='cookie'")
        try:
            revocation_settings = load(
                {
                    "SESSION_URL": revocation_url,
                    "SESSION_KEY_PREFIX": f"{prefix}revoked:",
                    "SESSION_STORE_TIMEOUT": config.get("SESSION_STORE_TIMEOUT", 2.0),
                    "SESSION_SQLALCHEMY_TABLE": f"{table}_revocations",
                },
                instance_path,
            )
        except ConfigError as e:
            raise ConfigError("SESSION_COOKIE_REVOCATION_URL", str(e)) from None
        if revocation_settings.type in ("cookie", "memcached"):
            raise ConfigError(
                "SESSION_COOKIE_REVOCATION_URL",
                f"needs a store that keeps records reliably, not {revocation_settings.type!r}",
            )

    max_per_user = config.get("SESSION_MAX_PER_USER")
    if max_per_user is not None and (
        not isinstance(max_per_user, int) or isinstance(max_per_user, bool) or max_per_user < 1
    ):
        raise ConfigError("SESSION_MAX_PER_USER", f"expected a positive integer or None, got {max_per_user!r}")
    if max_per_user is not None and kind == "cookie":
        raise ConfigError("SESSION_MAX_PER_USER", "needs a server-side store; the cookie store cannot list sessions")
    policy = config.get("SESSION_MAX_PER_USER_POLICY", "revoke_oldest")
    if policy not in ("revoke_oldest", "refuse"):
        raise ConfigError("SESSION_MAX_PER_USER_POLICY", f"expected 'revoke_oldest' or 'refuse', got {policy!r}")
    _check_cookie(config)
    rotate_interval = None
    if config.get("SESSION_ROTATE_INTERVAL") is not None:
        if kind == "cookie":
            raise ConfigError("SESSION_ROTATE_INTERVAL", "needs a server-side store; the cookie store has no sid")
        rotate_interval = _seconds(config, "SESSION_ROTATE_INTERVAL", 0, zero=False)

    default_file_dir = os.path.join(instance_path, "flask_satchel_sessions")
    return Settings(
        type=kind,
        url=url,
        permanent=_flag(config, "SESSION_PERMANENT", False),
        key_prefix=prefix,
        id_length=id_length,
        use_signer=use_signer,
        absolute_lifetime=_absolute_lifetime(config, idle),
        refresh_interval=_seconds(config, "SESSION_REFRESH_INTERVAL", 60.0, zero=True),
        user_key=user_key,
        track_client=_flag(config, "SESSION_TRACK_CLIENT", False),
        locking=_flag(config, "SESSION_LOCKING", False),
        lock_timeout=_seconds(config, "SESSION_LOCK_TIMEOUT", 10.0, zero=False),
        lock_lease=_seconds(config, "SESSION_LOCK_LEASE", 60.0, zero=False),
        store_timeout=_seconds(config, "SESSION_STORE_TIMEOUT", 2.0, zero=False),
        cleanup_n_requests=cleanup_n,
        sqlite_path=_local_path(
            url if kind == "sqlite" else None,
            "SESSION_URL",
            os.path.join(instance_path, "flask_satchel.sqlite3"),
            instance_path,
        ),
        file_dir=_local_path(
            url if kind == "filesystem" else None,
            "SESSION_URL",
            os.fspath(file_dir or default_file_dir),
            instance_path,
        ),
        file_mode=file_mode,
        client=client,
        sqlalchemy_table=table,
        sqlalchemy_schema=schema,
        sqlalchemy_create_table=_flag(config, "SESSION_SQLALCHEMY_CREATE_TABLE", True),
        rotate_interval=rotate_interval,
        rotation_grace=_seconds(config, "SESSION_ROTATION_GRACE", 5.0, zero=True),
        max_per_user=max_per_user,
        max_per_user_policy=policy,
        clear_site_data=_flag(config, "SESSION_CLEAR_SITE_DATA", False),
        no_store=_flag(config, "SESSION_NO_STORE", True),
        migrate_flask_cookies=_flag(config, "SESSION_MIGRATE_FLASK_COOKIES", False),
        migrate_flask_session=_flag(config, "SESSION_MIGRATE_FLASK_SESSION", False),
        revocation_settings=revocation_settings,
    )
