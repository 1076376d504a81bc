"""Flask-Satchel against Flask's cookie session and Flask-Session 0.8, in one run.

    .venv/bin/python bench/run.py --quick          # latency + store counts, < 2 minutes
    .venv/bin/python bench/run.py                  # full: also throughput, scale, profile
    .venv/bin/python bench/run.py --throughput --backends satchel-sqlite,fsession-sqlite

See bench/README.md for what is measured and how. Results go to
bench/results/latest.md and latest.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import signal
import sys
import time
import traceback
import typing as t

import apps
import floors
import latency
import report
import services as services_mod

HERE = os.path.dirname(os.path.abspath(__file__))


def _log(message: str) -> None:
    print(message, flush=True)


def _meta(mode: str) -> dict[str, t.Any]:
    import msgspec

    return {
        "mode": mode,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "argv": sys.argv[1:],
        "versions": {
            d: services_mod.version(d)
            for d in ("flask", "flask-satchel", "flask-session", "redis", "sqlalchemy", "psycopg", "pymemcache")
        },
        "session_bytes": len(msgspec.json.encode(apps.DATA)),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="latency and store counts only, few repetitions")
    p.add_argument("--latency", action="store_true", help="run the in-process latency suite")
    p.add_argument("--throughput", action="store_true", help="run the gunicorn + wrk suite")
    p.add_argument("--scale", action="store_true", help="run the many-sessions suite")
    p.add_argument("--profile", action="store_true", help="profile the hot path with pyinstrument")
    p.add_argument("--scale-size", type=int, default=1_000_000, help="sessions for --scale (default 1,000,000)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per throughput scenario (default 5)")
    p.add_argument("--backends", default="", help="comma-separated backend names (default: all)")
    p.add_argument("--redis-url", default=None, help="use this Redis instead of a private redis-server")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="where latest.md/latest.json go")
    args = p.parse_args(argv)
    if not (args.latency or args.throughput or args.scale or args.profile):
        args.latency = True
        if not args.quick:
            args.throughput = args.scale = args.profile = True
    return args


def _selected(args: argparse.Namespace) -> list[apps.Backend]:
    if not args.backends:
        return list(apps.BACKENDS)
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = [n for n in names if n not in apps.BY_NAME]
    if unknown:
        raise SystemExit(f"unknown backend(s) {unknown}; known: {', '.join(apps.BY_NAME)}")
    return [b for b in apps.BACKENDS if b.name in names or b.family in ("floor", "cookie")]


def _references(backend: apps.Backend, backends: list[apps.Backend], services: services_mod.Services) -> list[str]:
    """The apps a Flask-Satchel backend is compared with, timed in its loop: the cookie session and its pair."""
    if backend.family != "satchel":
        return []
    selected = {b.name for b in backends}
    names = ["cookie", apps.PAIRS.get(backend.name)]
    return [n for n in names if n in selected and apps.unavailable(apps.BY_NAME[n], services) is None]


def run_latency(
    args: argparse.Namespace, services: services_mod.Services, backends: list[apps.Backend], results: dict[str, t.Any]
) -> None:
    plan = latency.QUICK if args.quick else latency.FULL
    _log("Bare client round trips (physical floor):")
    results["floors"], results["placement"] = floors.measure(
        services, reps=plan.reps, batch=200 if args.quick else 1000, log=_log
    )
    lat: dict[str, t.Any] = results.setdefault("latency", {})
    io: dict[str, t.Any] = results.setdefault("io", {})
    floor_app = apps.build("floor", services)
    try:
        _log("The same in-process reads made inside a no-session request:")
        results["floors_in_request"] = floors.in_request(services, floor_app, plan, _log)
        _log("Per-request time, median of batches, floor timed in the same loop:")
        runnable = []
        for backend in backends:
            if backend.family == "floor":
                floor_call = latency.Call(floor_app, "/untouched")
                timing = latency.time_pair(floor_call, floor_call, plan)
                lat["floor"] = {"untouched": {"median_us": timing.median_us, "cpu_min_us": timing.cpu_min_us}}
                _log(f"  floor                {timing.median_us:9.1f} µs/req (cpu {timing.cpu_min_us:.1f})")
                continue
            reason = apps.unavailable(backend, services)
            if reason is not None:
                lat[backend.name] = io[backend.name] = reason
                _log(f"  {backend.name:20} {reason}")
                continue
            try:
                lat[backend.name] = latency.run_backend(
                    backend, services, floor_app, plan, _log, _references(backend, backends, services)
                )
                runnable.append(backend)
            except Exception as e:
                lat[backend.name] = io[backend.name] = f"error: {type(e).__name__}: {e}"
                _log(f"  {backend.name:20} FAILED: {e}")
                traceback.print_exc()
    finally:
        apps.close(floor_app)
    _log("Store work per request (counting passes, after all timings):")
    for backend in runnable:
        if backend.family in ("floor", "cookie") or backend.storage in report.NO_STORE_IO:
            continue
        try:
            counts = latency.count_backend(backend, services, plan)
        except Exception as e:
            io[backend.name] = f"error: {type(e).__name__}: {e}"
            _log(f"  {backend.name:20} counting FAILED: {e}")
            traceback.print_exc()
            continue
        io[backend.name] = counts | {"_unit": _unit(backend)}
        summary = "  ".join(
            f"{s}: rt {c.get('round_trips', 0):.2f} w {c.get('writes', 0):.2f}" for s, c in counts.items()
        )
        _log(f"  {backend.name:20} {summary}")


def _unit(backend: apps.Backend) -> str:
    return {
        "redis": "server socket reads (INFO total_reads_processed)",
        "memcached": "server commands (stats)",
        "postgresql": "client bursts through a counting TCP relay",
        "filesystem": "file opens (audit events)",
        "sqlite": "SQL statements" + (" (SQLAlchemy events)" if backend.family == "flask-session" else " (trace)"),
    }.get(backend.storage, "")


def _stop(signum: int, frame: t.Any) -> None:
    # SIGTERM ends the run like Ctrl-C, so the private servers and tables are cleaned up.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    args = _parse(argv)
    mode = "quick" if args.quick else ("full" if args.throughput and args.scale and args.profile else "partial")
    results: dict[str, t.Any] = {"meta": _meta(mode)}
    backends = _selected(args)
    start = time.monotonic()
    with services_mod.running(args.redis_url) as services:
        for name, reason in services.missing.items():
            _log(f"note: {name} unavailable: {reason}")
        if args.latency:
            run_latency(args, services, backends, results)
        if args.throughput:
            import throughput

            results["throughput"] = throughput.run(services, backends, args.duration, _log)
        if args.scale:
            import scale

            results["scale"] = scale.run(services, args.scale_size, _log, {b.name for b in backends})
        if args.profile:
            import hotpath

            results["profile"] = hotpath.run(services, _log)
    results["meta"]["seconds"] = round(time.monotonic() - start, 1)
    md_path, json_path = report.write(results, args.out)
    _log("")
    with open(md_path) as f:
        _log(f.read())
    _log(f"Wrote {md_path} and {json_path} in {results['meta']['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
