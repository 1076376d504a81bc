"""A loopback TCP relay that holds every chunk for a while: a network hop where the kernel has none.

The kernel here has no ``netem``, so the hop between an app and its store
is made in userspace: each chunk read from one side is written to the
other side ``delay`` seconds after it arrived, each way, so a request and
its answer cost two delays more than on bare loopback, as between two
hosts in one data centre. Chunks are not serialised behind each other: a
chunk that arrives while an earlier one is held waits only for its own
deadline, so pipelined traffic stays pipelined.

The relay also counts what crosses it, per route: chunks and bytes each
way, and *round trips*, the times the client spoke after the server had
answered (or for the first time on a connection). A pipeline or a script
is one round trip; a client that waits for each answer pays one per
statement.

It runs as a process of its own (``spawn``): in the benchmark's process
it would compete for the GIL with the app being timed, and the app's
Python work would hold chunks past their deadline.

    .venv/bin/python bench/relay.py --delay-ms 0.5 --target 127.0.0.1:6379

prints one JSON line, ``{"ports": [...], "control": port}``, and relays
until it is terminated; a line ``stats`` sent to the control port is
answered with the counters of every route as JSON.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import json
import select
import signal
import socket
import subprocess
import sys
import time
import typing as t

import services

#: Counter names of a route, each cumulative since the relay started.
COUNTERS = ("connections", "round_trips", "c2s_chunks", "s2c_chunks", "c2s_bytes", "s2c_bytes")


def _tight_timer_slack() -> None:
    """Ask Linux to end the relay's waits within a microsecond of their deadline.

    By default the kernel may let a timed wait run on by a slack it picks,
    to batch wake-ups; every held chunk would be held that much longer.
    """
    with contextlib.suppress(Exception):
        pr_set_timerslack = 29
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_timerslack, 1000, 0, 0, 0)


class Route:
    """One listening port relaying to one target, with its counters."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])

    def stats(self) -> dict[str, t.Any]:
        return {"port": self.port, "target": f"{self.target[0]}:{self.target[1]}"} | self.counts


class _Pipe:
    """One direction of one relayed connection."""

    def __init__(self, src: socket.socket, dst: socket.socket, route: Route, way: str, last: list[str]) -> None:
        self.src = src
        self.dst = dst
        self.route = route
        self.way = way
        #: Shared by both directions of a connection: which side spoke last.
        self.last = last


class Relay:
    """Every route in one thread: a ``select`` loop and one queue of held chunks.

    One thread, because a chunk handed from a reading thread to a writing
    one costs a wake-up each way on top of the delay. The delay is the same for every chunk, so
    deadlines come in arrival order and one FIFO holds them all. ``select``
    takes its timeout in microseconds, where ``epoll`` rounds up to the
    next millisecond, which would double the hold.
    """

    def __init__(self, targets: t.Sequence[tuple[str, int]], delay: float) -> None:
        self.delay = delay
        self.routes = [Route(target) for target in targets]
        self.control = socket.create_server(("127.0.0.1", 0))
        self._listeners = {r.server: r for r in self.routes}
        self._pipes: dict[socket.socket, _Pipe] = {}
        #: (deadline, pipe, data); empty data ends the pipe's stream.
        self._held: collections.deque[tuple[float, _Pipe, bytes]] = collections.deque()

    def serve(self) -> None:
        while True:
            timeout = max(0.0, self._held[0][0] - time.perf_counter()) if self._held else None
            readable, _, _ = select.select([self.control, *self._listeners, *self._pipes], [], [], timeout)
            for sock in readable:
                if sock is self.control:
                    self._answer()
                elif sock in self._listeners:
                    self._accept(self._listeners[sock])
                elif sock in self._pipes:
                    self._read(self._pipes[sock])
            now = time.perf_counter()
            while self._held and self._held[0][0] <= now:
                _, pipe, data = self._held.popleft()
                self._write(pipe, data)

    def _accept(self, route: Route) -> None:
        client, _ = route.server.accept()
        try:
            upstream = socket.create_connection(route.target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        route.counts["connections"] += 1
        # A client chunk after a server chunk (or the first one) starts a round trip.
        last = ["s2c"]
        self._pipes[client] = _Pipe(client, upstream, route, "c2s", last)
        self._pipes[upstream] = _Pipe(upstream, client, route, "s2c", last)

    def _read(self, pipe: _Pipe) -> None:
        try:
            data = pipe.src.recv(262144)
        except OSError:
            data = b""
        deadline = time.perf_counter() + self.delay
        if data:
            counts = pipe.route.counts
            if pipe.way == "c2s" and pipe.last[0] != "c2s":
                counts["round_trips"] += 1
            pipe.last[0] = pipe.way
            counts[f"{pipe.way}_chunks"] += 1
            counts[f"{pipe.way}_bytes"] += len(data)
        else:
            del self._pipes[pipe.src]  # end of stream: pass it on after what is still held
        self._held.append((deadline, pipe, data))

    def _write(self, pipe: _Pipe, data: bytes) -> None:
        try:
            if data:
                pipe.dst.sendall(data)
                return
            pipe.dst.shutdown(socket.SHUT_WR)
        except OSError:
            # One side is gone: the connection is over both ways; what is
            # still held for it fails here too, harmlessly.
            self._pipes.pop(pipe.src, None)
            self._pipes.pop(pipe.dst, None)
        if pipe.src not in self._pipes and pipe.dst not in self._pipes:
            for sock in (pipe.src, pipe.dst):
                sock.close()

    def _answer(self) -> None:
        conn, _ = self.control.accept()
        conn.settimeout(5)
        with conn, conn.makefile("rwb") as f:
            if f.readline().strip() == b"stats":
                f.write(json.dumps([r.stats() for r in self.routes]).encode() + b"\n")
                f.flush()


def _target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise argparse.ArgumentTypeError(f"loopback targets only, not {host!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--delay-ms", type=float, default=0.5, help="how long each chunk is held, each way")
    p.add_argument("--target", type=_target, action="append", required=True, help="host:port; one route each")
    args = p.parse_args(argv)
    _tight_timer_slack()
    relay = Relay(args.target, args.delay_ms / 1000.0)
    ports = [r.port for r in relay.routes]
    print(json.dumps({"ports": ports, "control": relay.control.getsockname()[1]}), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    relay.serve()
    return 0


class RelayProcess:
    """A running relay process: its ports, in the order of the targets, and its counters."""

    def __init__(self, proc: subprocess.Popen[bytes], ports: list[int], control: int) -> None:
        self.proc = proc
        self.ports = ports
        self.control = control

    def stats(self) -> list[dict[str, t.Any]]:
        """The counters of every route, in the order of the targets."""
        with socket.create_connection(("127.0.0.1", self.control), timeout=5) as conn, conn.makefile("rwb") as f:
            f.write(b"stats\n")
            f.flush()
            return t.cast(list[dict[str, t.Any]], json.loads(f.readline()))


@contextlib.contextmanager
def spawn(targets: t.Sequence[tuple[str, int]], delay_ms: float) -> t.Iterator[RelayProcess]:
    """Start a relay process with one route per target; terminate it afterwards, always."""
    cmd = [sys.executable, __file__, "--delay-ms", str(delay_ms)]
    for host, port in targets:
        cmd += ["--target", f"{host}:{port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the relay exited at start with status {proc.wait()}")
        info = json.loads(line)
        yield RelayProcess(proc, [int(p) for p in info["ports"]], int(info["control"]))
    finally:
        services.stop(proc)


if __name__ == "__main__":
    sys.exit(main())
