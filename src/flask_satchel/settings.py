"""Flask-Satchel's own configuration, read once at ``init_app``.

Flask's keys (cookie attributes, ``PERMANENT_SESSION_LIFETIME``,
``SESSION_REFRESH_EACH_REQUEST``, the secret) are not here: Flask reads them
on every request, and so does the interface. Neither are a store's own
keys (``SESSION_REDIS``, ``SESSION_FILE_DIR``, ``SESSION_SQLALCHEMY_TABLE``
…): each store reads and checks those in its ``from_settings``, from the
:class:`StoreSettings` it is given. Everything is checked up front, so a
mistake is a ``ConfigError`` naming the key when the app starts, not a 500
on the first request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import typing as t
from urllib.parse import SplitResult, urlsplit

from . import compat
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

_DAY = 86400.0
#: The absolute lifetime when neither it nor a longer idle lifetime is set.
_ABSOLUTE_DEFAULT = 30 * _DAY


@dataclasses.dataclass(frozen=True)
class StoreSettings:
    """What a store is opened from: the core's reading of the keys every store shares, and the config.

    A store reads and checks its own keys (``SESSION_REDIS``,
    ``SESSION_SQLALCHEMY_TABLE`` …) from :attr:`config` in its
    ``from_settings``, so each key is checked in one place, by the store
    that uses it.
    """

    type: str = "sqlite"
    #: ``SESSION_URL`` parsed, or None when the store is configured by type and client.
    url: SplitResult | None = None
    #: The app's config, with what ``SESSION_TYPE = "cachelib"`` or Flask-SQLAlchemy
    #: stand for in front (see :mod:`flask_satchel.compat`).
    config: t.Mapping[str, t.Any] = dataclasses.field(default_factory=dict)
    #: Relative paths (the SQLite file, the filesystem folder) are relative to this.
    instance_path: str = ""
    key_prefix: str = "session:"
    timeout: float = 2.0
    #: How long a session may live at most; stores that index a user's sessions keep the index as long.
    absolute_lifetime: float = _ABSOLUTE_DEFAULT
    locking: bool = False

    def client(self, key: str) -> t.Any:
        """The client the app handed over under ``key``, or None; with ``SESSION_URL`` too, a ``ConfigError``."""
        client = self.config.get(key)
        if client is not None and self.url is not None:
            raise ConfigError(key, f"give either {key} or SESSION_URL, not both")
        return client

    def local_path(self, default: str | os.PathLike[str]) -> str:
        """The file path of ``sqlite:///rel``, ``sqlite:////abs`` or ``file:///abs``, else ``default``.

        A relative path in the URL is relative to the instance folder, as in
        Flask-SQLAlchemy; ``default`` is taken as it is.
        """
        url = self.url
        if url is None:
            return os.fspath(default)
        if url.netloc:
            raise ConfigError("SESSION_URL", f"a {url.scheme} URL names a local path and no host, got {url.geturl()!r}")
        path = url.path[1:] if url.scheme == "sqlite" else url.path  # sqlite:///relative, sqlite:////absolute
        if not path or path == ":memory:":
            raise ConfigError("SESSION_URL", "needs a file path (use 'memory://' for an in-memory store)")
        return path if os.path.isabs(path) else os.path.join(self.instance_path, path)

    def flag(self, key: str, default: bool) -> bool:
        """A store's own True/False key."""
        return _flag(self.config, key, default)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of the core, validated. Times are in seconds."""

    #: The session store, or for the cookie store only its type.
    store: StoreSettings = StoreSettings()
    permanent: bool = False
    id_length: int = 32
    use_signer: bool = False
    refresh_interval: float = 60.0
    user_key: str = "_user_id"
    track_client: bool = False
    #: How long a request waits for its session's lock before a 503.
    lock_timeout: float = 10.0
    #: How long a lock lives if its holder never releases it (a crashed process).
    lock_lease: float = 60.0
    cleanup_n_requests: int | None = None
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
    revocations: StoreSettings | None = None

    @property
    def type(self) -> str:
        """The store type, as ``SESSION_TYPE`` names it."""
        return self.store.type


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
    return kind or "sqlite", url


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


def load(
    config: t.Mapping[str, t.Any], instance_path: str, extensions: t.Mapping[str, t.Any] | None = None
) -> Settings:
    """Read and check the core's keys from an app's config; the store's own keys are its ``from_settings``'s.

    The secret is not among them: like Flask, the interface reads
    ``app.secret_key`` when a request needs it, so an app factory may set it
    after ``init_app``. ``extensions`` is the app's, for Flask-SQLAlchemy.
    """
    kind, url = _type_and_url(config)
    kind, url, overrides = compat.resolve(kind, url, config, extensions or {})
    if kind not in TYPES:
        raise ConfigError("SESSION_TYPE", f"unknown type {kind!r}; accepted: {', '.join(TYPES)}")

    id_length = config.get("SESSION_ID_LENGTH", 32)
    if not isinstance(id_length, int) or isinstance(id_length, bool) or id_length < 32:
        raise ConfigError("SESSION_ID_LENGTH", f"must be at least 32 bytes (256 bits), got {id_length!r}")

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

    store = StoreSettings(
        type=kind,
        url=url,
        config={**config, **overrides} if overrides else config,
        instance_path=instance_path,
        key_prefix=prefix,
        timeout=_seconds(config, "SESSION_STORE_TIMEOUT", 2.0, zero=False),
        absolute_lifetime=_absolute_lifetime(config, idle),
        locking=_flag(config, "SESSION_LOCKING", False),
    )
    server_side = kind != "cookie"
    max_per_user = config.get("SESSION_MAX_PER_USER")
    if max_per_user is not None and (
        not isinstance(max_per_user, int) or isinstance(max_per_user, bool) or max_per_user < 1
    ):
        raise ConfigError("SESSION_MAX_PER_USER", f"expected a positive integer or None, got {max_per_user!r}")
    if max_per_user is not None and not server_side:
        raise ConfigError("SESSION_MAX_PER_USER", "needs a server-side store; the cookie store cannot list sessions")
    policy = config.get("SESSION_MAX_PER_USER_POLICY", "revoke_oldest")
    if policy not in ("revoke_oldest", "refuse"):
        raise ConfigError("SESSION_MAX_PER_USER_POLICY", f"expected 'revoke_oldest' or 'refuse', got {policy!r}")
    _check_cookie(config)
    rotate_interval = None
    if config.get("SESSION_ROTATE_INTERVAL") is not None:
        if not server_side:
            raise ConfigError("SESSION_ROTATE_INTERVAL", "needs a server-side store; the cookie store has no sid")
        rotate_interval = _seconds(config, "SESSION_ROTATE_INTERVAL", 0, zero=False)

    return Settings(
        store=store,
        permanent=_flag(config, "SESSION_PERMANENT", False),
        id_length=id_length,
        use_signer=_flag(config, "SESSION_USE_SIGNER", False),
        refresh_interval=_seconds(config, "SESSION_REFRESH_INTERVAL", 60.0, zero=True),
        user_key=user_key,
        track_client=_flag(config, "SESSION_TRACK_CLIENT", False),
        lock_timeout=_seconds(config, "SESSION_LOCK_TIMEOUT", 10.0, zero=False),
        lock_lease=_seconds(config, "SESSION_LOCK_LEASE", 60.0, zero=False),
        cleanup_n_requests=cleanup_n,
        rotate_interval=rotate_interval,
        rotation_grace=_seconds(config, "SESSION_ROTATION_GRACE", 5.0, zero=True),
        max_per_user=max_per_user,
        max_per_user_policy=policy,
        clear_site_data=_flag(config, "SESSION_CLEAR_SITE_DATA", False),
        no_store=_flag(config, "SESSION_NO_STORE", True),
        migrate_flask_cookies=_flag(config, "SESSION_MIGRATE_FLASK_COOKIES", False),
        migrate_flask_session=_flag(config, "SESSION_MIGRATE_FLASK_SESSION", False),
        revocations=_revocations(config, store),
    )


def _revocations(config: t.Mapping[str, t.Any], sessions: StoreSettings) -> StoreSettings | None:
    """``SESSION_COOKIE_REVOCATION_URL``: the store of the cookie store's per-user revocation marks."""
    raw_url = config.get("SESSION_COOKIE_REVOCATION_URL")
    if raw_url is None:
        return None
    if sessions.type != "cookie":
        raise ConfigError("SESSION_COOKIE_REVOCATION_URL", "is only used with SESSION_TYPE='cookie'")
    try:
        kind, url = _type_and_url({"SESSION_URL": raw_url})
    except ConfigError as e:
        raise ConfigError("SESSION_COOKIE_REVOCATION_URL", str(e)) from None
    if kind in ("cookie", "memcached"):
        raise ConfigError("SESSION_COOKIE_REVOCATION_URL", f"needs a store that keeps records reliably, not {kind!r}")
    # Only the URL configures it: the session keys of the app (a client, a
    # folder) are for a store this app does not have.
    table = config.get("SESSION_SQLALCHEMY_TABLE", "satchel_sessions")
    return dataclasses.replace(
        sessions,
        type=kind,
        url=url,
        config={"SESSION_SQLALCHEMY_TABLE": f"{table}_revocations"},
        key_prefix=f"{sessions.key_prefix}revoked:",
        locking=False,
    )
