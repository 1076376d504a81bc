"""Flask-Session's records, read once so its users stay logged in (``SESSION_MIGRATE_FLASK_SESSION``).

An app that switches from Flask-Session 0.8 keeps its store and its users'
cookies. A cookie that names no Flask-Satchel session is offered to the
importer of the configured backend, which reads Flask-Session's record for
it (one read), deletes it so the old cookie can never be replayed, and hands
back its data, permanence and deadline. The interface then stores them as a
new Flask-Satchel session with a new id.

What is shared by every backend lives here: the cookie (Flask-Session's
``itsdangerous`` signature when ``SESSION_USE_SIGNER`` is on, checked with
``SECRET_KEY`` and every key in ``SECRET_KEY_FALLBACKS``; then the shape of
``secrets.token_urlsafe(SESSION_ID_LENGTH)``, so nothing else is ever looked
up), the store id (``SESSION_KEY_PREFIX + sid``, as Flask-Session keys its
records), and the record (msgpack or JSON through msgspec, in the order
``SESSION_SERIALIZATION_FORMAT`` names, as Flask-Session decodes it, but
never its last resort, pickle). One module per backend finds, takes and
deletes the record: ``redis``, ``memcached``, ``files`` (cachelib's
``FileSystemCache``, whose framing is pickle: read by an unpickler that
refuses every global, so no class can load) and ``sql``.

A record that does not decode, or holds a value Flask-Satchel cannot store,
is skipped with a warning on ``flask_satchel.security``: the user starts a
new session, never an error page. It is gone all the same, since it was
taken before it was read.
"""

from __future__ import annotations

import hashlib
import logging
import time
import typing as t

import msgspec
from itsdangerous import BadSignature, Signer

from .. import ids, serialization
from ..errors import ConfigError

if t.TYPE_CHECKING:
    from flask import Flask

    from ..settings import Settings
    from ..stores.base import Store

__all__ = ["Imported", "Importer", "open_importer"]

security_log = logging.getLogger("flask_satchel.security")
log = logging.getLogger("flask_satchel")

#: The key Flask's ``SessionMixin.permanent`` keeps in Flask-Session's data.
_PERMANENT = "_permanent"

#: Flask-Satchel stores with no Flask-Session backend behind them, and why.
_NOTHING_TO_IMPORT = {
    "sqlite": "Flask-Session has no SQLite store of its own (its SQLite is SESSION_TYPE 'sqlalchemy')",
    "memory": "a memory store starts empty, and nothing of Flask-Session's outlives the restart that switches",
    "cookie": "the cookie store keeps no server-side records, and Flask-Session kept nothing in its cookie",
}


class Imported(t.NamedTuple):
    """A Flask-Session session, taken over."""

    #: Its values, without Flask-Session's ``_permanent`` key.
    data: dict[str, t.Any]
    #: Flask's ``session.permanent`` as Flask-Session kept it.
    permanent: bool
    #: When Flask-Session's record would have expired (Unix time).
    expires_at: float


class Importer(t.Protocol):
    """Reads and deletes Flask-Session's record behind a cookie, for one backend."""

    def take(self, app: Flask, cookie: str) -> Imported | None:
        """The live record of the Flask-Session cookie ``cookie``, deleted as it is read.

        None when the cookie is not Flask-Session's (a bad signature), names
        no live record, or the record does not decode (logged, never raised).
        ``StoreUnavailable`` when the backend cannot be reached.
        """

    def close(self) -> None:
        """Release what the importer opened."""


class Taken(t.NamedTuple):
    """What a backend took out of its store: the record as stored, and its deadline."""

    #: The encoded record (bytes), or for cachelib's files the object its pickle held.
    record: t.Any
    #: When the record would have expired (Unix time).
    expires_at: float


class Unreadable(ValueError):
    """A Flask-Session record that cannot become a Flask-Satchel session; the message says why."""


def session_data(value: t.Any) -> tuple[dict[str, t.Any], bool]:
    """Flask-Session's decoded record as (data, permanent); ``Unreadable`` if it is not a session.

    Every value must be one Flask-Satchel can store: a record holding
    anything else (a set, an unknown msgpack extension, nesting past
    ``MAX_DEPTH``) is refused here, whole, rather than failing the request's
    save later. Keeping the rest of such a session could leave it half
    logged in.
    """
    if type(value) is not dict:
        raise Unreadable(f"the record is a {type(value).__name__}, not a dict")
    data: dict[str, t.Any] = {}
    for key, item in value.items():
        if type(key) is not str:
            raise Unreadable(f"the record has a key of type {type(key).__name__}")
        data[key] = item
    permanent = data.pop(_PERMANENT, False)
    for key, item in data.items():
        try:
            serialization.encode_value(item)
        except serialization.SerializationError as e:
            raise Unreadable(f"session key {key!r}: {e}") from None
    return data, permanent is True


class BaseImporter:
    """``take`` for every backend: the cookie, the store id, the decoding; subclasses take the record."""

    #: The backend, as log lines name it.
    backend = ""

    def __init__(self, settings: Settings, app: Flask) -> None:
        self.key_prefix = settings.store.key_prefix
        self.use_signer = settings.use_signer
        self._pattern = ids.sid_pattern(settings.id_length)
        self._signer: tuple[tuple[t.Any, ...], Signer] | None = None
        msgpack = msgspec.msgpack.Decoder().decode
        json = msgspec.json.Decoder().decode
        # Flask-Session tries its configured format first, then the other one.
        json_first = app.config.get("SESSION_SERIALIZATION_FORMAT") == "json"
        self._decoders = (json, msgpack) if json_first else (msgpack, json)

    # The cookie -------------------------------------------------------------------------

    def _flask_session_signer(self, app: Flask) -> Signer | None:
        """Flask-Session's signer (``SESSION_USE_SIGNER``), verifying with the app's key and its fallbacks."""
        secret = app.secret_key
        if not secret:
            return None
        fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or ()
        ident = (secret, *fallbacks)
        if self._signer is None or self._signer[0] != ident:
            # itsdangerous verifies with every key of the list.
            signer = Signer([*fallbacks, secret], salt="flask-session", key_derivation="hmac")
            self._signer = (ident, signer)
        return self._signer[1]

    def sid_of(self, app: Flask, cookie: str) -> str | None:
        """The Flask-Session sid in ``cookie``; None when the cookie cannot be one."""
        sid = cookie
        if self.use_signer:
            signer = self._flask_session_signer(app)
            if signer is None:
                return None
            try:
                sid = signer.unsign(cookie).decode()
            except (BadSignature, UnicodeError):
                return None
        if not self._pattern.fullmatch(sid):
            return None
        return sid

    # The record ---------------------------------------------------------------------------

    def decode(self, raw: t.Any) -> t.Any:
        """Flask-Session's encoded record, as its ``MsgSpecSerializer`` reads it, minus pickle."""
        if isinstance(raw, str):
            raw = raw.encode()
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise Unreadable(f"the record is a {type(raw).__name__}, not bytes")
        errors = []
        for decode in self._decoders:
            try:
                return decode(raw)
            except Exception as e:  # msgspec.DecodeError, or RecursionError for crafted nesting
                errors.append(f"{type(e).__name__}: {e}")
        raise Unreadable("neither msgpack nor JSON: " + "; ".join(errors))

    def load(self, record: t.Any) -> t.Any:
        """The record's content, decoded; backends whose records are already objects override it."""
        return self.decode(record)

    def take(self, app: Flask, cookie: str) -> Imported | None:
        sid = self.sid_of(app, cookie)
        if sid is None:
            return None
        store_id = self.key_prefix + sid
        lifetime = app.permanent_session_lifetime.total_seconds()
        taken = self.take_record(store_id, time.time(), lifetime)
        if taken is None:
            return None
        try:
            data, permanent = session_data(self.load(taken.record))
        except Unreadable as e:
            self.skipped(store_id, str(e))
            return None
        if not data:
            return None  # only ``_permanent``: a session Flask-Session itself treats as empty
        return Imported(data, permanent, taken.expires_at)

    def skipped(self, store_id: str, why: str) -> None:
        """Log a record that was taken but cannot be imported, naming it by a hash, never by its sid."""
        name = hashlib.sha256(store_id.encode()).hexdigest()[:16]
        security_log.warning("Skipped an unreadable Flask-Session record (%s, %s): %s", self.backend, name, why)

    def take_record(self, store_id: str, now: float, lifetime: float) -> Taken | None:
        """Read and delete the record ``store_id``, if it is there and alive; the backend's one job.

        ``lifetime`` (``PERMANENT_SESSION_LIFETIME``, in seconds) stands in
        for a deadline the backend cannot tell.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release: every importer uses the client or engine of Flask-Satchel's own store."""


def check_importable(settings: Settings, app: Flask) -> None:
    """``ConfigError`` naming ``SESSION_MIGRATE_FLASK_SESSION`` for a store Flask-Session has no backend for.

    There is nothing to import then. It touches no server, so an app starts
    while its store is down.
    """
    kind = settings.type
    if app.config.get("SESSION_TYPE") == "cachelib" and kind != "filesystem":
        # cachelib's other caches pickle what they keep, under keys of their own making.
        raise ConfigError(
            "SESSION_MIGRATE_FLASK_SESSION",
            "only a cachelib FileSystemCache holds Flask-Session sessions that can be imported; remove the key",
        )
    if kind in _NOTHING_TO_IMPORT:
        raise ConfigError(
            "SESSION_MIGRATE_FLASK_SESSION",
            f"nothing to import with SESSION_TYPE {kind!r}: {_NOTHING_TO_IMPORT[kind]}; remove the key",
        )


def open_importer(settings: Settings, app: Flask, store: Store) -> Importer | None:
    """The importer for the configured backend, on ``store``'s own client, engine or folder."""
    check_importable(settings, app)
    kind = settings.type
    if kind == "redis":
        from .redis import RedisImporter

        return RedisImporter(settings, app, store)
    if kind == "memcached":
        from .memcached import MemcachedImporter

        return MemcachedImporter(settings, app, store)
    if kind == "filesystem":
        from .files import FileImporter

        return FileImporter(settings, app)
    if kind == "sqlalchemy":
        from .sql import SQLImporter

        return SQLImporter(settings, app, store)
    raise ConfigError("SESSION_MIGRATE_FLASK_SESSION", f"no Flask-Session backend matches SESSION_TYPE {kind!r}")
