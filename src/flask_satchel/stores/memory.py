"""A store in a dict, for tests and single-process apps.

Like httpx's ``MockTransport``, it lets an app's own tests run with real
session semantics (merge, expiry, revocation) and no server or file.
Everything is lost when the process exits.
"""

from __future__ import annotations

import threading
import time
import typing as t

import msgspec

from .base import Change, Record, merge

if t.TYPE_CHECKING:
    from ..settings import StoreSettings


class MemoryStore:
    """Records in a dict behind one lock."""

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> MemoryStore:
        return cls()

    #: ``count`` is one pass over a dict: telemetry may report live sessions from it.
    counts_cheaply = True

    def describe(self) -> dict[str, str | int]:
        return {"db.system": "memory"}

    def load(self, key: str) -> Record | None:
        return self._records.get(key)

    def create(self, key: str, record: Record) -> None:
        with self._lock:
            self._records[key] = record

    def apply(self, key: str, change: Change) -> int | None:
        with self._lock:
            record = self._records.get(key)
            if record is None:
                return None
            record = merge(record, change)
            if not record.data:
                del self._records[key]
                return 0
            self._records[key] = record
            return len(record.data)

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        with self._lock:
            record = self._records.get(key)
            if record is None:
                return False
            self._records[key] = msgspec.structs.replace(record, last_seen=last_seen, expires_at=expires_at)
            return True

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._records.pop(key, None) is not None

    def sessions(self, now: float, user: str | None = None) -> list[tuple[str, Record]]:
        with self._lock:
            items = list(self._records.items())
        return [(k, r) for k, r in items if r.expires_at > now and (user is None or r.user == user)]

    def cleanup(self, now: float) -> int:
        with self._lock:
            dead = [k for k, r in self._records.items() if r.expires_at <= now]
            for key in dead:
                del self._records[key]
        return len(dead)

    def count(self, now: float) -> int:
        return len(self.sessions(now))

    def lock(self, key: str, token: str, lease: float) -> bool:
        now = time.monotonic()
        with self._lock:
            holder = self._locks.get(key)
            if holder is not None and holder[1] > now:
                return False
            self._locks[key] = (token, now + lease)
            return True

    def unlock(self, key: str, token: str) -> bool:
        with self._lock:
            holder = self._locks.get(key)
            if holder is None or holder[0] != token:
                return False
            del self._locks[key]
            return holder[1] > time.monotonic()

    def close(self) -> None:
        self._records.clear()
