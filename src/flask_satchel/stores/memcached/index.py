"""A user's sessions in memcached: a per-user index, appended to and pruned.

The index lives under ``prefix + "user:" + hash + ":" + period``: lines
``+key`` and ``-key`` added with ``append``, one round trip that needs no
read, so a new session is two writes (the record and one append; an ``add``
too when it is the user's first of the period). Memcached cannot refresh an
item's expiry in the same command as an append, so each index covers the
sessions created in one period of ``lifetime`` (the absolute session
lifetime) and expires when all of them must have ended, one period after its
own; a listing reads the current and the previous period. Listing prunes
ended sessions with compare-and-set, and so does an append that finds the
index at memcached's item size limit.
"""

from __future__ import annotations

import time
import typing as t

import msgspec

from ..base import Record, decode_record, user_hash
from .limits import GONE, exptime

if t.TYPE_CHECKING:
    from .servers import Cluster

_USER = "user:"
_HASH_LENGTH = 32  # what user_hash gives
#: ``":" + period``, the longest a period number gets (a one-second lifetime).
_PERIOD_LENGTH = 12
#: What an index key adds to the prefix at the most: the longest key the store writes.
LONGEST_SUFFIX = len(_USER) + _HASH_LENGTH + _PERIOD_LENGTH


def _parse(value: bytes) -> list[str]:
    """The keys an index lists: ``+key`` lines add, ``-key`` lines remove, in order."""
    keys: dict[str, None] = {}
    for line in bytes(value).split(b"\n"):
        key = line[1:].decode(errors="replace")
        if line[:1] == b"+":
            keys[key] = None
        elif line[:1] == b"-":
            keys.pop(key, None)
    return list(keys)


class UserIndex:
    """The per-user indexes of one store: ``add`` and ``remove`` a session, list a user's ``sessions``."""

    def __init__(
        self, cluster: Cluster, prefix: str, lifetime: float, attempts: t.Callable[[str], t.Iterator[int]]
    ) -> None:
        self._cluster = cluster
        self._prefix = prefix
        #: The absolute session lifetime: every session ends within it of
        #: being created, so an index of one period can expire one period
        #: after its own (see the module docstring).
        self.lifetime = lifetime
        #: The store's compare-and-set attempts, given what is being changed.
        self._attempts = attempts

    def key(self, user: str, period: int) -> str:
        """The memcached key of ``user``'s index of ``period``."""
        return f"{self._prefix}{_USER}{user_hash(user)}:{period}"

    def period(self, created_at: float) -> int:
        """The index period a session created at ``created_at`` is listed in."""
        return int(created_at // self.lifetime)

    def add(self, user: str, key: str, created_at: float) -> None:
        """List session ``key`` among ``user``'s."""
        self._append(user, self.period(created_at), b"+" + key.encode() + b"\n", create=True)

    def remove(self, user: str, key: str, created_at: float) -> None:
        """Strike session ``key`` from ``user``'s list."""
        self._append(user, self.period(created_at), b"-" + key.encode() + b"\n", create=False)

    def sessions(self, user: str, now: float) -> list[tuple[str, Record]]:
        """``user``'s live sessions, without their data; ended ones are pruned from the indexes."""
        # Every live session was created less than lifetime ago: in this period or the one before.
        current = int(now // self.lifetime)
        return [
            (key, msgspec.structs.replace(record, data={}))
            for key, record in self._prune(user, (current - 1, current), now)
            if record.expires_at > now
        ]

    def _append(self, user: str, period: int, entry: bytes, *, create: bool) -> None:
        """Append one line to a user's index of one period; with ``create``, make the index if missing.

        Memcached answers NOT_STORED both when the index does not exist and
        when it is full (past the item size limit): after an ``add`` that
        loses to another request, the next failed ``append`` means full, so
        the index is pruned of ended sessions once and tried again.
        """
        full = self.key(user, period)
        server = self._cluster.server(full)
        # The index outlives every session created in its period (they all
        # end within lifetime of being created), and is never refreshed.
        expire = exptime((period + 2) * self.lifetime)
        for attempt in self._attempts(f"the session index of {user!r}"):
            if server.call("append", full, entry, noreply=False):
                return
            if not create:
                return  # no index: nothing to remove from
            if server.call("add", full, entry, expire=expire, noreply=False):
                return
            if attempt == 1:
                self._prune(user, [period], time.time())

    def _prune(self, user: str, periods: t.Iterable[int], now: float) -> list[tuple[str, Record]]:
        """A user's records listed in the indexes of ``periods``; ended sessions are dropped from them.

        An index is rewritten with compare-and-set, so a line appended
        meanwhile is never lost: the rewrite fails instead, and the ended
        sessions are dropped next time.
        """
        indexes: dict[str, tuple[bytes, t.Any]] = {}
        for server, index_keys in self._cluster.by_server(self.key(user, period) for period in periods).items():
            indexes.update(server.call("gets_many", index_keys))
        listed = {index: _parse(value) for index, (value, _) in indexes.items()}
        keys = list(dict.fromkeys(key for index_keys in listed.values() for key in index_keys))
        values: dict[str, bytes] = {}
        for server, record_keys in self._cluster.by_server(self._prefix + key for key in keys).items():
            values.update(server.call("get_many", record_keys))
        found = []
        for key in keys:
            raw = values.get(self._prefix + key)
            if raw is None:
                continue
            try:
                record = decode_record(raw)
            except msgspec.DecodeError:
                continue
            # A record naming another user is left in the index: it may be
            # a change in flight that is about to name this user (see the
            # store's apply).
            if record.user == user:
                found.append((key, record))
        for index, index_keys in listed.items():
            kept = [key for key in index_keys if self._prefix + key in values]
            compact = b"".join(b"+" + key.encode() + b"\n" for key in kept)
            value, cas = indexes[index]
            if compact != value:
                period = int(index.rsplit(":", 1)[1])
                expire = exptime((period + 2) * self.lifetime) if kept else GONE
                self._cluster.server(index).call("cas", index, compact, cas, expire=expire, noreply=False)
        return found
