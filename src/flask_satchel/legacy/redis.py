"""Flask-Session's Redis records: ``SESSION_KEY_PREFIX + sid``, a string with a TTL.

A take is one round trip on the client of Flask-Satchel's own store (the
``SESSION_REDIS`` client, or the one built from ``SESSION_URL``: standalone,
Sentinel's master, or Cluster): ``PTTL`` and ``GETDEL`` in one ``MULTI``
transaction, so the remaining lifetime is read from the very value that is
deleted, and of two requests racing with the same old cookie only one gets
the record. On a cluster the key is one slot, so the transaction is too.
"""

from __future__ import annotations

import typing as t

import redis

from . import BaseImporter, Taken

if t.TYPE_CHECKING:
    from flask import Flask

    from ..settings import Settings
    from ..stores.base import Store
    from ..stores.redis import RedisStore


class RedisImporter(BaseImporter):
    """Takes Flask-Session's record with ``MULTI PTTL GETDEL EXEC``."""

    backend = "redis"

    def __init__(self, settings: Settings, app: Flask, store: Store) -> None:
        super().__init__(settings, app)
        self._store = t.cast("RedisStore", store)

    def take_record(self, store_id: str, now: float, lifetime: float) -> Taken | None:
        try:
            # The store's client, asked for each time: a cluster's is built on first use.
            pipe = self._store.client.pipeline(transaction=True)
            pipe.pttl(store_id)
            pipe.getdel(store_id)
            ttl, value = pipe.execute()
        except redis.RedisError as e:
            unavailable = self._store.unavailable(e)  # outages answered exactly as the store answers them
            if unavailable is not None:
                raise unavailable from e
            if isinstance(e, redis.ResponseError):  # a key of another type under that name: not a session
                self.skipped(store_id, f"Redis refused to read it: {e}")
                return None
            raise
        if not value:  # Flask-Session, too, reads an empty value as no session
            return None
        # -1: a key without expiry, which Flask-Session never writes; it lives one lifetime more.
        expires_at = now + (ttl / 1000 if ttl >= 0 else lifetime)
        return Taken(value, expires_at)
