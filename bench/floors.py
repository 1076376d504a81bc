"""The physical floor: one bare round trip of each raw client, nothing else.

A session read cannot be cheaper than fetching ~1 KB from the store with
the client library alone, so that is the yardstick for the read-only target
(overhead ≤ 1.3 x floor + 20 µs). Each floor is the median per-call time of
batches, measured like the requests.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import time
import typing as t

if t.TYPE_CHECKING:
    from services import Services

_BLOB = os.urandom(1024)
_FIELDS = {f"k{i}": os.urandom(100) for i in range(10)}


def _median_us(fn: t.Callable[[], object], reps: int, batch: int) -> float:
    for _ in range(batch):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter_ns() - start) / batch / 1000.0)
    return statistics.median(times)


def measure(services: Services, reps: int, batch: int, log: t.Callable[[str], None]) -> dict[str, dict[str, float]]:
    """Median µs of one bare read per storage, keyed by storage and operation."""
    out: dict[str, dict[str, float]] = {}
    key = f"bench-{services.tag}:floor"

    records = {"k": _BLOB}
    out["memory"] = {"dict lookup": _median_us(lambda: records.get("k"), reps, batch)}

    path = os.path.join(services.workdir, "floor.sqlite3")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (key TEXT PRIMARY KEY, data BLOB) WITHOUT ROWID")
        conn.execute("INSERT INTO t VALUES (?, ?)", (key, _BLOB))
        out["sqlite"] = {
            "sqlite3 primary-key SELECT": _median_us(
                lambda: conn.execute("SELECT data FROM t WHERE key = ?", (key,)).fetchone(), reps, batch
            )
        }
    finally:
        conn.close()

    file_path = os.path.join(services.workdir, "floor.bin")
    with open(file_path, "wb") as f:
        f.write(_BLOB)

    def read_file() -> bytes:
        with open(file_path, "rb") as f:
            return f.read()

    out["filesystem"] = {"1 KB file read": _median_us(read_file, reps, batch)}

    if services.redis_url:
        import redis

        client = redis.Redis.from_url(services.redis_url)
        try:
            client.set(key, _BLOB)
            client.hset(f"{key}:h", mapping=_FIELDS)
            out["redis"] = {
                "GET 1 KB": _median_us(lambda: client.get(key), reps, batch),
                "HGETALL 10x100 B": _median_us(lambda: client.hgetall(f"{key}:h"), reps, batch),
            }
            client.delete(key, f"{key}:h")
        finally:
            client.close()

    if services.memcached_port:
        from pymemcache.client.base import Client

        mc = Client(("127.0.0.1", services.memcached_port))
        try:
            mc.set(key, _BLOB, noreply=False)
            out["memcached"] = {"get 1 KB": _median_us(lambda: mc.get(key), reps, batch)}
            mc.delete(key)
        finally:
            mc.close()

    if services.pg_url:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as pg:
            pg.execute("CREATE TEMP TABLE bench_floor (key text PRIMARY KEY, data bytea)")
            pg.execute("INSERT INTO bench_floor VALUES (%s, %s)", (key, _BLOB))
            out["postgresql"] = {
                "psycopg primary-key SELECT": _median_us(
                    lambda: pg.execute("SELECT data FROM bench_floor WHERE key = %s", (key,)).fetchone(),
                    reps,
                    batch,
                )
            }

    for storage, ops in out.items():
        for op, us in ops.items():
            log(f"  floor {storage:11} {op:28} {us:8.1f} µs")
    return out


def floor_of(floors: dict[str, dict[str, float]], storage: str) -> float | None:
    """The yardstick for ``storage``: its cheapest bare read."""
    ops = floors.get(storage)
    return min(ops.values()) if ops else None
