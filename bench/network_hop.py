"""Flask-Satchel and Flask-Session 0.8 with a network hop between the app and each network store.

On bare loopback a round trip to Redis costs tens of microseconds, so the
number of round trips a request makes, where the two designs differ most,
hardly shows. Here every app reaches Redis, PostgreSQL and memcached
through ``relay.py``, which holds each chunk 0.5 ms each way, as between
two hosts in one data centre.

    .venv/bin/python bench/network_hop.py                  # about 2-4 minutes
    .venv/bin/python bench/network_hop.py --requests 200   # a smoke run

Measured, in one run, for each store:

- what one bare round trip costs through the relay, against the same
  client's round trip without it (the calibration);
- per-request overhead above a no-session app of Flask-Satchel and of
  Flask-Session, *untouched* (control), *read-only* and *one-key change*
  (the views of ``apps.py``), timed request by request, the three apps
  taking turns; medians;
- the round trips each request made, counted by the relay (times the
  client spoke after the server had answered), and the server's own count
  where it keeps one: Redis ``total_reads_processed`` and
  ``commandstats``, memcached ``stats`` commands.

Results go to bench/results/network_hop.md and network_hop.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import os
import signal
import statistics
import sys
import time
import traceback
import typing as t
import urllib.parse

import apps
import counters
import latency
import relay
import services as services_mod

if t.TYPE_CHECKING:
    from flask import Flask
    from services import Services

HERE = os.path.dirname(os.path.abspath(__file__))
STORES = ("redis", "postgresql", "memcached")
SCENARIOS = ("untouched", "read", "write")
#: Requests per session: each slice of a scenario starts from fresh sessions, so
#: however long a run takes, no read-only request is due a refresh.
SLICE = 200
#: The design's expectations: (scenario, Flask-Satchel round trips, Flask-Session's).
EXPECTED = {"read": ("about 1", "about 2"), "write": ("2", "2-3")}
READ_RATIO_TARGET = 0.55
#: Flask-Session on memcached once more, with a pymemcache client that turns
#: Nagle's algorithm off: its ``set`` expects no answer (pymemcache's
#: ``noreply``), so the next request's ``get`` waits behind it for the
#: relay's delayed ACK. The default client is what Flask-Session's users
#: get; this row shows what is left without the stall.
NODELAY = "fsession-memcached-nodelay"
#: The apps of each store: Flask-Satchel first, then what it is compared with.
APPS = {
    "redis": ["satchel-redis", "fsession-redis"],
    "postgresql": ["satchel-postgresql", "fsession-postgresql"],
    "memcached": ["satchel-memcached", "fsession-memcached", NODELAY],
}
#: The rows of the report: (store, the Flask-Session app, how the row is labelled).
ROWS = [
    ("redis", "fsession-redis", "redis"),
    ("postgresql", "fsession-postgresql", "postgresql"),
    ("memcached", "fsession-memcached", "memcached"),
    ("memcached", NODELAY, "memcached, Flask-Session's client with `no_delay=True`"),
]
_PG_DIRECT = "postgresql://postgres@127.0.0.1:5432/test"


def _log(message: str) -> None:
    print(message, flush=True)


def _target(services: Services, store: str) -> tuple[str, int]:
    if store == "redis":
        parts = urllib.parse.urlsplit(t.cast(str, services.redis_url))
        return "127.0.0.1", int(parts.port or 6379)
    if store == "memcached":
        return "127.0.0.1", t.cast(int, services.memcached_port)
    return "127.0.0.1", 5432


def _through(services: Services, store: str, port: int) -> Services:
    """``services`` with ``store`` reached through the relay's ``port``."""
    if store == "redis":
        parts = urllib.parse.urlsplit(t.cast(str, services.redis_url))
        url = parts._replace(netloc=f"127.0.0.1:{port}").geturl()
        return dataclasses.replace(services, redis_url=url)
    if store == "memcached":
        return dataclasses.replace(services, memcached_port=port)
    url = t.cast(str, services.pg_url).replace(":5432/", f":{port}/")
    return dataclasses.replace(services, pg_url=url)


def _build(name: str, services: Services) -> Flask:
    """The app ``name`` of ``apps.py``, or Flask-Session on memcached with Nagle's algorithm off."""
    if name != NODELAY:
        return apps.build(name, services)
    from flask_session import Session as FSession  # type: ignore[import-untyped]
    from pymemcache.client.base import Client

    app = apps._flask(name, services)
    app.config["SESSION_KEY_PREFIX"] = apps.key_prefix(services)
    app.config["SESSION_TYPE"] = "memcached"
    app.config["SESSION_MEMCACHED"] = Client(("127.0.0.1", t.cast(int, services.memcached_port)), no_delay=True)
    FSession(app)
    return app


@contextlib.contextmanager
def _bare_round_trips(store: str, port: int, table: str) -> t.Iterator[dict[str, t.Callable[[], object]]]:
    """Bare calls of the raw client to the store at ``port``, each one round trip, by name; closed afterwards.

    For PostgreSQL also a committed one-row UPDATE, in ``table``: a commit
    waits for the server's WAL flush, which every request that writes pays
    on top of its round trips.
    """
    if store == "redis":
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            yield {"redis-py PING": client.ping}
        finally:
            client.close()
    elif store == "memcached":
        from pymemcache.client.base import Client

        mc = Client(("127.0.0.1", port), no_delay=True)
        try:
            yield {"pymemcache get (a miss)": lambda: mc.get("bench-network-hop-absent")}
        finally:
            mc.close()
    else:
        import psycopg

        with psycopg.connect(_PG_DIRECT.replace(":5432/", f":{port}/"), autocommit=True) as pg:
            yield {
                "psycopg SELECT 1": lambda: pg.execute("SELECT 1").fetchone(),
                "psycopg UPDATE of one row, committed": lambda: pg.execute(f"UPDATE {table} SET v = v + 1 WHERE k = 1"),
            }


def _turns(calls: t.Sequence[t.Callable[[], object]], n: int) -> list[list[float]]:
    """Microseconds of each of ``n`` calls of each callable, taking turns call by call.

    The order rotates every turn so that no callable always runs right
    after the same other one; the collector runs between turns, never
    inside a timed call.
    """
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(3):
        for call in calls:
            call()
    gc.collect()
    gc.disable()
    try:
        for i in range(n):
            for k in range(len(calls)):
                j = (i + k) % len(calls)
                start = time.perf_counter_ns()
                calls[j]()
                times[j].append((time.perf_counter_ns() - start) / 1000.0)
            if i % 50 == 49:
                gc.collect()
    finally:
        gc.enable()
    return times


def calibrate(services: Services, store: str, port: int, n: int) -> dict[str, dict[str, float]]:
    """Bare round trips with and without the relay, medians of ``n`` each, taking turns; by client call."""
    table = f"bench_hop_{services.tag}"
    if store == "postgresql":
        import psycopg

        with psycopg.connect(_PG_DIRECT, autocommit=True) as pg:
            pg.execute(f"CREATE TABLE {table} (k int PRIMARY KEY, v bigint)")
            pg.execute(f"INSERT INTO {table} VALUES (1, 0)")
    out = {}
    try:
        with (
            _bare_round_trips(store, _target(services, store)[1], table) as direct,
            _bare_round_trips(store, port, table) as relayed,
        ):
            for name in direct:
                d, r = _turns([direct[name], relayed[name]], n)
                out[name] = {
                    "direct_us": statistics.median(d),
                    "relayed_us": statistics.median(r),
                    "hop_us": statistics.median(r) - statistics.median(d),
                    "relayed_p90_us": statistics.quantiles(r, n=10)[8],
                }
    finally:
        if store == "postgresql":
            import psycopg

            with psycopg.connect(_PG_DIRECT, autocommit=True) as pg:
                pg.execute(f"DROP TABLE IF EXISTS {table}")
    return out


@dataclasses.dataclass
class _Checked(latency.Timed):
    """A prepared request whose every answer must be a 200."""

    call: latency.Call
    failures: int = 0

    def __call__(self) -> object:
        body = self.call()
        if not self.call.status.startswith("200"):
            self.failures += 1
        return body


def _summary(values: list[float], floor: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=20)
    return {
        "median_us": statistics.median(values),
        "overhead_us": statistics.median(values) - statistics.median(floor),
        "p25_us": q[4],
        "p75_us": q[14],
        "p95_us": q[18],
    }


def time_store(
    store: str, built: dict[str, Flask], floor_app: Flask, n: int, log: t.Callable[[str], None]
) -> dict[str, t.Any]:
    """Overhead of every scenario for both apps of ``store``, the floor timed in the same turns."""
    out: dict[str, t.Any] = {}
    names = list(built)
    for scenario in SCENARIOS:
        times: list[list[float]] = [[] for _ in range(len(names) + 1)]
        failures = dict.fromkeys(names, 0)
        for offset in range(0, n, SLICE):
            floor = _Checked(latency.Call(floor_app, "/untouched"))
            calls = [_Checked(latency.prepare(built[name], scenario)) for name in names]
            for acc, got in zip(times, _turns([floor, *calls], min(SLICE, n - offset)), strict=True):
                acc.extend(got)
            for name, call in zip(names, calls, strict=True):
                failures[name] += call.failures
        floor_times, *app_times = times
        cell: dict[str, t.Any] = {"floor": _summary(floor_times, floor_times), "requests": n}
        for name, values in zip(names, app_times, strict=True):
            cell[name] = _summary(values, floor_times) | {"non_200": failures[name]}
        out[scenario] = cell
        log(
            f"  {store:10} {scenario:9} floor {cell['floor']['median_us']:7.0f} µs  "
            + "  ".join(
                f"{name} +{cell[name]['overhead_us']:7.0f} µs (non-200 {cell[name]['non_200']})" for name in names
            )
        )
    return out


def _server_probe(store: str, services: Services) -> counters.Probe | None:
    if store == "redis":
        return counters.RedisProbe(t.cast(str, services.redis_url))
    if store == "memcached":
        return counters.MemcachedProbe(t.cast(int, services.memcached_port))
    return None  # PostgreSQL keeps no per-connection count of requests: the relay's is the count


def count_store(
    store: str,
    built: dict[str, Flask],
    routes: dict[str, int],
    hop: relay.RelayProcess,
    services: Services,
    n: int,
    log: t.Callable[[str], None],
) -> dict[str, t.Any]:
    """Round trips per request of each app and scenario: the relay's count and the server's own."""
    out: dict[str, t.Any] = {}
    for name, app in built.items():
        index = hop.ports.index(routes[name])
        for scenario in SCENARIOS:
            call = latency.prepare(app, scenario)
            for _ in range(3):
                call()
            probe = _server_probe(store, services)
            try:
                before_relay = hop.stats()[index]
                before = probe.read() if probe else {}
                for _ in range(n):
                    call()
                after = probe.read() if probe else {}
                after_relay = hop.stats()[index]
            finally:
                if probe is not None:
                    probe.close()
            wire = {k: (after_relay[k] - before_relay[k]) / n for k in relay.COUNTERS}
            server = counters.delta(before, after, n)
            cell = {"relay": wire, "server": server, "requests_counted": n}
            out.setdefault(scenario, {})[name] = cell
            check = f"  server {server['round_trips']:.2f}" if server else ""
            log(f"  {name:20} {scenario:9} round trips {wire['round_trips']:.2f}{check}")
    return out


def _fmt_rt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}".rstrip("0").rstrip(".")


def _trips(wire: dict[str, float]) -> str:
    """Round trips, and the client's messages when some went unanswered (memcached's ``noreply``)."""
    trips, sent = wire["round_trips"], wire["c2s_chunks"]
    return _fmt_rt(trips) if sent - trips < 0.05 else f"{_fmt_rt(trips)} ({_fmt_rt(sent)} sent)"


def _commands(server: dict[str, float]) -> str:
    """The server's commands per request, for the Redis and memcached rows."""
    parts = []
    for key, value in sorted(server.items()):
        if key.startswith("cmd:") and value >= 0.005:
            parts.append(f"{key[4:]} {_fmt_rt(value)}")
    return ", ".join(parts)


def report(results: dict[str, t.Any]) -> str:
    meta = results["meta"]
    lines = [
        "# Across a network hop",
        "",
        f"Run {meta['started']} on {meta['host']} ({meta['cpus']} CPUs, load {meta['loadavg']}), Python"
        f" {meta['python']}, Flask-Satchel {meta['versions']['flask-satchel']}, Flask-Session"
        f" {meta['versions']['flask-session']}; `{meta['command']}`; {meta['seconds']} s.",
        "",
        f"Every store is reached through `bench/relay.py`, which holds each chunk {meta['delay_ms']} ms each"
        f" way. {meta['requests']} timed requests per app and scenario, the no-session app and both session"
        " apps taking turns request by request; overhead = median request minus the no-session app's median.",
        "",
        "## One bare round trip, with and without the relay",
        "",
        "| store | client call | direct µs | through the relay µs | the hop costs µs | relay p90 µs |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for store in STORES:
        c = results["calibration"].get(store)
        if not isinstance(c, dict):
            lines.append(f"| {store} | {c} | | | | |")
            continue
        for call, m in c.items():
            lines.append(
                f"| {store} | {call} | {m['direct_us']:.0f} | {m['relayed_us']:.0f} | {m['hop_us']:.0f}"
                f" | {m['relayed_p90_us']:.0f} |"
            )
    lines += [
        "",
        "## Overhead per request and round trips",
        "",
        "Round trips: counted by the relay, the times the client spoke after the server had answered;"
        ' "(2 sent)": the client also sent something it did not wait an answer for (the relay\'s chunks'
        " from the client)."
        " Server: Redis `total_reads_processed` (socket reads, about one per round trip) and the commands"
        " in `commandstats`; memcached's commands from `stats` (one per key of a multi-get); PostgreSQL keeps"
        " no such count, the relay's is the count.",
        "",
        "| store | request | Flask-Satchel µs | Flask-Session µs | Satchel / Session |"
        " round trips Satchel | round trips Session | server: Satchel | server: Session |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for store, fs, label in ROWS:
        timing = results["timing"].get(store)
        if not isinstance(timing, dict):
            if fs == f"fsession-{store}":
                lines.append(f"| {label} | {timing} | | | | | | | |")
            continue
        counts = results["counts"].get(store, {})
        sat = f"satchel-{store}"
        for scenario in SCENARIOS:
            cell = timing[scenario]
            a, b = cell[sat]["overhead_us"], cell[fs]["overhead_us"]
            ratio = f"{a / b:.2f}x" if b > 0 else "-"
            row = [label, scenario, f"{a:.0f}", f"{b:.0f}", ratio]
            for name in (sat, fs):
                c = counts.get(scenario, {}).get(name) if isinstance(counts, dict) else None
                row.append(_trips(c["relay"]) if c else "-")
            for name in (sat, fs):
                c = counts.get(scenario, {}).get(name) if isinstance(counts, dict) else None
                server = c["server"] if c else {}
                if server:
                    row.append(f"{_fmt_rt(server['round_trips'])} ({_commands(server)})")
                else:
                    row.append("-")
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Against the design's expectations", ""]
    for check in results["checks"]:
        lines.append(f"- {check}")
    lines.append("")
    return "\n".join(lines)


def checks(results: dict[str, t.Any]) -> list[str]:
    """The design's expectations, each with what this run measured."""
    out = []
    for store, fs, label in ROWS:
        timing, counts = results["timing"].get(store), results["counts"].get(store)
        if not isinstance(timing, dict) or not isinstance(counts, dict):
            if fs == f"fsession-{store}":
                out.append(f"{store}: not measured ({timing if not isinstance(timing, dict) else counts})")
            continue
        sat = f"satchel-{store}"
        a, b = timing["read"][sat]["overhead_us"], timing["read"][fs]["overhead_us"]
        ratio = a / b if b > 0 else float("inf")
        verdict = "met" if ratio <= READ_RATIO_TARGET else "NOT met"
        rts = {s: (counts[s][sat]["relay"]["round_trips"], counts[s][fs]["relay"]["round_trips"]) for s in EXPECTED}
        out.append(
            f"{label}, read-only: {ratio:.2f}x Flask-Session's overhead (target <= {READ_RATIO_TARGET}x: {verdict});"
            f" round trips {_fmt_rt(rts['read'][0])} against {_fmt_rt(rts['read'][1])}"
            f" (expected {EXPECTED['read'][0]} against {EXPECTED['read'][1]})"
        )
        w_ratio = timing["write"][sat]["overhead_us"] / timing["write"][fs]["overhead_us"]
        out.append(
            f"{label}, one-key change: {w_ratio:.2f}x Flask-Session's overhead; round trips"
            f" {_fmt_rt(rts['write'][0])} against {_fmt_rt(rts['write'][1])}"
            f" (expected {EXPECTED['write'][0]} against {EXPECTED['write'][1]})"
        )
    return out


def _stop(signum: int, frame: t.Any) -> None:
    raise KeyboardInterrupt  # so the servers, the relay and the tables are cleaned up


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=400, help="timed requests per app and scenario (default 400)")
    p.add_argument("--count-requests", type=int, default=100, help="requests per counting pass (default 100)")
    p.add_argument("--calibration", type=int, default=500, help="bare round trips per calibration (default 500)")
    p.add_argument("--delay-ms", type=float, default=0.5, help="how long the relay holds each chunk, each way")
    p.add_argument("--stores", default=",".join(STORES), help="comma-separated: redis,postgresql,memcached")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="where network_hop.md/.json go")
    args = p.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if unknown := set(stores) - set(STORES):
        raise SystemExit(f"unknown stores {sorted(unknown)}; known: {', '.join(STORES)}")
    signal.signal(signal.SIGTERM, _stop)
    start = time.monotonic()
    results: dict[str, t.Any] = {
        "meta": {
            **services_mod.run_meta("network_hop.py", ("flask", "flask-satchel", "flask-session", "redis", "psycopg")),
            "delay_ms": args.delay_ms,
            "requests": args.requests,
            "count_requests": args.count_requests,
        },
        "calibration": {},
        "timing": {},
        "counts": {},
    }
    with services_mod.running() as services:
        available = [s for s in stores if apps.unavailable(apps.BY_NAME[f"satchel-{s}"], services) is None]
        for store in stores:
            if store not in available:
                reason = apps.unavailable(apps.BY_NAME[f"satchel-{store}"], services)
                results["calibration"][store] = results["timing"][store] = results["counts"][store] = reason
                _log(f"{store}: {reason}")
        # A route per store for the calibration, and one per app, so that
        # each app's relay counters are its own.
        names = [(s, None) for s in available] + [(s, name) for s in available for name in APPS[s]]
        targets = [_target(services, s) for s, _ in names]
        with relay.spawn(targets, args.delay_ms) as hop:
            port_of = dict(zip(names, hop.ports, strict=True))
            floor_app = apps.build("floor", services)
            try:
                for store in available:
                    calib_port = port_of[(store, None)]
                    routes = {name: port_of[(store, name)] for name in APPS[store]}
                    built: dict[str, Flask] = {}
                    try:
                        _log(f"{store}: calibration")
                        cal = calibrate(services, store, calib_port, args.calibration)
                        results["calibration"][store] = cal
                        for call, m in cal.items():
                            _log(
                                f"  {call}: {m['direct_us']:.0f} µs direct, {m['relayed_us']:.0f} µs"
                                f" through the relay: the hop costs {m['hop_us']:.0f} µs"
                            )
                        for name, port in routes.items():
                            built[name] = _build(name, _through(services, store, port))
                        _log(f"{store}: overhead per request")
                        results["timing"][store] = time_store(store, built, floor_app, args.requests, _log)
                        _log(f"{store}: round trips per request")
                        results["counts"][store] = count_store(
                            store, built, routes, hop, services, args.count_requests, _log
                        )
                    except Exception as e:
                        traceback.print_exc()
                        results["calibration"].setdefault(store, f"error: {type(e).__name__}: {e}")
                        results["timing"].setdefault(store, f"error: {type(e).__name__}: {e}")
                        results["counts"].setdefault(store, f"error: {type(e).__name__}: {e}")
                        _log(f"{store}: FAILED: {type(e).__name__}: {e}")
                    finally:
                        for app in built.values():
                            apps.close(app)
            finally:
                apps.close(floor_app)
    results["meta"]["seconds"] = round(time.monotonic() - start, 1)
    results["checks"] = checks(results)
    md = report(results)
    services_mod.save(args.out, "network_hop", results, md)
    _log("")
    _log(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
