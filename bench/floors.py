"""The physical floor: one bare round trip of each raw client, nothing else.

A session read cannot be cheaper than fetching ~1 KB from the store with
the client library alone, so that is the yardstick for the read-only target
(overhead ≤ 1.3 x floor + 20 µs). Each floor is the median per-call time of
batches, measured like the requests.

``placement`` measures the same round trips, and one bare write, with the
client and the server pinned to one CPU and then to two. On this VM the
difference is most of the cost: waking a process on the other virtual CPU
takes tens of microseconds each way, and a request, which does its own
work between round trips, pays it where a tight loop of bare reads may not
(the scheduler sometimes keeps such a loop and its server on one CPU).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import statistics
import time
import typing as t

import latency

if t.TYPE_CHECKING:
    from flask import Flask
    from services import Services

_BLOB = os.urandom(1024)
_FIELDS = {f"k{i}": os.urandom(100) for i in range(10)}
_SELECT = "SELECT data FROM t WHERE key = ?"


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


@contextlib.contextmanager
def local_reads(services: Services, key: str) -> t.Iterator[dict[str, tuple[str, t.Callable[[], object]]]]:
    """The bare reads of the in-process storages, by storage: (operation, the read)."""
    records = {"k": _BLOB}
    stem = os.path.join(services.workdir, f"floor-{key.replace(':', '-')}")
    conn = sqlite3.connect(f"{stem}.sqlite3", isolation_level=None)
    file_path = f"{stem}.bin"
    with open(file_path, "wb") as f:
        f.write(_BLOB)

    def read_file() -> bytes:
        with open(file_path, "rb") as f:
            return f.read()

    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (key TEXT PRIMARY KEY, data BLOB) WITHOUT ROWID")
        conn.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (key, _BLOB))
        yield {
            "memory": ("dict lookup", lambda: records.get("k")),
            "sqlite": ("sqlite3 primary-key SELECT", lambda: conn.execute(_SELECT, (key,)).fetchone()),
            "filesystem": ("1 KB file read", read_file),
        }
    finally:
        conn.close()


def in_request(
    services: Services, floor_app: Flask, plan: latency.Plan, log: t.Callable[[str], None]
) -> dict[str, dict[str, float]]:
    """Median µs of each in-process bare read made inside a no-session request, over that request alone.

    A tight loop of one read keeps its code and data in the CPU's caches; a
    request runs Flask and Werkzeug in between, which evict them, and a
    session's read pays for fetching them back. This is that read as a
    request pays for it: the no-session request plus the bare read, timed
    batch by batch against the no-session request alone.
    """
    out: dict[str, dict[str, float]] = {}
    floor = latency.Call(floor_app, "/untouched")
    with local_reads(services, f"bench-{services.tag}:in-request") as reads:
        calls = [_Then(floor, fn) for _, fn in reads.values()]
        timings = latency.time_group(calls, floor, plan)
        for (storage, (op, _)), timing in zip(reads.items(), timings, strict=True):
            out[storage] = {op: timing.overhead_us}
            log(f"  in a request {storage:11} {op:28} {timing.overhead_us:8.1f} µs")
    return out


class _Then(latency.Timed):
    """A prepared request, then one bare read."""

    def __init__(self, call: latency.Call, read: t.Callable[[], object]) -> None:
        self.call = call
        self.read = read

    def __call__(self) -> object:
        body = self.call()
        self.read()
        return body


def measure(
    services: Services, reps: int, batch: int, log: t.Callable[[str], None]
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, dict[str, float] | None]]]:
    """Median µs of one bare read per storage, keyed by storage and operation; and the pinned ``placement``."""
    out: dict[str, dict[str, float]] = {}
    placed: dict[str, dict[str, dict[str, float] | None]] = {}
    # Smaller batches when pinned: each is measured twice, and a committed write costs a flush.
    pinned_batch = max(10, batch // 10)
    key = f"bench-{services.tag}:floor"

    with local_reads(services, key) as reads:
        for storage, (op, fn) in reads.items():
            out[storage] = {op: _median_us(fn, reps, batch)}

    if services.redis_url:
        import redis

        client = redis.Redis.from_url(services.redis_url)

        def get() -> object:
            return client.get(key)

        try:
            client.set(key, _BLOB)
            client.hset(f"{key}:h", mapping=_FIELDS)
            out["redis"] = {
                "GET 1 KB": _median_us(get, reps, batch),
                "HGETALL 10x100 B": _median_us(lambda: client.hgetall(f"{key}:h"), reps, batch),
            }
            pid = int(client.info("server")["process_id"])
            placed["redis"] = {
                "GET 1 KB": _placed(get, pid, reps, pinned_batch),
                "SET 1 KB": _placed(lambda: client.set(key, _BLOB), pid, reps, pinned_batch),
            }
            client.delete(key, f"{key}:h")
        finally:
            client.close()

    if services.memcached_port:
        from pymemcache.client.base import Client

        mc = Client(("127.0.0.1", services.memcached_port))

        def mc_get() -> object:
            return mc.get(key)

        try:
            mc.set(key, _BLOB, noreply=False)
            out["memcached"] = {"get 1 KB": _median_us(mc_get, reps, batch)}
            pid = int(mc.stats()[b"pid"])
            placed["memcached"] = {
                "get 1 KB": _placed(mc_get, pid, reps, pinned_batch),
                "set 1 KB": _placed(lambda: mc.set(key, _BLOB, noreply=False), pid, reps, pinned_batch),
            }
            mc.delete(key)
        finally:
            mc.close()

    if services.pg_url:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as pg:
            # A real table, as the store reads and writes: a temporary one is
            # never flushed, so a commit to it would cost nothing.
            table = f"bench_floor_{services.tag}"
            pg.execute(f"CREATE TABLE {table} (key text PRIMARY KEY, data bytea)")
            pg.execute(f"INSERT INTO {table} VALUES (%s, %s)", (key, _BLOB))

            def select() -> object:
                return pg.execute(f"SELECT data FROM {table} WHERE key = %s", (key,)).fetchone()

            try:
                out["postgresql"] = {"psycopg primary-key SELECT": _median_us(select, reps, batch)}
                pid = pg.execute("SELECT pg_backend_pid()").fetchone()[0]
                placed["postgresql"] = {
                    "psycopg primary-key SELECT": _placed(select, pid, reps, pinned_batch),
                    "psycopg UPDATE, committed": _placed(
                        lambda: pg.execute(f"UPDATE {table} SET data = %s WHERE key = %s", (_BLOB, key)),
                        pid,
                        reps,
                        pinned_batch,
                    ),
                }
            finally:
                pg.execute(f"DROP TABLE {table}")

    for storage, ops in out.items():
        for op, us in ops.items():
            log(f"  floor {storage:11} {op:28} {us:8.1f} µs")
    for storage, pinned in placed.items():
        for op, by_cpu in pinned.items():
            if by_cpu is not None:
                log(f"  pinned {storage:10} {op:28} " + "  ".join(f"{k} {v:6.1f} µs" for k, v in by_cpu.items()))
    return out, placed


def _tasks(pid: int) -> list[int]:
    """Every thread of process ``pid`` (memcached and Redis serve from worker threads)."""
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def _placed(fn: t.Callable[[], object], server_pid: int, reps: int, batch: int) -> dict[str, float] | None:
    """``fn``'s median µs with client and server pinned to one CPU, then to two; None where pinning is not possible."""
    mine = os.sched_getaffinity(0)
    cpus = sorted(mine)
    if len(cpus) < 2:
        return None
    theirs: dict[int, set[int]] = {}
    out: dict[str, float] = {}
    try:
        # Inside the try: a thread may end between the listing and the look-up.
        tasks = _tasks(server_pid)
        theirs = {tid: os.sched_getaffinity(tid) for tid in tasks}
        for label, server_cpu in (("one CPU", cpus[0]), ("two CPUs", cpus[1])):
            os.sched_setaffinity(0, {cpus[0]})
            for tid in tasks:
                os.sched_setaffinity(tid, {server_cpu})
            out[label] = _median_us(fn, reps, batch)
    except (PermissionError, ProcessLookupError):  # another user's server, without root
        return None
    finally:
        os.sched_setaffinity(0, mine)
        for tid, cpus_of in theirs.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus_of)
    return out


def floor_of(floors: dict[str, dict[str, float]], storage: str) -> float | None:
    """The yardstick for ``storage``: its cheapest bare read."""
    ops = floors.get(storage)
    return min(ops.values()) if ops else None
