"""Why the SQLite store keys its table by text: two table layouts at 1,000,000 sessions.

The store's table is a rowid table with ``key TEXT PRIMARY KEY``, so a load
walks two B-trees: the key's index, then the table. The alternative tried
here keys the table itself by an integer, the first 64 bits of the key
(which is already a hash), and checks the full key in the row: one B-tree.

For each layout, at 1,000 and at ``--size`` sessions, this prints the median
time of the store's own query plus ``record_from_row``, for

- *cold*: 2,000 random sessions among 100,000, as ``scale.py`` measures
  (most of them have never been read by this connection);
- *warm*: 1,000 sessions, each read once before (a working set of active
  users inside a large file),

with SQLite's default page cache (2 MB) and with 32 MB, and the file size.
Run it when the table layout is in question (about a minute and a half; the
files, 2 GB together, go to ``--dir`` and are deleted afterwards)::

    .venv/bin/python bench/sqlite_layouts.py --dir /tmp/satchel-layouts
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sqlite3
import statistics
import time
import typing as t

import apps

from flask_satchel import serialization
from flask_satchel.stores.base import record_from_row

_COLUMNS = "data, created_at, last_seen, expires_at, permanent, user, client"
_REST = "data BLOB NOT NULL, created_at REAL NOT NULL, last_seen REAL NOT NULL, expires_at REAL NOT NULL,"
_REST += " permanent INTEGER NOT NULL, user TEXT, client BLOB"


class Layout(t.NamedTuple):
    name: str
    schema: str
    insert: str
    select: str
    #: The query's parameters for a key, and the row to insert for it (before the shared columns).
    params: t.Callable[[str], tuple[t.Any, ...]]


def _id(key: str) -> int:
    return int(key[:16], 16) - 2**63  # a signed 64-bit rowid


LAYOUTS = [
    Layout(
        "text key (the store's)",
        f"CREATE TABLE s (key TEXT PRIMARY KEY, {_REST})",
        "INSERT INTO s VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        f"SELECT {_COLUMNS} FROM s WHERE key = ?",
        lambda key: (key,),
    ),
    Layout(
        "integer key",
        f"CREATE TABLE s (id INTEGER PRIMARY KEY, key TEXT NOT NULL, {_REST})",
        "INSERT INTO s VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        f"SELECT {_COLUMNS} FROM s WHERE id = ? AND key = ?",
        lambda key: (_id(key), key),
    ),
]


def _key(i: int) -> str:
    return hashlib.md5(str(i).encode()).hexdigest()  # 32 hex digits, spread like the real keys


def _build(path: str, layout: Layout, size: int) -> None:
    blob = serialization.pack(serialization.encode(apps.DATA))
    now = time.time()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(layout.schema)
        conn.execute("CREATE INDEX s_expires ON s (expires_at)")
        rows = ((*layout.params(_key(i)), blob, now, now, now + 86400, 0, None, None) for i in range(size))
        conn.execute("BEGIN")
        conn.executemany(layout.insert, rows)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _median_us(conn: sqlite3.Connection, layout: Layout, keys: list[str]) -> float:
    times = []
    for key in keys:
        params = layout.params(key)
        start = time.perf_counter_ns()
        row = conn.execute(layout.select, params).fetchone()
        record_from_row(row)
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def measure(path: str, layout: Layout, size: int, cache_kib: int | None) -> dict[str, float]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        if cache_kib is not None:
            conn.execute(f"PRAGMA cache_size=-{cache_kib}")
        rng = random.Random(1)
        cold = rng.choices([_key(i) for i in range(0, size, max(1, size // 100_000))], k=2100)
        active = [_key(i) for i in rng.sample(range(size), min(size, 1000))]
        _median_us(conn, layout, cold[:100])
        out = {"cold": _median_us(conn, layout, cold[100:])}
        _median_us(conn, layout, active)  # each read once
        out["warm"] = _median_us(conn, layout, rng.choices(active, k=2000))
        return out
    finally:
        conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True, help="a folder for the database files (deleted afterwards)")
    p.add_argument("--size", type=int, default=1_000_000, help="sessions in the large file (default 1,000,000)")
    args = p.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    try:
        print("median µs per load; ratio = at size / at 1,000 with the same cache")
        for layout in LAYOUTS:
            sizes = {}
            for size in (1000, args.size):
                path = os.path.join(args.dir, f"{layout.name.split()[0]}-{size}.sqlite3")
                _build(path, layout, size)
                sizes[size] = (path, os.path.getsize(path))
            for cache in (None, 32 * 1024):
                small = measure(sizes[1000][0], layout, 1000, cache)
                large = measure(sizes[args.size][0], layout, args.size, cache)
                label = "default cache" if cache is None else "32 MB cache"
                cells = ", ".join(
                    f"{kind} {small[kind]:.1f} -> {large[kind]:.1f} (x{large[kind] / small[kind]:.2f})"
                    for kind in ("cold", "warm")
                )
                print(f"{layout.name:24} {label:14} {cells}")
            print(f"{layout.name:24} file at {args.size:,}: {sizes[args.size][1] / args.size:.0f} bytes/session")
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
