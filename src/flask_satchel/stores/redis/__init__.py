"""Sessions in Redis, with redis-py: one server, Sentinel or Cluster.

Configure it with ``SESSION_TYPE = "redis"`` and a client of your own in
``SESSION_REDIS`` (``redis.Redis``, ``Sentinel(...).master_for(...)`` or
``redis.cluster.RedisCluster``, created with ``decode_responses=False``), or
with one ``SESSION_URL``:

- ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://…`` (TLS),
  with redis-py's own query options (``?ssl_cert_reqs=…``);
- ``redis+sentinel://[[user]:password@]host:port[,host:port…]/service_name[/db]``:
  the Sentinels to ask, and the name of the master they watch; the
  credentials are the master's;
- ``redis+cluster://[[user]:password@]host:port[,host:port…]``: any nodes
  of the cluster, which tell the client about the others.

With neither, the store uses ``redis://127.0.0.1:6379/0``. A Redis that
hangs, is down or cannot serve now is a 503 (``errors``). At ``init_app``
the store sends the server one ``PING`` on a connection of its own, waiting
at most the store timeout: a database that does not exist or credentials
the server refuses are then a ``ConfigError`` naming the key; a server that
is down lets the app start, its requests answer 503, and the 503's message
says what is wrong once the server answers.

Layout, and why:

- A session is one string, ``prefix + "{" + key + "}"``: the whole record
  (values, times, user, client details) as one msgpack map. The braces are
  a Redis Cluster hash tag, which keeps the session and its lock in one slot.
  A key of another type under that name is an error (``WRONGTYPE``), raised.
- A read is one ``GET``, the cheapest command Redis has, and one msgspec
  decode in C; a per-key hash read by a Lua script costs more (see
  ``bench/README.md``).
- The record dies by itself: ``SET … PXAT`` at ``expires_at``. ``cleanup()``
  has nothing to do; listing and counting still honour ``now``.
- A change is computed in Python from the record as this request read it,
  and written by a compare-and-set script: it writes only if the session is
  still exactly the value that was read, and otherwise answers with what is
  there now, which the change is merged into again. Two overlapping requests
  that change different keys therefore both survive, and a write to a
  session that is gone (destroyed, revoked, expired) is refused: no late
  request brings it back. After the request's own load this is one round
  trip.
- A user's sessions are listed from a set, ``prefix + "user:{" + hash + "}"``
  (``index``).
- ``SESSION_LOCKING`` takes ``prefix + "lock:{" + key + "}"`` with ``SET NX PX``:
  a lease in the session's slot that lapses by itself if its holder dies,
  released by a script that deletes it only for the token that holds it.

Every command goes through redis-py's client API (install it with
``hiredis``, its C reply parser: the ``redis`` extra does). A client the
store makes from ``SESSION_URL`` sends a request's commands on a connection
per thread; a client handed over in ``SESSION_REDIS`` is used as it is, with
its own pool and retries. It needs Redis 6.2 or later (``SET … PXAT``,
``GETDEL``). The modules, one job each:

- ``store``: the Store protocol on that layout;
- ``clients``: the client from ``SESSION_URL`` (one server, Sentinel,
  Cluster) or ``SESSION_REDIS``, and the checks of one handed over;
- ``threads``: the per-thread connections for a client the store made;
- ``startup``: the ``PING`` at ``init_app``;
- ``errors``: which redis-py errors are outages (a 503) and which are
  misconfigurations (naming the key);
- ``index``: each user's set of sessions, and the listings;
- ``scripts``: the Lua scripts, sent by SHA.
"""

from __future__ import annotations

from .store import RedisStore as RedisStore

__all__ = ["RedisStore"]
