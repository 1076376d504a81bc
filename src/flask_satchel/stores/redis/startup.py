"""The Redis store's one question to the server at ``init_app``: do you take these settings?"""

from __future__ import annotations

import logging
import typing as t

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from ...errors import ConfigError
from .clients import LazyCluster
from .errors import Unavailable, misconfiguration

log = logging.getLogger("flask_satchel")


def check(client: t.Any, unavailable: Unavailable, timeout: float) -> None:
    """Send the server one ``PING`` as ``client`` would, waiting ``timeout`` at most.

    A database the server does not have, or credentials it refuses, is a
    ``ConfigError`` naming the key. A server that does not answer (down,
    hung, loading) is logged and let be: the app starts, and its session
    requests answer 503 until the server is back.
    """
    try:
        ping(client, timeout)
    except (redis.RedisError, RedisClusterException) as e:
        problem = misconfiguration(e)
        if problem is not None:
            raise ConfigError(unavailable.key, f"{unavailable.where}: {problem}") from e
        # Info, not a warning: apps often start before their Redis does, and
        # each request that then fails is logged as an error all the same.
        log.info(
            "Redis session store %s did not answer at startup (%s); requests that use the session"
            " answer 503 until it does",
            unavailable.where,
            e,
        )


def ping(client: t.Any, timeout: float) -> None:
    """Connect as ``client`` does (credentials, database) and send one PING, waiting ``timeout`` at most.

    A connection of its own, not one of the client's: a client handed over
    in ``SESSION_REDIS`` may wait for ever, and the app must start all the
    same. Raises what redis-py raises.
    """
    if isinstance(client, RedisCluster):
        return  # it asked the cluster for its slots, and so logged in, when it was made
    never = Retry(NoBackoff(), 0)
    conn: t.Any  # redis-py leaves Connection unannotated
    if isinstance(client, LazyCluster):
        node = client.nodes[0]
        conn = redis.Connection(  # type: ignore[no-untyped-call]
            host=node.host,
            port=node.port,
            username=client.options.get("username"),
            password=client.options.get("password"),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=never,
        )
    else:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        for name in ("socket_timeout", "socket_connect_timeout"):
            if kwargs.get(name) is None or kwargs[name] > timeout:
                kwargs[name] = timeout
        conn = pool.connection_class(**{**kwargs, "retry": never})
    try:
        conn.connect()  # AUTH and SELECT
        conn.send_command("PING")
        conn.read_response()
    finally:
        conn.disconnect()
