"""Counting what a request costs the store: round trips, writes, transactions.

Counts come from the server wherever there is one, so they cannot flatter
the client: Redis ``INFO`` (``total_reads_processed`` is the number of reads
the server did on client sockets, about one per round trip; commandstats
names every command, including the ones a Lua script runs), memcached
``stats``, PostgreSQL's answers in libpq's protocol trace (Flask-Satchel's
statements run on bare DB-API cursors). Where there is no server, the
client's own hooks: SQLAlchemy's cursor events (Flask-Session),
``sqlite3``'s trace callback on the store's connections, and Python's
audit events for file system calls (``open``, ``os.rename``, which
``os.replace`` also raises, ``os.remove``).

Instrumentation slows requests down, so counting passes run apart from
timing passes, and after them (an audit hook cannot be removed).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import sys
import threading
import typing as t

if t.TYPE_CHECKING:
    from apps import Backend
    from flask import Flask
    from services import Services

#: Cumulative counters of one kind: name -> count.
Counts = dict[str, float]

_WRITE_SQL = ("INSERT", "UPDATE", "DELETE", "REPLACE", "UPSERT", "MERGE", "COPY")


def _is_write_sql(statement: str) -> bool:
    head = statement.lstrip().upper()
    if head.startswith("WITH"):  # a CTE may hide a DELETE … RETURNING
        return any(f" {word} " in f" {head} " for word in _WRITE_SQL[:3])
    return head.startswith(_WRITE_SQL)


class Probe:
    """Reads cumulative counters; the difference of two reads is what happened in between."""

    #: What "round trips" means for this backend, shown in the report.
    unit = "round trips"

    def read(self) -> Counts:
        return {}

    def close(self) -> None:
        return None


class RedisProbe(Probe):
    """``INFO stats commandstats`` of the server, from a connection of our own."""

    unit = "socket reads by the server (≈ round trips)"

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        # The command table, once, before the first snapshot: which commands write.
        self._writes = {
            str(name): "write" in {f.decode() if isinstance(f, bytes) else str(f) for f in info.get("flags", ())}
            for name, info in self.client.command().items()
        }
        #: Our own INFO calls, each one socket read at the server.
        self._own_reads = 0

    def _is_write(self, command: str) -> bool:
        return self._writes.get(command.split("|")[0], False)

    def read(self) -> Counts:
        self._own_reads += 1
        info = self.client.info("stats", "commandstats")
        counts: Counts = {"round_trips": float(info["total_reads_processed"]), "writes": 0.0, "commands": 0.0}
        for field, stat in info.items():
            if not field.startswith("cmdstat_"):
                continue
            name = field[len("cmdstat_") :]
            if name in ("info", "command", "command|info", "command|docs", "client|setinfo", "hello"):
                continue  # our own probing, and connection handshakes
            calls = float(stat["calls"])
            counts[f"cmd:{name}"] = calls
            counts["commands"] += calls
            if self._is_write(name):
                counts["writes"] += calls
        counts["round_trips"] -= self._own_reads
        return counts

    def close(self) -> None:
        self.client.close()


class MemcachedProbe(Probe):
    """``stats`` of our private memcached."""

    unit = "commands at the server (each a round trip)"

    def __init__(self, port: int) -> None:
        from pymemcache.client.base import Client

        self.client = Client(("127.0.0.1", port))

    def read(self) -> Counts:
        s = {k.decode() if isinstance(k, bytes) else k: v for k, v in self.client.stats().items()}

        def n(name: str) -> float:
            return float(s.get(name, 0))

        deletes = n("delete_hits") + n("delete_misses")
        arith = n("incr_hits") + n("incr_misses") + n("decr_hits") + n("decr_misses")
        writes = n("cmd_set") + n("cmd_touch") + deletes + arith
        return {
            "round_trips": n("cmd_get") + writes,
            "writes": writes,
            "cmd:get": n("cmd_get"),
            "cmd:set": n("cmd_set"),
            "cmd:touch": n("cmd_touch"),
            "cmd:delete": deletes,
            "cmd:cas": n("cas_hits") + n("cas_misses") + n("cas_badval"),
        }

    def close(self) -> None:
        self.client.close()


class SQLAlchemyProbe(Probe):
    """Cursor, begin and commit events of every SQLAlchemy engine in the process."""

    unit = "statements + BEGIN/COMMIT/ROLLBACK + pre-ping sent"

    def __init__(self, network: bool) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        self._event = event
        self._engine = Engine
        #: psycopg sends BEGIN as a query of its own; pysqlite's is in-process.
        self._network = network
        self.counts: Counts = {
            "statements": 0.0,
            "writes": 0.0,
            "begins": 0.0,
            "commits": 0.0,
            "rollbacks": 0.0,
            "pings": 0.0,
        }
        event.listen(Engine, "engine_connect", self._on_connect)
        event.listen(Engine, "before_cursor_execute", self._on_execute)
        event.listen(Engine, "begin", self._on_begin)
        event.listen(Engine, "commit", self._on_commit)
        event.listen(Engine, "rollback", self._on_rollback)

    def _on_connect(self, conn: t.Any) -> None:
        # With pool_pre_ping, every checkout from the pool first sends a ping,
        # at the DBAPI level where no cursor event sees it.
        if getattr(conn.engine.pool, "_pre_ping", False):
            self.counts["pings"] += 1

    def _on_execute(self, conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        self.counts["statements"] += 1
        if _is_write_sql(statement):
            self.counts["writes"] += 1

    def _on_begin(self, conn: t.Any) -> None:
        self.counts["begins"] += 1

    def _on_commit(self, conn: t.Any) -> None:
        self.counts["commits"] += 1

    def _on_rollback(self, conn: t.Any) -> None:
        self.counts["rollbacks"] += 1

    def read(self) -> Counts:
        c = dict(self.counts)
        # A transaction that wrote; a BEGIN/COMMIT around reads only is not one.
        c["transactions"] = c["commits"]
        network = c["begins"] + c["pings"] if self._network else 0
        c["round_trips"] = c["statements"] + c["commits"] + c["rollbacks"] + network
        return c

    def close(self) -> None:
        self._event.remove(self._engine, "engine_connect", self._on_connect)
        self._event.remove(self._engine, "before_cursor_execute", self._on_execute)
        self._event.remove(self._engine, "begin", self._on_begin)
        self._event.remove(self._engine, "commit", self._on_commit)
        self._event.remove(self._engine, "rollback", self._on_rollback)


class Relay:
    """A loopback TCP relay that counts round trips on the wire.

    libpq sends from C, out of reach of any Python hook, and PostgreSQL keeps no
    per-session count of requests. So the counting pass talks to PostgreSQL
    through this relay: every time the client speaks after the server has
    answered (or for the first time) is one round trip. A pipelined burst is
    one; a ping, a BEGIN or a ROLLBACK sent on its own is one each.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.round_trips = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, upstream]
            state = {"last": "s2c"}
            threading.Thread(target=self._pump, args=(client, upstream, "c2s", state), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, "s2c", state), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str, state: dict[str, str]) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    if direction == "c2s" and state["last"] != "c2s":
                        self.round_trips += 1
                    state["last"] = direction
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._server.close()
        for sock in self._sockets:
            sock.close()


class RelayedSQLProbe(SQLAlchemyProbe):
    """SQLAlchemy's events for statements and transactions, the relay for round trips."""

    unit = "round trips through a counting TCP relay"

    def __init__(self, relay: Relay) -> None:
        super().__init__(network=True)
        self.relay = relay

    def read(self) -> Counts:
        c = super().read()
        c["events_round_trips"] = c["round_trips"]
        c["round_trips"] = float(self.relay.round_trips)
        return c


class PgTraceProbe(Probe):
    """libpq's own protocol trace on the pooled connections of Flask-Satchel's engine, the relay for round trips.

    The store runs its per-request statements on bare DB-API cursors, which
    SQLAlchemy's statement events never see; the server's answers are the
    count instead: every ``CommandComplete`` names the statement it ends.
    """

    unit = "round trips through a counting TCP relay"

    def __init__(self, engine: t.Any, relay: Relay) -> None:
        from sqlalchemy import event

        self.counts: Counts = {"statements": 0.0, "writes": 0.0, "transactions": 0.0}
        self.relay = relay
        self._engine = engine
        self._event = event
        self._in_tx = False
        self._wrote = False
        event.listen(engine, "checkout", self._checkout)
        event.listen(engine, "checkin", self._checkin)

    def _checkout(self, dbapi_connection: t.Any, record: t.Any, proxy: t.Any) -> None:
        import tempfile

        from psycopg import pq

        trace = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed at checkin)
        dbapi_connection.pgconn.trace(trace.fileno())
        dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        record.info["bench_trace"] = trace

    def _checkin(self, dbapi_connection: t.Any, record: t.Any) -> None:
        trace = record.info.pop("bench_trace", None)
        if trace is None:
            return
        if dbapi_connection is not None:
            dbapi_connection.pgconn.untrace()
        trace.seek(0)
        for line in trace.read().splitlines():
            fields = line.split("\t")
            if len(fields) > 3 and fields[0] == "B" and fields[2] == "CommandComplete":
                self._statement(fields[3].strip(' "').split()[0].upper())
        trace.close()

    def _statement(self, tag: str) -> None:
        self.counts["statements"] += 1
        if tag == "BEGIN":
            self._in_tx, self._wrote = True, False
        elif tag in ("COMMIT", "ROLLBACK"):
            if tag == "COMMIT" and self._wrote:
                self.counts["transactions"] += 1
            self._in_tx = False
        elif _is_write_sql(tag):
            self.counts["writes"] += 1
            if self._in_tx:
                self._wrote = True
            else:  # autocommit: the statement is its own transaction
                self.counts["transactions"] += 1

    def read(self) -> Counts:
        return dict(self.counts) | {"round_trips": float(self.relay.round_trips)}

    def close(self) -> None:
        self._event.remove(self._engine, "checkout", self._checkout)
        self._event.remove(self._engine, "checkin", self._checkin)


class SQLiteProbe(Probe):
    """``set_trace_callback`` on every connection Flask-Satchel's SQLite store opens."""

    unit = "SQL statements run"

    def __init__(self, store: t.Any) -> None:
        self.counts: Counts = {"statements": 0.0, "writes": 0.0, "transactions": 0.0}
        self._in_tx = False
        self._wrote = False
        store.close()  # drop pooled connections opened before we were watching
        self._store = store
        self._original = store._connect

        def connect() -> sqlite3.Connection:
            conn = self._original()
            conn.set_trace_callback(self._trace)
            return t.cast(sqlite3.Connection, conn)

        store._connect = connect

    def _trace(self, statement: str) -> None:
        head = statement.lstrip().upper()
        if head.startswith("PRAGMA"):
            return  # connection setup, once per pooled connection
        self.counts["statements"] += 1
        if head.startswith("BEGIN"):
            self._in_tx, self._wrote = True, False
        elif head.startswith(("COMMIT", "END")):
            self._in_tx = False
            if self._wrote:
                self.counts["transactions"] += 1
        elif head.startswith("ROLLBACK"):
            self._in_tx = False
        elif _is_write_sql(statement):
            self.counts["writes"] += 1
            if self._in_tx:
                self._wrote = True
            else:
                self.counts["transactions"] += 1  # autocommit

    def read(self) -> Counts:
        c = dict(self.counts)
        c["round_trips"] = c["statements"]
        return c

    def close(self) -> None:
        self._store._connect = self._original


_FS: Counts = {}
_FS_ACTIVE = False
_FS_HOOKED = False


def _fs_audit(event: str, args: tuple[t.Any, ...]) -> None:
    if not _FS_ACTIVE:
        return
    if event == "open":
        path, mode, flags = args
        if isinstance(path, int) or not isinstance(path, (str, bytes, os.PathLike)):
            return
        _FS["opens"] = _FS.get("opens", 0) + 1
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
        if writing:
            _FS["write_opens"] = _FS.get("write_opens", 0) + 1
    elif event in ("os.rename", "os.remove", "os.mkdir", "os.scandir", "os.listdir", "fcntl.flock", "os.utime"):
        _FS[event] = _FS.get(event, 0) + 1


def _proc_io() -> Counts:
    try:
        with open("/proc/self/io") as f:
            fields = dict(line.split(": ") for line in f.read().splitlines())
    except OSError:
        return {}
    return {"syscalls_read": float(fields["syscr"]), "syscalls_write": float(fields["syscw"])}


class FileProbe(Probe):
    """Audit events for opens, renames and removes, plus read/write syscalls from ``/proc/self/io``."""

    unit = "file opens"

    def __init__(self) -> None:
        global _FS_ACTIVE, _FS_HOOKED
        if not _FS_HOOKED:
            sys.addaudithook(_fs_audit)
            _FS_HOOKED = True
        _FS_ACTIVE = True

    def read(self) -> Counts:
        global _FS_ACTIVE
        # Our own open and read of /proc are not the store's: count them out.
        _FS_ACTIVE = False
        try:
            io = _proc_io()
        finally:
            _FS_ACTIVE = True
        c = {k: float(v) for k, v in _FS.items()}
        c.update(io)
        opens = c.get("opens", 0.0)
        c["round_trips"] = opens
        c["writes"] = c.get("write_opens", 0.0) + c.get("os.rename", 0.0) + c.get("os.remove", 0.0)
        c["opens"] = opens
        return c

    def close(self) -> None:
        global _FS_ACTIVE
        _FS_ACTIVE = False


def probe_for(backend: Backend, app: Flask, services: Services, relay: Relay | None = None) -> Probe:
    """The right counter for ``backend``; a plain ``Probe`` (all zero) when there is no I/O."""
    storage = backend.storage
    if storage == "redis":
        return RedisProbe(t.cast(str, services.redis_url))
    if storage == "memcached":
        return MemcachedProbe(t.cast(int, services.memcached_port))
    if storage == "postgresql":
        if relay is not None and backend.family == "satchel":
            return PgTraceProbe(app.extensions["satchel"].store.engine, relay)
        if relay is not None:
            return RelayedSQLProbe(relay)
        return SQLAlchemyProbe(network=True)
    if storage == "sqlite":
        if backend.family == "flask-session":
            return SQLAlchemyProbe(network=False)
        return SQLiteProbe(app.extensions["satchel"].store)
    if storage == "filesystem":
        return FileProbe()
    return Probe()


def delta(before: Counts, after: Counts, requests: int) -> Counts:
    """Per-request difference of two snapshots."""
    keys = set(before) | set(after)
    return {k: (after.get(k, 0.0) - before.get(k, 0.0)) / requests for k in sorted(keys)}


@contextlib.contextmanager
def probing(backend: Backend, app: Flask, services: Services, relay: Relay | None = None) -> t.Iterator[Probe]:
    probe = probe_for(backend, app, services, relay)
    try:
        yield probe
    finally:
        probe.close()
