"""The Store protocol: what a session store must do, and nothing more.

The interface owns cookies, ids, expiry and the delta of what a request
changed. A store only keeps records under a key (already a hash of the
session id, never the id itself) and applies a delta atomically in its own
native way: a Lua script, a row lock, a file lock, compare-and-set. Stores do
not import Flask and do not encode values: values arrive and leave as bytes.

Every method that talks to a server raises ``StoreUnavailable`` when the
server cannot be reached or does not answer within the store's timeout.
"""

from __future__ import annotations

import hashlib
import threading
import typing as t

import msgspec

_T = t.TypeVar("_T")


class Record(msgspec.Struct, kw_only=True):
    """One stored session. Times are Unix timestamps (``time.time()``)."""

    #: Each session key with its encoded value (``serialization.encode``).
    data: dict[str, bytes] = {}
    #: When the session was first created; the absolute timeout counts from here.
    created_at: float
    #: The last write or refresh; the idle timeout counts from here.
    last_seen: float
    #: When the record dies: ``min(last_seen + idle, created_at + absolute)``.
    expires_at: float
    #: Flask's ``session.permanent``: metadata, never a key of the session.
    permanent: bool = False
    #: ``str(session[SESSION_USER_KEY])`` when set, for the per-user index.
    user: str | None = None
    #: Client details kept for session lists (ip, user agent) when tracked.
    client: dict[str, str] | None = None


class Change(msgspec.Struct, kw_only=True):
    """What one request changed: applied on top of the current record."""

    #: Keys the request set, with their new encoded values.
    set: dict[str, bytes] = {}
    #: Keys the request deleted.
    removed: list[str] = []
    #: The new ``last_seen`` and ``expires_at`` of the record.
    last_seen: float
    expires_at: float
    permanent: bool = False
    #: When ``user_changed``, the record's ``user`` becomes ``user``.
    user_changed: bool = False
    user: str | None = None
    #: When not None, replaces the record's client details.
    client: dict[str, str] | None = None


def times_after(change: Change, last_seen: float, expires_at: float) -> tuple[float, float]:
    """``last_seen`` and ``expires_at`` of a record with ``last_seen``/``expires_at`` once ``change`` is applied.

    They only move forward: a request that read the record before another
    request refreshed it still carries the older times, and its change
    must not shorten the session again.
    """
    if change.last_seen >= last_seen:
        return change.last_seen, change.expires_at
    return last_seen, expires_at


def merge_data(data: dict[str, bytes], change: Change) -> dict[str, bytes]:
    """``data`` with the keys ``change`` removed and set (``data`` is changed in place)."""
    for key in change.removed:
        data.pop(key, None)
    data.update(change.set)
    return data


def merge(record: Record, change: Change) -> Record:
    """Return ``record`` with ``change`` applied; for stores that merge in Python."""
    data = merge_data(dict(record.data), change)
    last_seen, expires_at = times_after(change, record.last_seen, record.expires_at)
    return Record(
        data=data,
        created_at=record.created_at,
        last_seen=last_seen,
        expires_at=expires_at,
        permanent=change.permanent,
        user=change.user if change.user_changed else record.user,
        client=record.client if change.client is None else change.client,
    )


#: A whole record as one msgpack blob, for the stores that keep a session as
#: one value (Redis, memcached, files); the SQL stores keep it in columns.
encode_record: t.Callable[[Record], bytes] = msgspec.msgpack.Encoder().encode
#: The inverse of ``encode_record``; raises ``msgspec.DecodeError`` (a ``ValueError``) on bad bytes.
decode_record: t.Callable[[bytes], Record] = msgspec.msgpack.Decoder(Record).decode


def user_hash(user: str, purpose: bytes = b"") -> str:
    """The name a store files a user's sessions under: a hash, so a store listing names no user."""
    return hashlib.sha256(purpose + user.encode()).hexdigest()[:32]


_unpack_data = msgspec.msgpack.Decoder(dict[str, bytes]).decode
_unpack_client = msgspec.msgpack.Decoder(dict[str, str]).decode


def record_from_row(row: t.Sequence[t.Any]) -> Record:
    """A record from the columns the SQL stores keep it in.

    ``(data, created_at, last_seen, expires_at, permanent, user, client)``:
    ``data`` and ``client`` are msgpack blobs (``data`` may be None when a
    listing did not select it), ``permanent`` an integer.
    """
    data, created_at, last_seen, expires_at, permanent, user, client = row
    return Record(
        data={} if data is None else _unpack_data(data),
        created_at=created_at,
        last_seen=last_seen,
        expires_at=expires_at,
        permanent=bool(permanent),
        user=user,
        client=None if client is None else _unpack_client(client),
    )


class LastRead(t.Generic[_T]):
    """Per thread, what the last ``load`` read for one key, handed once to a change of that key.

    A request loads its session and then changes it. A store that can write
    conditionally (memcached ``cas``, an SQL ``UPDATE … WHERE data = …``)
    applies the change against exactly what it read, and skips reading it
    again. What is kept is only a guess: if another request wrote since, the
    conditional write fails and the store falls back to its full
    read-merge-write, so nothing is lost.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def keep(self, key: str, value: _T | None) -> None:
        """Remember ``value`` as read for ``key``; None forgets (a failed or empty read)."""
        self._local.last = None if value is None else (key, value)

    def take(self, key: str) -> _T | None:
        """What was read for ``key``, once; None if the last read was of another key, or none."""
        last = getattr(self._local, "last", None)
        self._local.last = None
        return last[1] if last is not None and last[0] == key else None


@t.runtime_checkable
class Store(t.Protocol):
    """A place to keep session records. One module per store implements it."""

    def load(self, key: str) -> Record | None:
        """Return the record under ``key``, or None if there is none.

        A store may return a record whose ``expires_at`` has passed; the
        interface checks expiry itself (the idle timeout may have shrunk).
        """

    def create(self, key: str, record: Record) -> None:
        """Store a new record under a freshly generated ``key``."""

    def apply(self, key: str, change: Change) -> int | None:
        """Apply ``change`` atomically to the record under ``key``.

        Keys changed by other requests in the meantime are kept, and so are
        ``last_seen`` and ``expires_at`` when they are newer than the
        change's (``times_after``). Returns the
        number of keys the record holds afterwards; when that is 0 the record
        is deleted. Returns None, and writes nothing, when the record is gone
        (destroyed, regenerated, revoked or expired): a late write must never
        bring a dead session back.
        """

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        """Extend a record's life without rewriting it; False when it is gone."""

    def delete(self, key: str) -> bool:
        """Delete the record; True when there was one."""

    def sessions(self, now: float, user: str | None = None) -> list[tuple[str, Record]]:
        """Live records with their keys, of one user or of everyone.

        ``data`` may be left empty: callers want the metadata. Stores that
        cannot list every session raise ``NotSupported`` when ``user`` is None.
        """

    def cleanup(self, now: float) -> int:
        """Delete records expired at ``now``; return how many (0 with native TTL)."""

    def count(self, now: float) -> int:
        """How many live records there are."""

    def close(self) -> None:
        """Release connections and files."""


@t.runtime_checkable
class LockingStore(Store, t.Protocol):
    """A store that can also serialise one session's requests (``SESSION_LOCKING``).

    A lock is a lease: it names its holder (``token``) and lapses after
    ``lease`` seconds, so a process that dies holding it cannot block the
    session for ever. Stores whose locks die with their holder (``flock``)
    may ignore ``lease``.
    """

    def lock(self, key: str, token: str, lease: float) -> bool:
        """Take the lock of ``key`` for ``token`` if it is free or lapsed; never waits."""

    def unlock(self, key: str, token: str) -> bool:
        """Release the lock if ``token`` still holds it; False when it had lapsed or been taken."""


@t.runtime_checkable
class HasSchema(t.Protocol):
    """A store that keeps its records in a table it can create (``flask session create-table``)."""

    def create_table(self) -> None:
        """Create the store's table and indexes if they are missing."""


@t.runtime_checkable
class Described(t.Protocol):
    """A store that says what it runs on, in OpenTelemetry's database attributes (``db.system``, ``server.address`` …).

    Nothing secret: no password, no session key. Telemetry
    (:mod:`flask_satchel.telemetry`) puts these on every span and measurement.
    """

    def describe(self) -> dict[str, str | int]:
        """The attributes that name this store's database."""
