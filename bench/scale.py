"""Many sessions: does a load stay as cheap, and how long does cleanup take?

For the SQLite, PostgreSQL and Redis stores: load a template session through
the store itself, then copy it natively to reach the target size (SQLite:
``executemany`` in one transaction; PostgreSQL: ``INSERT … SELECT`` over
``generate_series``, done by the server; Redis: ``DUMP`` once and
``RESTORE`` in pipelines). Copying the store's own bytes keeps this harness
ignorant of each store's layout, so it keeps working when a store changes.

Measured: the median ``store.load()`` of a random session at 1,000 sessions
and at the target size; ``store.cleanup()`` of 100,000 expired sessions next
to the live ones; bytes per session on disk or in Redis memory. Everything
created is deleted afterwards.
"""

from __future__ import annotations

import hashlib
import os
import random
import statistics
import time
import traceback
import typing as t

import apps

from flask_satchel import serialization
from flask_satchel.stores.base import Record

if t.TYPE_CHECKING:
    from services import Services

SMALL = 1_000
EXPIRED = 100_000
_LOADS = 2_000


def _key(i: int, salt: str = "") -> str:
    """Keys shaped like the real ones (32 hex digits), spread like the real ones."""
    return hashlib.md5(f"{salt}{i}".encode()).hexdigest()


def _record(now: float, expired: bool = False) -> Record:
    expires = now - 3600 if expired else now + 86400
    return Record(
        data=serialization.encode(apps.DATA),
        created_at=now - 7200 if expired else now,
        last_seen=now - 7200 if expired else now,
        expires_at=expires,
    )


def _median_load_us(store: t.Any, keys: list[str]) -> float:
    picks = random.Random(1).choices(keys, k=_LOADS)
    for key in picks[:100]:
        store.load(key)
    times = []
    for key in picks:
        start = time.perf_counter_ns()
        record = store.load(key)
        times.append((time.perf_counter_ns() - start) / 1000)
        if record is None:
            raise RuntimeError(f"session {key} missing from the store")
    return statistics.median(times)


def _open(kind: str, services: Services, **config: t.Any) -> t.Any:
    from flask_satchel import settings as settings_mod
    from flask_satchel.stores import open_store

    folder = os.path.join(services.workdir, f"scale-{kind}")
    os.makedirs(folder, exist_ok=True)
    return open_store(settings_mod.load(config, folder).store)


# SQLite -------------------------------------------------------------------


def _sqlite(services: Services, size: int, log: t.Callable[[str], None]) -> dict[str, t.Any]:
    import sqlite3

    path = os.path.join(services.workdir, "scale-sqlite", "sessions.sqlite3")
    store = _open("sqlite", services, SESSION_URL=f"sqlite:///{path}")
    now = time.time()
    try:
        store.create(_key(0), _record(now))  # creates the schema the store's own way
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            row = conn.execute(
                "SELECT data, created_at, last_seen, expires_at, permanent, user, client FROM satchel_sessions"
            ).fetchone()

            def fill(start: int, stop: int, salt: str = "", expires: float | None = None) -> None:
                values = (
                    (_key(i, salt), row[0], row[1], row[2], row[3] if expires is None else expires, *row[4:])
                    for i in range(start, stop)
                )
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO satchel_sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)
                conn.execute("COMMIT")

            fill(1, SMALL)
            small = _median_load_us(store, [_key(i) for i in range(SMALL)])
            start = time.perf_counter()
            fill(SMALL, size)
            load_s = time.perf_counter() - start
            log(f"  sqlite: {size:,} sessions loaded in {load_s:.1f} s")
            large = _median_load_us(store, [_key(i) for i in range(0, size, max(1, size // 100_000))])
            pages = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
            fill(0, EXPIRED, salt="expired", expires=now - 3600)
            start = time.perf_counter()
            deleted = store.cleanup(time.time())
            cleanup_s = time.perf_counter() - start
            if deleted != EXPIRED:
                raise RuntimeError(f"cleanup() removed {deleted}, expected {EXPIRED}")
        finally:
            conn.close()
    finally:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
    return {
        "size": size,
        "bulk_load_s": load_s,
        "load_small_us": small,
        "load_large_us": large,
        "load_ratio": large / small,
        "expired": EXPIRED,
        "cleanup_s": cleanup_s,
        "bytes_per_session": pages / size,
    }


# PostgreSQL ---------------------------------------------------------------


def _postgresql(services: Services, size: int, log: t.Callable[[str], None]) -> dict[str, t.Any]:
    import psycopg

    table = f"{services.pg_tables()[0]}_scale"
    store = _open("postgresql", services, SESSION_URL=services.pg_url, SESSION_SQLALCHEMY_TABLE=table)
    now = time.time()
    template = _key(0)
    try:
        store.create(template, _record(now))
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as pg:
            columns = pg.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s"
                " ORDER BY ordinal_position",
                (table,),
            ).fetchall()
            if not columns:
                raise RuntimeError(f"the store did not create table {table!r}")
            names = [c[0] for c in columns]
            key_col = next(
                (
                    c
                    for c, _ in columns
                    if pg.execute(f'SELECT 1 FROM "{table}" WHERE "{c}"::text LIKE %s', (f"%{template}%",)).fetchone()
                ),
                None,
            )
            if key_col is None:
                raise RuntimeError("cannot find the key column")
            expiry = next(((c, ty) for c, ty in columns if c.startswith("expir")), None)
            prefix, _, suffix = pg.execute(f'SELECT "{key_col}"::text FROM "{table}"').fetchone()[0].partition(template)

            def fill(start: int, stop: int, salt: str = "", expired: bool = False) -> None:
                select = []
                for c in names:
                    if c == key_col:
                        select.append("%s::text || md5(%s::text || g::text) || %s::text")
                    elif expired and expiry is not None and c == expiry[0]:
                        past = "interval '10 days'" if "timestamp" in expiry[1] else "864000"
                        select.append(f'"{c}" - {past}')
                    else:
                        select.append(f'"{c}"')
                cols = ", ".join(f'"{c}"' for c in names)
                pg.execute(
                    f'INSERT INTO "{table}" ({cols}) SELECT {", ".join(select)} FROM "{table}",'
                    f' generate_series(%s::int, %s::int) AS g WHERE "{key_col}"::text = %s',
                    (prefix, salt, suffix, start, stop - 1, f"{prefix}{template}{suffix}"),
                )

            fill(1, SMALL)
            small = _median_load_us(store, [template] + [_key(i) for i in range(1, SMALL)])
            start = time.perf_counter()
            fill(SMALL, size)
            pg.execute(f'ANALYZE "{table}"')
            load_s = time.perf_counter() - start
            log(f"  postgresql: {size:,} sessions loaded in {load_s:.1f} s")
            large = _median_load_us(store, [_key(i) for i in range(1, size, max(1, size // 100_000))])
            nbytes = pg.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()[0]
            result: dict[str, t.Any] = {
                "size": size,
                "bulk_load_s": load_s,
                "load_small_us": small,
                "load_large_us": large,
                "load_ratio": large / small,
                "bytes_per_session": nbytes / size,
            }
            if expiry is not None:
                fill(0, EXPIRED, salt="expired", expired=True)
                start = time.perf_counter()
                deleted = store.cleanup(time.time())
                result["cleanup_s"] = time.perf_counter() - start
                result["expired"] = EXPIRED
                result["cleanup_deleted"] = deleted
            pg.execute(f'DROP TABLE IF EXISTS "{table}"')
    finally:
        store.close()
    return result


# Redis --------------------------------------------------------------------


def _redis(services: Services, size: int, log: t.Callable[[str], None]) -> dict[str, t.Any]:
    import redis

    url = t.cast(str, services.redis_url)
    prefix = f"bench-{services.tag}-scale:"
    store = _open("redis", services, SESSION_URL=url, SESSION_KEY_PREFIX=prefix)
    client = redis.Redis.from_url(url)
    now = time.time()
    template = _key(0)
    try:
        before = int(client.info("memory")["used_memory"])
        store.create(template, _record(now))
        names = [k.decode() for k in client.scan_iter(match=f"*{template}*", count=1000)]
        if not names:
            raise RuntimeError("cannot find the template session's keys in Redis")
        dumps = [(name, client.dump(name), max(int(client.pttl(name)), 0)) for name in names]
        sample = sum(int(client.memory_usage(name) or 0) for name in names)

        def fill(start: int, stop: int) -> None:
            pipe = client.pipeline(transaction=False)
            for i in range(start, stop):
                new = _key(i)
                for name, payload, ttl in dumps:
                    pipe.restore(name.replace(template, new), ttl, payload, replace=True)
                if i % 2000 == 0:
                    pipe.execute()
            pipe.execute()

        fill(1, SMALL)
        small = _median_load_us(store, [_key(i) for i in range(SMALL)])
        start = time.perf_counter()
        fill(SMALL, size)
        load_s = time.perf_counter() - start
        log(f"  redis: {size:,} sessions loaded in {load_s:.1f} s")
        large = _median_load_us(store, [_key(i) for i in range(0, size, max(1, size // 100_000))])
        used = int(client.info("memory")["used_memory"]) - before
        start = time.perf_counter()
        store.cleanup(time.time())
        cleanup_s = time.perf_counter() - start
    finally:
        store.close()
        pipe = client.pipeline(transaction=False)
        for n, key in enumerate(client.scan_iter(match=f"{prefix}*", count=5000)):
            pipe.unlink(key)
            if n % 5000 == 0:
                pipe.execute()
        pipe.execute()
        client.close()
    return {
        "size": size,
        "bulk_load_s": load_s,
        "load_small_us": small,
        "load_large_us": large,
        "load_ratio": large / small,
        "cleanup_s": None,
        "cleanup_call_s": cleanup_s,
        "bytes_per_session": used / size,
        "memory_usage_sample": sample,
    }


def run(services: Services, size: int, log: t.Callable[[str], None], selected: t.Container[str]) -> dict[str, t.Any]:
    """Scale results per selected store; a store that cannot run gets the reason instead."""
    log(f"Scale ({size:,} sessions, {EXPIRED:,} expired for cleanup):")
    out: dict[str, t.Any] = {}
    for name, fn in (("satchel-sqlite", _sqlite), ("satchel-postgresql", _postgresql), ("satchel-redis", _redis)):
        if name not in selected:
            continue
        reason = apps.unavailable(apps.BY_NAME[name], services)
        if reason is not None:
            out[name] = reason
            log(f"  {name}: {reason}")
            continue
        try:
            out[name] = fn(services, size, log)
            cell = out[name]
            log(
                f"  {name}: load {cell['load_small_us']:.1f} µs at {SMALL:,}, {cell['load_large_us']:.1f} µs at"
                f" {size:,}; cleanup {cell.get('cleanup_s')}; {cell['bytes_per_session']:.0f} B/session"
            )
        except Exception as e:
            out[name] = f"error: {type(e).__name__}: {e}"
            log(f"  {name}: FAILED: {e}")
            traceback.print_exc()
    return out
