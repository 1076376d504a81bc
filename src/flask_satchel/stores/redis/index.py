"""Finding sessions in Redis: each user's set of session keys, and a SCAN over every session.

A user's set, ``prefix + "user:{" + hash + "}"``, lives in the user's own
slot. On a cluster that is another node than the session's, so the set is
changed by separate commands next to the session's own, never atomically
with it; a member can therefore be stale, and listing checks every member
against its record and drops the ones that are gone or belong to someone
else now.
"""

from __future__ import annotations

import typing as t

from ..base import Record, decode_record, user_hash
from .errors import Unavailable

Command = tuple[t.Any, ...]


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern (SCAN MATCH)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class Index:
    """The user sets of one store's prefix, and its listings."""

    def __init__(self, prefix: str, lifetime: float, client: t.Callable[[], t.Any], unavailable: Unavailable) -> None:
        self.prefix = prefix
        #: How long a user's set outlives its last addition. Every session in
        #: it was created or given its user before then, so every member dies
        #: sooner: this is the absolute session lifetime.
        self.lifetime = lifetime
        #: The store's redis-py client (a cluster's is built on first use).
        self._client = client
        self._unavailable = unavailable
        # A session key is the prefix, "{", 32 hex digits of the handle and "}".
        self._pattern = _glob_escape(prefix) + "{" + "[0-9a-f]" * 32 + "}"

    def session(self, key: str) -> str:
        """The Redis key of session ``key``: the braces are a Cluster hash tag."""
        return f"{self.prefix}{{{key}}}"

    def _set(self, user: str) -> str:
        return f"{self.prefix}user:{{{user_hash(user)}}}"

    def joins(self, user: str, key: str) -> list[Command]:
        """The commands that file session ``key`` under ``user``: sent with the session's own write."""
        name = self._set(user)
        return [("SADD", name, key), ("EXPIRE", name, max(1, int(self.lifetime)))]

    def drop(self, users: t.Iterable[str], key: str) -> None:
        """Take session ``key`` out of the sets of ``users``."""
        users = set(users)
        if not users:
            return
        with self._unavailable:
            client = self._client()
            if len(users) == 1:
                client.srem(self._set(users.pop()), key)
                return
            pipe = client.pipeline(transaction=False)
            for user in users:
                pipe.srem(self._set(user), key)
            pipe.execute()

    def sessions(self, now: float, user: str | None) -> list[tuple[str, Record]]:
        """Live sessions with their metadata: everyone's (a SCAN), or one user's (their set, pruned)."""
        if user is None:
            found = []
            for keys in self._scan():
                found += [
                    (key, record)
                    for key, record in zip(keys, self._records(keys), strict=True)
                    if record is not None and record.expires_at > now
                ]
            return found
        with self._unavailable:
            keys = sorted(member.decode() for member in self._client().smembers(self._set(user)))
        live, stale = [], []
        for key, record in zip(keys, self._records(keys), strict=True):
            if record is None or record.user != user:
                stale.append(key)
            elif record.expires_at > now:
                live.append((key, record))
        if stale:
            with self._unavailable:
                self._client().srem(self._set(user), *stale)
        return live

    def count(self, now: float) -> int:
        """How many sessions under the prefix are live at ``now``."""
        return sum(
            record is not None and record.expires_at > now for keys in self._scan() for record in self._records(keys)
        )

    def _records(self, keys: t.Sequence[str]) -> list[Record | None]:
        """The metadata of many sessions, one pipeline (per node) for them all; None for gone or unreadable."""
        if not keys:
            return []
        with self._unavailable:
            pipe = self._client().pipeline(transaction=False)
            for key in keys:
                pipe.get(self.session(key))
            values = pipe.execute()
        records: list[Record | None] = []
        for value in values:
            try:
                record = None if value is None else decode_record(value)
            except ValueError:  # bytes no store wrote: not a live session
                record = None
            if record is not None:
                record.data = {}
            records.append(record)
        return records

    def _scan(self) -> t.Iterator[list[str]]:
        """Every session key under the prefix, in batches; on a cluster, from every master."""
        start = len(self.prefix) + 1
        batch: list[str] = []
        with self._unavailable:
            for name in self._client().scan_iter(match=self._pattern, count=1000):
                batch.append(name[start:-1].decode())
                if len(batch) == 500:
                    yield batch
                    batch = []
        if batch:
            yield batch
