"""The Store protocol on Redis: a session is one string with native expiry, changed by compare-and-set."""

from __future__ import annotations

import contextlib
import typing as t

import msgspec
import redis

from ...errors import ConfigError, StoreUnavailable
from ..base import Change, LastRead, Record, decode_record, encode_record, merge
from . import clients, startup
from .clients import LazyCluster
from .errors import Unavailable
from .index import Command, Index
from .scripts import COMPARE_AND_SET, UNLOCK, Script
from .threads import PerThread

if t.TYPE_CHECKING:
    from ...settings import StoreSettings


def _ms(timestamp: float) -> int:
    return int(timestamp * 1000)


class RedisStore:
    """Records as Redis strings with native expiry; changes are compare-and-set scripts."""

    #: After this many compare-and-set attempts lost to other writers of the same
    #: session, a change gives up with a 503. Every lost attempt is another
    #: request's win, so this only trips under a storm of writes to one session.
    attempts = 50

    def __init__(
        self, opened: clients.Opened, *, prefix: str = "session:", index_lifetime: float = 30 * 86400.0
    ) -> None:
        client = opened.client
        if not isinstance(client, LazyCluster):
            clients.check_client(client)
        self._client = client
        #: Maps redis-py's errors to ``StoreUnavailable``; its messages name the key that set the client up.
        self._unavailable = Unavailable(clients.where(client), opened.key, clients.after_timeout(client))
        self.prefix = prefix
        #: Each user's sessions, and the listings.
        self._index = Index(prefix, index_lifetime, lambda: self.client, self._unavailable)
        self._key = self._index.session
        #: Close the client in ``close()``: only a client this store created.
        self.owns_client = opened.owned
        self._also_close = list(opened.also_close)
        #: For a client this store made on one server (or Sentinel's master): a
        #: connection per thread for a request's commands; else None (the client's pool).
        self._per_thread = PerThread(client) if opened.owned and isinstance(client, redis.Redis) else None
        #: The client to send this request's commands on (call it inside ``self._unavailable``).
        self._conn: t.Callable[[], t.Any]
        if self._per_thread is not None:
            self._conn = self._per_thread.get
        elif isinstance(client, LazyCluster):
            self._conn = client.get
        else:
            self._conn = lambda: client
        #: What this thread's last load read (bytes and record), for the compare-and-set of its change.
        self._read: LastRead[tuple[bytes, Record]] = LastRead()

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> RedisStore:
        store = cls(
            clients.from_settings(settings), prefix=settings.key_prefix, index_lifetime=settings.absolute_lifetime
        )
        try:
            startup.check(store._client, store._unavailable, settings.timeout)
        except ConfigError:
            store.close()
            raise
        return store

    # Plumbing ------------------------------------------------------------------------

    @property
    def client(self) -> t.Any:
        """The redis-py client (``Redis`` or ``RedisCluster``)."""
        if isinstance(self._client, LazyCluster):
            with self._unavailable:
                return self._client.get()
        return self._client

    def describe(self) -> dict[str, str | int]:
        described: dict[str, str | int] = {"db.system": "redis"}
        if isinstance(self._client, redis.Redis):  # a Cluster's or Sentinel's server changes; none is named
            settings = self._client.get_connection_kwargs()
            if "host" in settings and "port" in settings:
                described.update({"server.address": settings["host"], "server.port": int(settings["port"])})
            described["db.namespace"] = str(settings.get("db", 0))
        return described

    def _lock(self, key: str) -> str:
        return f"{self.prefix}lock:{{{key}}}"  # the session's slot; not matched by the index's SCAN

    def _after(self, before: t.Sequence[Command], command: Command) -> t.Any:
        """Send ``before`` and then ``command`` in one pipeline, one round trip; ``command``'s reply."""
        pipe = self._conn().pipeline(transaction=False)
        for other in (*before, command):
            # execute_command: a cluster pipeline refuses its evalsha() method, not the command.
            pipe.execute_command(*other)
        return pipe.execute()[-1]

    def _run(self, script: Script, key: str, args: t.Sequence[t.Any], before: t.Sequence[Command] = ()) -> t.Any:
        """Run ``script`` on the Redis key ``key``, after ``before`` commands, in one round trip."""
        with self._unavailable:
            conn = self._conn()
            if before:
                return script.call(lambda sha: self._after(before, ("EVALSHA", sha, 1, key, *args)), conn.script_load)
            return script.call(lambda sha: conn.evalsha(sha, 1, key, *args), conn.script_load)

    # The Store protocol ------------------------------------------------------------

    def load(self, key: str) -> Record | None:
        with self._unavailable:
            value = self._conn().get(self._key(key))
        if value is None:
            return None
        record = decode_record(value)
        self._read.keep(key, (value, record))
        return record

    def create(self, key: str, record: Record) -> None:
        name, value, at = self._key(key), encode_record(record), _ms(record.expires_at)
        with self._unavailable:
            if record.user is None:
                self._conn().set(name, value, pxat=at)
            else:
                self._after(self._index.joins(record.user, key), ("SET", name, value, "PXAT", at))

    def _update(
        self, key: str, edit: t.Callable[[Record], Record], before: t.Sequence[Command] = ()
    ) -> tuple[Record, Record] | None:
        """Write ``edit(record)`` over the record, if it is still the one edited: (old, new), or None if gone.

        The first attempt starts from what this thread's last ``load`` of
        the key read, so a request's change costs one round trip.
        """
        name = self._key(key)
        read = self._read.take(key)  # the interface never mutates a loaded record
        if read is None:
            with self._unavailable:
                value = self._conn().get(name)
        else:
            value = read[0]
        for _ in range(self.attempts):
            if value is None:
                return None
            old = decode_record(value) if read is None else read[1]
            read = None
            new = edit(old)
            written = encode_record(new) if new.data else b""
            value = self._run(COMPARE_AND_SET, name, [value, written, _ms(new.expires_at)], before)
            if value == 1:
                return old, new
            before = ()
        raise StoreUnavailable(f"Redis session store: {self.attempts} writes to one session in a row lost to others")

    def apply(self, key: str, change: Change) -> int | None:
        joins = change.user if change.user_changed else None
        before = self._index.joins(joins, key) if joins is not None else []
        result = self._update(key, lambda record: merge(record, change), before)
        if result is None:
            return None
        old, new = result
        count = len(new.data)
        stale = set()
        if old.user is not None and (count == 0 or new.user != old.user):
            stale.add(old.user)
        if joins is not None and count == 0:
            stale.add(joins)
        self._index.drop(stale, key)
        return count

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        def edit(record: Record) -> Record:
            return msgspec.structs.replace(record, last_seen=last_seen, expires_at=expires_at)

        return self._update(key, edit) is not None

    def delete(self, key: str) -> bool:
        with self._unavailable:
            value = self._conn().getdel(self._key(key))
        if value is None:
            return False
        with contextlib.suppress(ValueError):  # unreadable bytes: the record goes all the same
            user = decode_record(value).user
            if user is not None:
                self._index.drop([user], key)
        return True

    def sessions(self, now: float, user: str | None = None) -> list[tuple[str, Record]]:
        return self._index.sessions(now, user)

    def lock(self, key: str, token: str, lease: float) -> bool:
        """Take the session's lock: a key that lapses by itself after ``lease`` (SET NX PX)."""
        with self._unavailable:
            return bool(self._conn().set(self._lock(key), token, nx=True, px=max(1, int(lease * 1000))))

    def unlock(self, key: str, token: str) -> bool:
        """Release the lock only if ``token`` still holds it; compare and delete in one script."""
        return bool(self._run(UNLOCK, self._lock(key), [token]))

    def cleanup(self, now: float) -> int:
        return 0  # Redis drops each record at its expires_at (SET ... PXAT)

    def count(self, now: float) -> int:
        return self._index.count(now)

    def unavailable(self, error: BaseException) -> StoreUnavailable | None:
        """The ``StoreUnavailable`` a redis-py ``error`` of this store's client means; None for a bug.

        For code that sends its own commands on ``client`` (the Flask-Session
        importer) and must answer outages exactly as the store does.
        """
        return self._unavailable.handle(error)

    def close(self) -> None:
        if self._per_thread is not None:
            self._per_thread.forget()
        if self.owns_client:
            self._client.close()
            for other in self._also_close:
                other.close()
