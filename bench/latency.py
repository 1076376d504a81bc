"""Per-request overhead, in process, through raw WSGI calls.

A repetition times a batch of ``app.wsgi_app(environ, start_response)``
calls and divides by the batch size; a measurement is the median of many
repetitions. The floor app (no session at all) is timed in the same loop,
alternating batch by batch with the app under test, so both see the same
machine load; the overhead is the difference of the two medians. Batches
are sized from a warm-up so each takes about the same wall time whatever
the backend costs, which keeps slow backends from eating the run.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time
import typing as t
from http.cookies import SimpleCookie

import apps
import counters
from werkzeug.test import EnvironBuilder

if t.TYPE_CHECKING:
    from flask import Flask
    from services import Services

Environ = dict[str, t.Any]


@dataclasses.dataclass(frozen=True)
class Plan:
    """How hard to measure: quick for a smoke run, full for the numbers we report."""

    reps: int
    #: Wall time of one batch, in seconds.
    batch_seconds: float
    #: Requests per counting pass (fewer for backends slower than 5 ms).
    count_requests: int


QUICK = Plan(reps=11, batch_seconds=0.012, count_requests=20)
FULL = Plan(reps=41, batch_seconds=0.04, count_requests=100)


class Timed:
    """Something timed in batches: a subclass says what one call does."""

    def __call__(self) -> object:
        raise NotImplementedError

    def batch(self, n: int) -> float:
        """Microseconds per call over ``n`` calls (wall clock)."""
        return self.timed_batch(n)[0]

    def timed_batch(self, n: int) -> tuple[float, float]:
        """Wall-clock and CPU microseconds per call over ``n`` calls."""
        call = self.__call__
        cpu = time.process_time_ns()
        start = time.perf_counter_ns()
        for _ in range(n):
            call()
        wall = time.perf_counter_ns() - start
        cpu = time.process_time_ns() - cpu
        return wall / n / 1000.0, cpu / n / 1000.0


class Call(Timed):
    """One prepared request to an app: environ made once, copied per call."""

    def __init__(self, app: Flask, path: str, cookie: str | None = None) -> None:
        headers = {"Cookie": cookie} if cookie else {}
        builder = EnvironBuilder(path=path, headers=headers)
        try:
            self.environ: Environ = builder.get_environ()
        finally:
            builder.close()
        self.wsgi = app.wsgi_app
        self.headers: list[tuple[str, str]] = []
        self.status = ""

    def _start_response(self, status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
        self.status = status
        self.headers = headers
        return None

    def __call__(self) -> bytes:
        result = self.wsgi(dict(self.environ), self._start_response)
        try:
            return b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()


def new_session_cookie(app: Flask) -> str:
    """Create a session with the benchmark payload; return the ``Cookie`` header that names it."""
    call = Call(app, "/new")
    call()
    if not call.status.startswith("200"):
        raise RuntimeError(f"/new answered {call.status}")
    jar: SimpleCookie = SimpleCookie()
    for name, value in call.headers:
        if name.lower() == "set-cookie":
            jar.load(value)
    cookie_name = app.config["SESSION_COOKIE_NAME"]
    if cookie_name not in jar:
        raise RuntimeError("creating a session sent no session cookie")
    return f"{cookie_name}={jar[cookie_name].value}"


def prepare(app: Flask, scenario: str) -> Call:
    """The request for ``scenario``: existing sessions are created fresh, so no refresh is due."""
    if scenario == "new":
        return Call(app, "/new")
    return Call(app, f"/{scenario}", new_session_cookie(app))


def _batch_size(call: Timed, seconds: float) -> int:
    # Warm up (connections, caches, lazily built tables), then size from a short probe.
    for _ in range(3):
        call()
    probe = max(call.batch(3), 1.0)
    for _ in range(2):
        probe = min(probe, max(call.batch(3), 1.0))
    return max(1, min(5000, int(seconds * 1e6 / probe)))


@dataclasses.dataclass
class Timing:
    #: Median microseconds per request of the app, and of the floor in the same loop.
    median_us: float
    floor_us: float
    #: Interquartile range of the app's repetitions, to judge the noise.
    p25_us: float
    p75_us: float
    #: Fastest batch in CPU time of this process, app and floor. Contention from
    #: other processes hardly moves it, but it leaves out time spent waiting on a
    #: server, so it only speaks for in-process work (memory, SQLite, files).
    cpu_min_us: float
    floor_cpu_min_us: float
    reps: int
    batch: int

    @property
    def overhead_us(self) -> float:
        return self.median_us - self.floor_us

    @property
    def cpu_overhead_us(self) -> float:
        return self.cpu_min_us - self.floor_cpu_min_us


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def time_pair(call: Timed, floor: Timed, plan: Plan) -> Timing:
    """Median per-request time of ``call`` and of ``floor``, batches interleaved."""
    return time_group([call], floor, plan)[0]


def time_group(calls: t.Sequence[Timed], floor: Timed, plan: Plan) -> list[Timing]:
    """Median per-request time of each of ``calls``, taking turns batch by batch with ``floor``.

    Apps compared with each other are timed in one loop, so a ratio of two
    overheads is taken over the same minutes: this VM's speed drifts by a
    factor of two within a run, and a ratio of apps timed minutes apart
    measured that drift as much as the apps.
    """
    sizes = [_batch_size(call, plan.batch_seconds) for call in calls]
    nf = _batch_size(floor, plan.batch_seconds)
    base: list[tuple[float, float]] = []
    subjects: list[list[tuple[float, float]]] = [[] for _ in calls]
    for _ in range(plan.reps):
        gc.collect()
        base.append(floor.timed_batch(nf))
        for call, n, out in zip(calls, sizes, subjects, strict=True):
            gc.collect()
            out.append(call.timed_batch(n))
    floor_us = statistics.median(w for w, _ in base)
    floor_cpu = min(c for _, c in base)
    timings = []
    for n, subject in zip(sizes, subjects, strict=True):
        wall = [w for w, _ in subject]
        p25, p75 = _quartiles(wall)
        timings.append(
            Timing(
                median_us=statistics.median(wall),
                floor_us=floor_us,
                p25_us=p25,
                p75_us=p75,
                cpu_min_us=min(c for _, c in subject),
                floor_cpu_min_us=floor_cpu,
                reps=plan.reps,
                batch=n,
            )
        )
    return timings


def count_io(
    backend: apps.Backend,
    app: Flask,
    services: Services,
    scenario: str,
    plan: Plan,
    relay: counters.Relay | None = None,
) -> dict[str, float]:
    """Store work per request for ``scenario``, from the server's (or client's) own counters."""
    call = prepare(app, scenario)
    start = time.perf_counter()
    for _ in range(3):
        call()
    slow = (time.perf_counter() - start) / 3 > 0.005
    n = max(5, plan.count_requests // 10) if slow else plan.count_requests
    with counters.probing(backend, app, services, relay) as probe:
        call()  # the probe may have dropped pooled connections: reopen them outside the count
        before = probe.read()
        for _ in range(n):
            call()
        after = probe.read()
        result = counters.delta(before, after, n)
    result["requests_counted"] = float(n)
    return result


def run_backend(
    backend: apps.Backend,
    services: Services,
    floor_app: Flask,
    plan: Plan,
    log: t.Callable[[str], None],
    references: t.Sequence[str] = (),
) -> dict[str, t.Any]:
    """Time every scenario of one backend against the floor, and against ``references`` in the same loop.

    Each scenario's result carries, under ``references``, the overhead of
    each reference app (Flask's cookie session, Flask-Session on the same
    storage) timed in the same loop; the report's ratios use those.
    """
    app = apps.build(backend.name, services)
    others: list[tuple[str, Flask]] = []
    floor = Call(floor_app, "/untouched")
    out: dict[str, t.Any] = {}
    try:
        for name in references:
            others.append((name, apps.build(name, services)))
        for scenario in apps.SCENARIOS:
            calls = [prepare(app, scenario)] + [prepare(other, scenario) for _, other in others]
            timing, *compared = time_group(calls, floor, plan)
            out[scenario] = dataclasses.asdict(timing) | {
                "overhead_us": timing.overhead_us,
                "cpu_overhead_us": timing.cpu_overhead_us,
                "references": {name: ref.overhead_us for (name, _), ref in zip(others, compared, strict=True)},
            }
            same_loop = "".join(f"  {name} {ref:.1f}" for name, ref in out[scenario]["references"].items())
            log(
                f"  {backend.name:20} {scenario:9} {timing.median_us:9.1f} µs/req"
                f"  floor {timing.floor_us:6.1f}  overhead {timing.overhead_us:9.1f}"
                f"  cpu {timing.cpu_overhead_us:8.1f}"
                f"  (IQR {timing.p25_us:.1f}-{timing.p75_us:.1f}, {timing.reps}x{timing.batch})"
                + (f"  same loop:{same_loop}" if same_loop else "")
            )
    finally:
        apps.close(app)
        for _, other in others:
            apps.close(other)
    return out


def count_backend(backend: apps.Backend, services: Services, plan: Plan) -> dict[str, dict[str, float]]:
    """The counting passes of one backend, on a fresh app (talking to PostgreSQL through a counting relay)."""
    relay = None
    if backend.storage == "postgresql" and services.pg_url:
        relay = counters.Relay("127.0.0.1", 5432)
        services = dataclasses.replace(services, pg_url=services.pg_url.replace(":5432/", f":{relay.port}/"))
    app = apps.build(backend.name, services)
    try:
        return {scenario: count_io(backend, app, services, scenario, plan, relay) for scenario in apps.SCENARIOS}
    finally:
        apps.close(app)
        if relay is not None:
            relay.close()
