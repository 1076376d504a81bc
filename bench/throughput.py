"""Requests per second under a real server: gunicorn (2 gthread workers) and wrk.

Each backend gets its own gunicorn, the same four scenarios as the latency
run, and bounded measurements that each follow one second of warm-up. wrk runs on the same
two cores as gunicorn, so absolute numbers are low and move with the load;
what is reported is each scenario's requests/s as a share of the no-session
app's, measured in the same run.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import statistics
import subprocess
import typing as t
from http.cookies import SimpleCookie

import apps
from services import Services
from services import gunicorn as gunicorn_server

WORKERS = 2
THREADS = 4
CONNECTIONS = 8
#: Rounds per backend; the reported numbers are their medians.
ROUNDS = 3

_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_ERRORS = re.compile(r"Socket errors:.*")


@contextlib.contextmanager
def gunicorn(backend: str, services: Services) -> t.Iterator[int]:
    """A gunicorn serving ``backend`` on a free loopback port, stopped afterwards."""
    env = dict(os.environ) | services.to_env() | {"SATCHEL_BENCH_BACKEND": backend}
    log_path = os.path.join(services.workdir, f"gunicorn-{backend}.log")
    options = ["--workers", str(WORKERS), "--worker-class", "gthread", "--threads", str(THREADS)]
    with gunicorn_server("wsgi:app", options, env, log_path, ready="/untouched", timeout=20) as (port, _):
        yield port


def _get(port: int, path: str, cookie: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        response.read()
        return response
    finally:
        conn.close()


def _session_cookie(port: int) -> str:
    response = _get(port, "/new")
    jar: SimpleCookie = SimpleCookie()
    for value in response.headers.get_all("Set-Cookie") or []:
        jar.load(value)
    if "session" not in jar:
        raise RuntimeError(f"/new sent no session cookie (status {response.status})")
    return f"session={jar['session'].value}"


def wrk(port: int, path: str, cookie: str | None, seconds: float) -> dict[str, float]:
    """Run wrk once; requests/s and how many answers were not 2xx/3xx."""
    cmd = ["wrk", "-t", "2", "-c", str(CONNECTIONS), "-d", f"{max(1, round(seconds))}s", "--latency"]
    if cookie:
        cmd += ["-H", f"Cookie: {cookie}"]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    rps = _RPS.search(out)
    if rps is None:
        raise RuntimeError(f"cannot read wrk output: {out[-300:]}")
    bad = _NON_2XX.search(out)
    errors = _ERRORS.search(out)
    return {
        "rps": float(rps.group(1)),
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": errors.group(0) if errors else "",  # type: ignore[dict-item]
    }


def measured(port: int, path: str, cookie: str | None, seconds: float) -> dict[str, float]:
    """``wrk`` after one unmeasured second on the same server and path.

    A gunicorn that sat idle while another one was measured serves its
    first second at half speed or less on this VM (seen: 2,200 to 3,300
    req/s, then 5,000 to 7,000), so every slice, the floor's included,
    starts warm.
    """
    wrk(port, path, cookie, 1)
    return wrk(port, path, cookie, seconds)


def run(
    services: Services, backends: list[apps.Backend], seconds: float, log: t.Callable[[str], None]
) -> dict[str, t.Any]:
    """Requests/s per backend and scenario, with the ratio to the floor app's."""
    if shutil.which("wrk") is None:
        return {"_meta": {"describe": "wrk is not installed (apt-get install -y wrk)"}}
    rounds = ROUNDS
    slice_s = max(1, round(seconds / rounds))
    out: dict[str, t.Any] = {
        "_meta": {
            "describe": f"gunicorn {WORKERS} workers x {THREADS} threads (gthread); wrk 2 threads, {CONNECTIONS}"
            f" connections; per backend, {rounds} rounds of each scenario, each slice paired with a slice of the"
            f" no-session app just before it, both measured for {slice_s} s after 1 s of warm-up; req/s and ratio"
            " to the paired no-session req/s are medians over the rounds.",
            "seconds": seconds,
        }
    }
    log(f"Throughput ({out['_meta']['describe']}):")
    floor = next((b for b in backends if b.family == "floor"), None)
    if floor is None:
        return out
    # The floor app keeps its own gunicorn, idle between its turns, for the
    # whole run, and is measured again right before every slice: the ratio
    # of a slice compares two measurements a few seconds apart. With one
    # floor per round, ten seconds before the last scenario, a slowdown of
    # the shared machine in between moved ratios by half (one run showed
    # Flask's cookie session "untouched" at 2.04x the floor). The median of
    # the rounds then sets aside a round that one slowdown still spoiled.
    floor_runs: list[float] = []
    with gunicorn(floor.name, services) as floor_port:
        for backend in backends:
            if backend.family == "floor":
                continue
            if backend.storage == "memory":
                out[backend.name] = "n/a (a per-process store: each worker has its own sessions)"
                continue
            reason = apps.unavailable(backend, services)
            if reason is not None:
                out[backend.name] = reason
                continue
            runs: dict[str, list[dict[str, t.Any]]] = {scenario: [] for scenario in apps.SCENARIOS}
            try:
                with gunicorn(backend.name, services) as port:
                    cookies = {s: None if s == "new" else _session_cookie(port) for s in apps.SCENARIOS}
                    for _ in range(rounds):
                        for scenario in apps.SCENARIOS:
                            # Each slice has its own floor, measured just before it.
                            floor_rps = measured(floor_port, "/untouched", None, slice_s)["rps"]
                            floor_runs.append(floor_rps)
                            result = measured(port, f"/{scenario}", cookies[scenario], slice_s)
                            result["ratio"] = result["rps"] / floor_rps
                            runs[scenario].append(result)
            except Exception as e:
                out[backend.name] = f"error: {type(e).__name__}: {e}"
                log(f"  {backend.name:20} FAILED: {e}")
                continue
            cell: dict[str, t.Any] = {}
            for scenario, results in runs.items():
                cell[scenario] = {
                    "rps": statistics.median(r["rps"] for r in results),
                    "ratio": statistics.median(r["ratio"] for r in results),
                    "ratios": [round(r["ratio"], 3) for r in results],
                    "non_2xx": sum(r["non_2xx"] for r in results),
                }
                log(
                    f"  {backend.name:20} {scenario:9} {cell[scenario]['rps']:9.0f} req/s"
                    f"  xfloor {cell[scenario]['ratio']:.2f} (rounds {cell[scenario]['ratios']})"
                    f"  non-2xx {cell[scenario]['non_2xx']:.0f}"
                )
            out[backend.name] = cell
    if floor_runs:
        out[floor.name] = {"untouched": {"rps": statistics.median(floor_runs), "ratio": 1.0}}
    return out
