"""The memcached store: records under ``prefix + key``, changed by compare-and-set.

Memcached has no scripts and no locks, so a change is a compare-and-set
loop: ``gets`` the record with its CAS token, merge the delta in Python,
``cas`` it back, and start again when another request wrote in between.
A record that is gone stays gone: ``cas`` on a missing key stores nothing.
Deleting is a ``cas`` too, with an expiry in the past, so a request that
empties the record cannot drop keys another request has just added.

- ``touch`` rewrites the record with compare-and-set. Memcached's own
  ``touch`` command would move the server's TTL but leave ``last_seen`` and
  ``expires_at`` in the record stale, and the interface, which checks expiry
  on read, would end the session at the old time anyway. A refresh only
  happens once per refresh interval, so the extra round trip is rare.
- A change is one round trip after the load. A request loads its session
  and then changes it, so ``load`` reads with ``gets`` (as cheap as ``get``)
  and keeps, per thread, the value and CAS token it read: a change of that
  key then tries ``cas`` with that token straight away, instead of ``gets``
  + ``cas``. This is safe whatever request the token came from: memcached
  gives every write of an item a new token, so a ``cas`` with it succeeds
  only while the item is still exactly the value read with it, and the
  merge was then made on the current record. A token that is stale
  (another request wrote, or this one was loaded long ago by a request that
  failed) only makes the ``cas`` fail, and the loop above takes over, so no
  concurrent change is lost. It is taken once, and only for the same key,
  so a failed or mismatched token costs at most that one try.
- Memcached cannot list its keys, so listing everyone's sessions and
  counting them raise ``NotSupported``; ``cleanup()`` has nothing to do,
  because memcached drops expired records by itself.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import typing as t

import msgspec

from ...errors import NotSupported, StoreUnavailable
from ..base import Change, LastRead, Record, decode_record, encode_record, merge
from .clients import client_from
from .index import LONGEST_SUFFIX, UserIndex
from .limits import GONE, check_prefix, exptime, store_item
from .servers import Cluster

if t.TYPE_CHECKING:
    from ...settings import StoreSettings

_LOCK = "lock:"


class MemcachedStore:
    """Records in one memcached server, or several with keys hashed over them."""

    #: How many times a compare-and-set is tried against concurrent writers.
    cas_attempts = 50

    def __init__(
        self,
        client: t.Any,
        *,
        prefix: str = "session:",
        index_lifetime: float = 30 * 86400.0,
        owns_client: bool = False,
    ) -> None:
        self._cluster = Cluster(client)
        check_prefix(prefix, LONGEST_SUFFIX)
        self.client = client
        self.prefix = prefix
        #: Every user's index of sessions (see ``index``).
        self._index = UserIndex(self._cluster, prefix, index_lifetime, self._retries)
        #: Close the client in ``close()``: only a client this store created.
        self.owns_client = owns_client
        #: Per thread, the value and CAS token the last ``load`` read (see the module docstring).
        self._seen: LastRead[tuple[bytes, int]] = LastRead()

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> MemcachedStore:
        client, owns_client = client_from(settings)
        return cls(
            client, prefix=settings.key_prefix, index_lifetime=settings.absolute_lifetime, owns_client=owns_client
        )

    def describe(self) -> dict[str, str | int]:
        described: dict[str, str | int] = {"db.system": "memcached"}
        if len(self._cluster.servers) == 1:  # several: each key has its own server
            host, _, port = next(iter(self._cluster.servers)).rpartition(":")
            if host and port.isdigit():
                described.update({"server.address": host, "server.port": int(port)})
        return described

    @property
    def index_lifetime(self) -> float:
        """The absolute session lifetime, which a user's index of one period covers."""
        return self._index.lifetime

    def call(self, full_key: str, command: str, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """``client.command(*args, **kwargs)`` on the server that holds ``full_key``, as the store calls it.

        With the store's connections, locks and errors (an unreachable server
        is ``StoreUnavailable``), for code that reads records beside the
        store's own, such as the Flask-Session importer. ``full_key`` is the
        whole memcached key, prefix included; ``args`` are the command's own,
        the key again for most.
        """
        return self._cluster.server(full_key).call(command, *args, **kwargs)

    def _retries(self, what: str) -> t.Iterator[int]:
        """Attempts at a compare-and-set, with a short random pause after a conflict."""
        for attempt in range(self.cas_attempts):
            if attempt:
                time.sleep(random.uniform(0, 0.0005 * min(attempt, 8)))
            yield attempt
        raise StoreUnavailable(f"{what} kept changing under {self.cas_attempts} compare-and-set attempts")

    def _take_seen(self, full: str) -> tuple[bytes, int] | None:
        """The value and CAS token the last ``load`` of this thread read for ``full``, used once (see above)."""
        return self._seen.take(full)

    # The Store protocol ------------------------------------------------------------

    def load(self, key: str) -> Record | None:
        full = self.prefix + key
        self._seen.keep(full, None)  # a failed read leaves nothing behind
        value, cas = self._cluster.server(full).call("gets", full)
        if value is None:
            return None
        record = decode_record(value)
        self._seen.keep(full, (value, cas))
        return record

    def create(self, key: str, record: Record) -> None:
        full = self.prefix + key
        server = self._cluster.server(full)
        if not store_item(server, "set", full, encode_record(record), expire=exptime(record.expires_at)):
            raise StoreUnavailable(f"memcached did not store session {key}")
        # After the record, so a listing never prunes the key of a record
        # about to be written. If this fails the request is a 503 and the
        # browser never learns the session id.
        if record.user is not None:
            self._index.add(record.user, key, record.created_at)

    def _update(self, key: str, edit: t.Callable[[Record], Record]) -> tuple[Record, Record] | None:
        """Compare-and-set ``edit(record)`` in place; the old and new record, or None when gone."""
        full = self.prefix + key
        server = self._cluster.server(full)
        seen = self._take_seen(full)
        for _ in self._retries(f"session {key}"):
            value, cas = seen if seen is not None else server.call("gets", full)
            seen = None  # a conflict reads afresh
            if value is None:
                return None
            old = decode_record(value)
            new = edit(old)
            expire = exptime(new.expires_at) if new.data else GONE
            # A refused cas leaves the old value in place: the session keeps its last good state.
            stored = store_item(server, "cas", full, encode_record(new), cas, expire=expire)
            if stored is None:
                return None  # deleted between our gets and cas
            if stored:
                return old, new
        raise AssertionError("unreachable")  # pragma: no cover

    def apply(self, key: str, change: Change) -> int | None:
        indexed = change.user is None or not change.user_changed

        def edit(record: Record) -> Record:
            nonlocal indexed
            if not indexed:
                # Before the record is written: a listing prunes keys whose
                # record is gone, never keys whose record names another user,
                # so this entry is safe. The index is the one of the period the
                # session was created in, hence here, once the record is read.
                self._index.add(t.cast(str, change.user), key, record.created_at)
                indexed = True
            return merge(record, change)

        result = self._update(key, edit)
        if result is None:
            return None
        old, new = result
        if old.user is not None and (old.user != new.user or not new.data):
            self._index.remove(old.user, key, old.created_at)
        return len(new.data)

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        result = self._update(
            key, lambda record: msgspec.structs.replace(record, last_seen=last_seen, expires_at=expires_at)
        )
        return result is not None

    def delete(self, key: str) -> bool:
        full = self.prefix + key
        server = self._cluster.server(full)
        seen = self._take_seen(full)
        # After a load (logout, an expired record, rotation) a ``cas`` with
        # an expiry in the past deletes in one round trip, and proves the
        # value read is the one deleted, so its user's index is the one to
        # edit. Anything else (no load, or a write since) reads first.
        value = None
        if seen is not None:
            deleted = server.call("cas", full, b"", seen[1], expire=GONE, noreply=False)
            if deleted is None:
                return False  # gone already
            if deleted:
                value = seen[0]
        if value is None:
            value = server.call("get", full)
            if value is None or not server.call("delete", full, noreply=False):
                return False
        with contextlib.suppress(msgspec.DecodeError):
            record = decode_record(value)
            if record.user is not None:
                self._index.remove(record.user, key, record.created_at)
        return True

    def sessions(self, now: float, user: str | None = None) -> list[tuple[str, Record]]:
        if user is None:
            raise NotSupported(
                "memcached cannot list its keys, so the memcached store cannot list every session;"
                " list one user's sessions with sessions_of(user)"
            )
        return self._index.sessions(user, now)

    def cleanup(self, now: float) -> int:
        return 0  # memcached drops expired records by itself

    def count(self, now: float) -> int:
        raise NotSupported(
            "memcached cannot list its keys, so the memcached store cannot count sessions;"
            " count them in your app if you need the number"
        )

    def lock(self, key: str, token: str, lease: float) -> bool:
        """``add`` stores only when the key is absent, atomically; its expiry is the lease (whole seconds)."""
        full = self.prefix + _LOCK + key
        return bool(self.call(full, "add", full, token.encode(), expire=max(1, math.ceil(lease)), noreply=False))

    def unlock(self, key: str, token: str) -> bool:
        """Delete the lock only if it is still ours: ``gets``, compare, then ``cas`` it away."""
        full = self.prefix + _LOCK + key
        server = self._cluster.server(full)
        value, cas = server.call("gets", full)
        if value is None or bytes(value) != token.encode():
            return False
        return bool(server.call("cas", full, b"", cas, expire=GONE, noreply=False))

    def close(self) -> None:
        if self.owns_client:
            self.client.close()
