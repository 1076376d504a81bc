"""``SESSION_ROTATE_INTERVAL``: a long-lived session gets a new id now and then.

A sid that leaked long ago then stops working. Unlike ``regenerate()``, the
old sid is honoured for ``SESSION_ROTATION_GRACE``: the other requests of a
page that were sent with it must not log the user out. A small forwarding
record, under a key derived from the old one, points to the new record; a
request with the old sid follows it, and so does a write from a request that
loaded the old record before the rotation, so no update is lost.
"""

from __future__ import annotations

import typing as t

from . import ids
from .stores.base import Change, Record

if t.TYPE_CHECKING:
    from .stores.base import Store


def forward_key(key: str) -> str:
    """Where a rotated key's forwarding record lives: a hash, so it is a handle like any other."""
    return ids.key_of(f"forward:{key}")


class Rotation:
    """Rotates records of one store and follows the forwarding records it leaves."""

    def __init__(self, store: Store, interval: float, grace: float) -> None:
        self.store = store
        #: Seconds between two rotations of one session.
        self.interval = interval
        #: Seconds the old id keeps working after a rotation.
        self.grace = grace

    def due(self, record: Record, now: float) -> bool:
        """True when the session has crossed a multiple of the interval since it was last seen."""
        interval = self.interval
        return (now - record.created_at) // interval > (record.last_seen - record.created_at) // interval

    def rotate(self, key: str, new_key: str, renewed: Record, now: float) -> bool:
        """Move the record under ``key`` to ``new_key`` as ``renewed``; False if another request rotated it first."""
        store = self.store
        store.create(new_key, renewed)
        if not store.delete(key):  # another request of this session rotated it first
            store.delete(new_key)
            return False
        pointer = Record(data={"to": new_key.encode()}, created_at=now, last_seen=now, expires_at=now + self.grace)
        store.create(forward_key(key), pointer)
        return True

    def follow(self, key: str, now: float) -> tuple[str, Record] | None:
        """The key and record a rotated ``key`` forwards to, while the grace window lasts."""
        pointer = self.store.load(forward_key(key))
        if pointer is None or now >= pointer.expires_at or "to" not in pointer.data:
            return None
        target = pointer.data["to"].decode()
        record = self.store.load(target)
        return None if record is None else (target, record)

    def apply(self, key: str, change: Change, now: float) -> tuple[str, int | None]:
        """``store.apply``, following a rotation that happened while the request ran; returns the key written."""
        remaining = self.store.apply(key, change)
        if remaining is None:
            forwarded = self.follow(key, now)
            if forwarded is not None:
                key = forwarded[0]
                remaining = self.store.apply(key, change)
        return key, remaining

    def touch(self, key: str, change: Change, now: float) -> tuple[str, bool]:
        """``store.touch``, following a rotation like :meth:`apply`; returns the key touched."""
        if self.store.touch(key, change.last_seen, change.expires_at):
            return key, True
        forwarded = self.follow(key, now)
        if forwarded is None:
            return key, False
        key = forwarded[0]
        return key, self.store.touch(key, change.last_seen, change.expires_at)
