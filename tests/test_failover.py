"""Failover, resharding and restarts under load, on private servers these tests start.

Every server is a real process on a free loopback port, started here and
stopped by its pid at the end, whatever happened: a Redis master with a
replica and three Sentinels, a three-master Redis Cluster, a PostgreSQL
cluster in a temporary directory. The app is served by a real threaded WSGI
server, and a bounded load (a few client threads, for a limited time) reads
sessions written before the fault and appends to sessions of its own while
the store moves under it. What is checked is what users see: every status
(a 503 while the store cannot serve, never a 500), service back with no
restart of the app, and every session that the store had safely (written
before, and for Sentinel confirmed on the replica with ``WAIT``) read back
whole through the app.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import dataclasses
import glob
import logging
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import typing as t

import pytest
import redis
from conftest import RedisServer, free_port, require
from flask import Flask, session

from flask_satchel.testing import LiveResponse, http_get, live_server, make_app

pytestmark = pytest.mark.slow

SERVICE = "failover"
PREFIX = "failover:"
#: SESSION_STORE_TIMEOUT of every app here: a request on a store that hangs gets its 503 this soon.
TIMEOUT = 1.0
OK = 200
UNAVAILABLE = 503
#: Client threads of the load, and the pause each takes between its requests.
THREADS = 4
PAUSE = 0.01
#: The longest a load runs; a test stops it sooner, once service is back.
LOAD_LIMIT = 25.0
#: How long a failover, a restart or a recovery may take before the test gives up.
DEADLINE = 20.0
#: Sessions written before the fault, each with this many keys.
SEEDED = 24
KEYS = ("a", "b", "c")

Address = tuple[str, int]
Start = t.Callable[..., RedisServer]


# The app and its load --------------------------------------------------------------


def _app(config: dict[str, t.Any], folder: t.Any) -> Flask:
    """The contract app (``/set``, ``/get``, ``/dump``) plus ``/append/<n>``, which adds ``n`` to the list ``log``."""
    app = make_app({"SESSION_KEY_PREFIX": PREFIX, "SESSION_STORE_TIMEOUT": TIMEOUT, **config}, folder)

    @app.get("/append/<int:n>")
    def append(n: int) -> str:
        # One key changed per request; a write applied twice would show as a repeated n.
        session["log"] = [*session.get("log", []), n]
        return "ok"

    return app


@pytest.fixture
def apps(tmp_path: t.Any, caplog: pytest.LogCaptureFixture) -> t.Iterator[t.Callable[[dict[str, t.Any]], Flask]]:
    """``apps(config)`` makes an app (see :func:`_app`); its store is closed at the end."""
    # The access log of thousands of requests would bury the report of a failure.
    caplog.set_level(logging.WARNING, logger="werkzeug")
    made: list[Flask] = []

    def make(config: dict[str, t.Any]) -> Flask:
        app = _app(config, tmp_path)
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["satchel"].store.close()


def _seed(address: Address, count: int = SEEDED) -> dict[str, str]:
    """``count`` sessions, each given every key of ``KEYS``: cookie -> what ``/dump`` shows of it."""
    seeded = {}
    for i in range(count):
        cookie = None
        for key in KEYS:
            response = http_get(address, f"/set/{key}/{key}{i}", cookie)
            assert response.status == OK, response
            cookie = response.cookie or cookie
        assert cookie is not None
        seeded[cookie] = repr(sorted((key, f"{key}{i}") for key in KEYS))
    return seeded


def _missing(address: Address, seeded: dict[str, str]) -> list[str]:
    """The seeded sessions that do not read back whole through the app, each with what it read."""
    missing = []
    for cookie, expected in seeded.items():
        response = http_get(address, "/dump", cookie)
        if response.status != OK or response.body != expected:
            missing.append(f"expected {expected}, got {response.status} {response.body[:200]!r}")
    return missing


@dataclasses.dataclass
class Outcome:
    """One request of the load."""

    at: float
    path: str
    #: The HTTP status; 0 when the request got no HTTP answer at all.
    status: int
    detail: str = ""


@dataclasses.dataclass
class Writer:
    """A load thread's own session: what it asked to append, and which appends were answered 200."""

    cookie: str | None = None
    #: Every cookie the thread's session was given: more than one means its session was lost.
    cookies: list[str] = dataclasses.field(default_factory=list)
    sent: list[int] = dataclasses.field(default_factory=list)
    acked: list[int] = dataclasses.field(default_factory=list)


class Load:
    """A bounded load: ``THREADS`` clients, each reading seeded sessions and appending to its own, until stopped.

    A seeded session that answers 200 must show all its data: a read that
    does not is recorded in ``wrong``. Every status is kept in ``outcomes``.
    """

    def __init__(self, address: Address, seeded: dict[str, str]) -> None:
        self.address = address
        self.seeded = sorted(seeded.items())
        self.outcomes: list[Outcome] = []
        self.wrong: list[str] = []
        self.writers = [Writer() for _ in range(THREADS)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i, writer), daemon=True) for i, writer in enumerate(self.writers)
        ]

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(LOAD_LIMIT + 10)

    def _get(self, path: str, cookie: str | None) -> LiveResponse:
        at = time.monotonic()
        try:
            response = http_get(self.address, path, cookie)
        except OSError as e:  # no HTTP answer: recorded, and the test fails on it
            response = LiveResponse(0, repr(e), None)
        with self._lock:
            self.outcomes.append(Outcome(at, path, response.status, response.body[:300]))
        return response

    def _run(self, i: int, writer: Writer) -> None:
        rng = random.Random(i)
        deadline = self.started + LOAD_LIMIT
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            cookie, expected = rng.choice(self.seeded)
            response = self._get("/dump", cookie)
            if response.status == OK and response.body != expected:
                with self._lock:
                    self.wrong.append(f"expected {expected}, read {response.body[:200]!r}")
            n += 1
            writer.sent.append(n)
            response = self._get(f"/append/{n}", writer.cookie)
            if response.status == OK:
                writer.acked.append(n)
            if response.cookie is not None and response.cookie != writer.cookie:
                writer.cookie = response.cookie
                writer.cookies.append(response.cookie)
            self._stop.wait(PAUSE)

    def statuses(self) -> collections.Counter[int]:
        return collections.Counter(outcome.status for outcome in self.outcomes)

    def summary(self, fault: float) -> str:
        """The statuses, and when the 503s came relative to ``fault``: what ``pytest -s`` shows of a run."""
        down = [o.at - fault for o in self.outcomes if o.status == UNAVAILABLE]
        span = f", 503s from {min(down):+.2f} s to {max(down):+.2f} s after the fault" if down else ""
        return f"{len(self.outcomes)} requests, {dict(self.statuses())}{span}"

    def since(self, at: float) -> list[Outcome]:
        """The requests that started at ``at`` or later."""
        return [outcome for outcome in self.outcomes if outcome.at >= at]


def _tracebacks(caplog: pytest.LogCaptureFixture) -> str:
    """The tracebacks Flask logged for requests that ended in a 500, for the assertion message."""
    handler = logging.Formatter()
    return "\n".join(handler.format(r) for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR)


def _served(address: Address) -> float:
    """Wait until a new session can be written and read back through the app; when that first worked."""
    deadline = time.monotonic() + DEADLINE
    while True:
        at = time.monotonic()
        written = http_get(address, "/set/probe/1")
        if written.status == OK and http_get(address, "/get/probe", written.cookie).body == "'1'":
            return at
        assert time.monotonic() < deadline, f"service did not resume: {written}"
        time.sleep(0.05)


def _check_load(load: Load, caplog: pytest.LogCaptureFixture, resumed: float) -> None:
    """No 500 and no wrong read at any time; some 503s during the fault; nothing but 200 once service resumed."""
    statuses = load.statuses()
    assert set(statuses) <= {OK, UNAVAILABLE}, (
        f"statuses {dict(statuses)}: "
        f"{[o for o in load.outcomes if o.status not in (OK, UNAVAILABLE)][:5]}\n{_tracebacks(caplog)}"
    )
    assert not load.wrong, load.wrong[:5]
    assert statuses[UNAVAILABLE] > 0, f"the load never met the fault: {dict(statuses)}"
    after = load.since(resumed)
    assert after, "the load stopped before service resumed"
    assert {o.status for o in after} == {OK}, [o for o in after if o.status != OK][:5]


def _check_writers(address: Address, load: Load) -> None:
    """Each load thread kept one session, which holds every append answered 200, each once, in order."""
    for writer in load.writers:
        assert len(writer.cookies) == 1, f"the session was replaced {len(writer.cookies) - 1} times: it was lost"
        response = http_get(address, "/get/log", writer.cookie)
        assert response.status == OK, response
        log = ast.literal_eval(response.body)
        assert log == sorted(set(log)), f"an append was applied twice or out of order: {log}"
        assert set(writer.acked) <= set(log), f"appends answered 200 are gone: {set(writer.acked) - set(log)}"
        assert set(log) <= set(writer.sent), log


def _wait_for(check: t.Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    until = time.monotonic() + deadline
    while not check():
        assert time.monotonic() < until, what
        time.sleep(0.05)


# Redis: servers and Sentinel ---------------------------------------------------------


def _command(client: redis.Redis, *args: t.Any) -> t.Any:
    """``client.execute_command(*args)``, whose reply redis-py types as the union of its sync and async ones."""
    return t.cast(t.Any, client).execute_command(*args)


def _answers(client: redis.Redis, check: t.Callable[[redis.Redis], bool]) -> bool:
    try:
        return check(client)
    except redis.RedisError:
        return False


@dataclasses.dataclass
class Watched:
    """A master, its replica, and the three Sentinels that watch them."""

    master: RedisServer
    replica: RedisServer
    sentinels: list[RedisServer]

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{SERVICE}/0"

    def master_port(self) -> int:
        """The master's port as the Sentinels name it now."""
        with contextlib.closing(self.sentinels[0].client()) as client:
            return int(t.cast(t.Any, client).sentinel_get_master_addr_by_name(SERVICE)[1])

    def replicated(self) -> None:
        """Wait until every write the master took so far is on the replica.

        ``WAIT`` counts the acknowledgements of its own connection's writes;
        replication is one ordered stream, so once the replica has this
        marker it has every session written before it.
        """
        with contextlib.closing(self.master.client()) as client:
            client.set("failover-test:marker", str(time.time()))
            assert _command(client, "WAIT", 1, 5000) == 1, "the replica did not confirm the writes"


def _watched(servers: Start, down_after: int = 1000) -> Watched:
    """A master, a replica in sync with it, and three Sentinels that know both and each other.

    The Sentinels fail the master over once it has not answered for
    ``down_after`` milliseconds.
    """
    # No delay before a full sync: that is for many replicas connecting at once.
    sync = ("--repl-diskless-sync-delay", "0")
    master = servers(*sync)
    replica = servers(*sync, "--replicaof", "127.0.0.1", str(master.port))
    with contextlib.closing(replica.client()) as client:
        _wait_for(
            lambda: _answers(client, lambda c: c.info("replication")["master_link_status"] == "up"),
            "the replica did not sync",
        )
    sentinels = [
        servers(
            f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 2",
            f"sentinel down-after-milliseconds {SERVICE} {down_after}",
            f"sentinel failover-timeout {SERVICE} 3000",
            sentinel=True,
        )
        for _ in range(3)
    ]
    for sentinel in sentinels:
        with contextlib.closing(sentinel.client()) as client:

            def ready(c: redis.Redis) -> bool:
                state = t.cast(t.Any, c).sentinel_master(SERVICE)
                return bool(state["num-other-sentinels"] == 2 and state["num-slaves"] == 1)

            _wait_for(lambda: _answers(client, ready), "the Sentinels did not find the replica and each other")
    return Watched(master, replica, sentinels)


def _promoted(watched: Watched) -> None:
    """Wait until the Sentinels name the replica as the master."""
    _wait_for(lambda: watched.master_port() == watched.replica.port, "the Sentinels did not promote the replica")


@pytest.mark.parametrize(
    "fault",
    ["kill", "pause"],
)
def test_sentinel_failover_is_503s_then_service_with_every_replicated_session(
    fault: str, servers: Start, apps: t.Callable[[dict[str, t.Any]], Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """A master killed or paused under load: 503s, never 500s, then the new master has every replicated session."""
    watched = _watched(servers)
    app = apps({"SESSION_URL": watched.url})
    with live_server(app) as address:
        seeded = _seed(address)
        watched.replicated()
        with Load(address, seeded) as load:
            time.sleep(0.5)
            fault_at = time.monotonic()
            if fault == "kill":
                watched.master.kill()
                _promoted(watched)
            else:
                watched.master.freeze()
                _promoted(watched)
                watched.master.thaw()
                # Back, the old master is told to follow the new one.
                with contextlib.closing(watched.master.client()) as old:
                    _wait_for(
                        lambda: _answers(old, lambda c: c.info("replication")["role"] == "slave"),
                        "the old master was not turned into a replica",
                    )
            resumed = _served(address)
            time.sleep(1.0)
        print(f"sentinel, master {fault}: {load.summary(fault_at)}; served again {resumed - fault_at:.2f} s after")
        _check_load(load, caplog, resumed)
        assert _missing(address, seeded) == []
        with contextlib.closing(watched.replica.client()) as client:
            assert client.info("replication")["role"] == "master"


def test_sentinel_master_hung_past_the_timeout_then_back_serves_each_session_its_own_data(
    servers: Start, apps: t.Callable[[dict[str, t.Any]], Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """A master hung past SESSION_STORE_TIMEOUT, then back (no failover): 503s, then each session reads its own data."""
    # The Sentinels wait far longer than the hang: the same master serves again.
    watched = _watched(servers, down_after=60_000)
    app = apps({"SESSION_URL": watched.url})
    with live_server(app) as address:
        seeded = _seed(address)
        with Load(address, seeded) as load:
            _wait_for(lambda: all(len(w.acked) >= 3 for w in load.writers), "the load's writes did not start")
            fault_at = time.monotonic()
            watched.master.freeze()
            # Long enough for every load thread to give up on a request, and start another on the same connection.
            time.sleep(3 * TIMEOUT)
            watched.master.thaw()
            resumed = _served(address)
            time.sleep(1.0)
        print(f"sentinel, master hung: {load.summary(fault_at)}; served again {resumed - fault_at:.2f} s after")
        _check_load(load, caplog, resumed)
        assert _missing(address, seeded) == []
        _check_writers(address, load)
        assert watched.master_port() == watched.master.port


# Redis Cluster -----------------------------------------------------------------------


def _cluster(servers: Start) -> list[RedisServer]:
    """Three masters sharing the slots (``redis-cli --cluster create``), in cluster_state:ok."""
    nodes = []
    for _ in range(3):
        port = free_port(bus=True)
        nodes.append(servers("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf", port=port))
    subprocess.run(
        ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes), "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    for node in nodes:
        with contextlib.closing(node.client()) as client:
            _wait_for(
                lambda: _answers(client, lambda c: _command(c, "CLUSTER INFO")["cluster_state"] == "ok"),
                "the cluster did not reach cluster_state:ok",
            )
    return nodes


def _session_slots(node: redis.Redis) -> set[int]:
    """The slots of ``node`` that hold session records."""
    return {int(_command(node, "CLUSTER KEYSLOT", key)) for key in node.scan_iter(match=PREFIX + "*")}


def _slot_count(node: redis.Redis) -> int:
    """How many slots ``node`` serves."""
    for info in _command(node, "CLUSTER NODES").values():
        if "myself" in info["flags"]:
            return sum(int(last) - int(first) + 1 for first, last in info["slots"])
    raise AssertionError("CLUSTER NODES did not name the node itself")


def _move_slot(
    slot: int, source: redis.Redis, target: redis.Redis, target_port: int, everyone: list[redis.Redis]
) -> None:
    """Move ``slot`` from ``source`` to ``target`` by hand, slowly, so that requests meet each step.

    Half-way (MIGRATING/IMPORTING) the source answers for the keys it still
    has and sends ASK for the others; once a key is migrated only ASKING
    reaches it on the target; after SETSLOT NODE the source answers MOVED.
    """
    source_id = _command(source, "CLUSTER MYID")
    target_id = _command(target, "CLUSTER MYID")
    _command(target, "CLUSTER SETSLOT", slot, "IMPORTING", source_id)
    _command(source, "CLUSTER SETSLOT", slot, "MIGRATING", target_id)
    time.sleep(0.05)
    while keys := _command(source, "CLUSTER GETKEYSINSLOT", slot, 10):
        for key in keys:
            source.migrate("127.0.0.1", target_port, key, 0, 5000)
            time.sleep(0.05)
    for node in [target, source, *(n for n in everyone if n not in (source, target))]:
        _command(node, "CLUSTER SETSLOT", slot, "NODE", target_id)


def _reshard_by_hand(nodes: list[RedisServer]) -> int:
    """Move every slot that holds a session to the next master; how many slots moved."""
    clients = [node.client() for node in nodes]
    try:
        moves = [(i, slot) for i, client in enumerate(clients) for slot in sorted(_session_slots(client))]
        for i, slot in moves:
            j = (i + 1) % len(nodes)
            _move_slot(slot, clients[i], clients[j], nodes[j].port, clients)
        return len(moves)
    finally:
        for client in clients:
            client.close()


def _reshard_with_redis_cli(nodes: list[RedisServer]) -> int:
    """``redis-cli --cluster reshard``: every slot of the master with the most sessions to the next one."""
    clients = [node.client() for node in nodes]
    try:
        held = [len(_session_slots(client)) for client in clients]
        i = held.index(max(held))
        j = (i + 1) % len(nodes)
        ids = [_command(client, "CLUSTER MYID") for client in clients]
        ids = [x.decode() if isinstance(x, bytes) else str(x) for x in ids]
        count = _slot_count(clients[i])
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "reshard",
                f"127.0.0.1:{nodes[i].port}",
                "--cluster-from",
                ids[i],
                "--cluster-to",
                ids[j],
                "--cluster-slots",
                str(count),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert _session_slots(clients[i]) == set(), "sessions stayed on the drained master"
        return held[i]
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("how", ["by-hand", "redis-cli"])
def test_cluster_reshard_under_load_loses_nothing_and_applies_nothing_twice(
    how: str, servers: Start, apps: t.Callable[[dict[str, t.Any]], Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """Slots holding live sessions moved to another master under load: no 500, no lost session, no write twice."""
    require(shutil.which("redis-cli") is not None, "redis-cli is not installed")
    nodes = _cluster(servers)
    app = apps({"SESSION_URL": f"redis+cluster://127.0.0.1:{nodes[0].port}"})
    with live_server(app) as address:
        seeded = _seed(address)
        with Load(address, seeded) as load:
            # The load's own sessions exist before their slots move.
            _wait_for(lambda: all(len(w.acked) >= 3 for w in load.writers), "the load's writes did not start")
            started = time.monotonic()
            moved = (_reshard_by_hand if how == "by-hand" else _reshard_with_redis_cli)(nodes)
            ended = time.monotonic()
            time.sleep(0.5)
        statuses = load.statuses()
        assert set(statuses) <= {OK, UNAVAILABLE}, (
            f"statuses {dict(statuses)}: "
            f"{[o for o in load.outcomes if o.status not in (OK, UNAVAILABLE)][:5]}\n{_tracebacks(caplog)}"
        )
        assert not load.wrong, load.wrong[:5]
        assert moved > 0
        during = [o for o in load.outcomes if started <= o.at <= ended]
        assert len(during) > 20, f"the load barely ran while slots moved: {len(during)} requests"
        assert _missing(address, seeded) == []
        _check_writers(address, load)
        print(
            f"cluster reshard {how}: {moved} slots with sessions moved in {ended - started:.1f} s;",
            load.summary(started),
        )


# PostgreSQL --------------------------------------------------------------------------


def _pg_bin() -> str | None:
    """The newest PostgreSQL server binaries' directory of Debian's packages."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


class PostgresServer:
    """A private PostgreSQL cluster in a temporary directory, on a free loopback port, run by ``pg_ctl``.

    As root the server runs as ``postgres`` (PostgreSQL refuses to run as
    root), so the directory belongs to that user.
    """

    def __init__(self, bin_dir: str) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.folder = tempfile.mkdtemp(prefix="satchel-pg-")
        self.data = os.path.join(self.folder, "data")
        #: The server's log: without one it would write to pg_ctl's output, and hold it open.
        self.log = os.path.join(self.folder, "log")
        self.started = False
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")

    def _run(self, tool: str, *args: str) -> None:
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        command = [*as_user, os.path.join(self.bin_dir, tool), *args]
        done = subprocess.run(command, capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, f"{' '.join(command)}: {done.stdout.decode()} {done.stderr.decode()}"

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "start")
        self.started = True
        return self

    def restart(self, mode: str) -> None:
        """``pg_ctl restart -m mode``: stopped, and started again with the same options."""
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-m", mode, "-w", "restart")

    def stop(self) -> None:
        """Stop the server, by the pid in its ``postmaster.pid`` if ``pg_ctl`` cannot, and remove its directory."""
        try:
            if self.started:
                with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                    self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
                with contextlib.suppress(OSError, ValueError), open(os.path.join(self.data, "postmaster.pid")) as f:
                    os.kill(int(f.readline()), signal.SIGKILL)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def postgres() -> t.Iterator[PostgresServer]:
    bin_dir = _pg_bin()
    require(bin_dir is not None, "PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    assert bin_dir is not None
    require(os.geteuid() != 0 or shutil.which("runuser") is not None, "runuser is needed to run PostgreSQL as root")
    server = PostgresServer(bin_dir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgresql_restart_is_503s_then_full_service_with_every_session(
    mode: str, postgres: PostgresServer, apps: t.Callable[[dict[str, t.Any]], Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL restarted under load: 503s, never 500s, then full service with no app restart and every session."""
    app = apps({"SESSION_URL": f"postgresql+psycopg://postgres@127.0.0.1:{postgres.port}/postgres"})
    with live_server(app) as address:
        seeded = _seed(address)
        with Load(address, seeded) as load:
            _wait_for(lambda: all(len(w.acked) >= 3 for w in load.writers), "the load's writes did not start")
            fault_at = time.monotonic()
            postgres.restart(mode)
            resumed = _served(address)
            time.sleep(1.0)
        print(f"postgresql restart -m {mode}: {load.summary(fault_at)}; served again {resumed - fault_at:.2f} s after")
        _check_load(load, caplog, resumed)
        assert _missing(address, seeded) == []
        _check_writers(address, load)
