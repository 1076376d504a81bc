"""Requests per second under a real server: gunicorn (2 gthread workers) and wrk.

Each backend gets its own gunicorn, the same four scenarios as the latency
run, a one-second warm-up and a bounded measurement. wrk runs on the same
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
import subprocess
import sys
import time
import typing as t
from http.cookies import SimpleCookie

import apps
from services import Services, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
WORKERS = 2
THREADS = 4
CONNECTIONS = 8

_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_ERRORS = re.compile(r"Socket errors:.*")


@contextlib.contextmanager
def gunicorn(backend: str, services: Services) -> t.Iterator[int]:
    """A gunicorn serving ``backend`` on a free loopback port, stopped afterwards."""
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    env = dict(os.environ) | services.to_env() | {"SATCHEL_BENCH_BACKEND": backend}
    log_path = os.path.join(services.workdir, f"gunicorn-{backend}.log")
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [
                exe,
                "--chdir",
                HERE,
                "--workers",
                str(WORKERS),
                "--worker-class",
                "gthread",
                "--threads",
                str(THREADS),
                "--bind",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "--graceful-timeout",
                "5",
                "wsgi:app",
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                if proc.poll() is not None:
                    with open(log_path) as f:
                        raise RuntimeError(f"gunicorn exited: {f.read()[-500:]}")
                try:
                    _get(port, "/untouched")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("gunicorn did not answer within 20 s") from None
                    time.sleep(0.1)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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


def run(
    services: Services, backends: list[apps.Backend], seconds: float, log: t.Callable[[str], None]
) -> dict[str, t.Any]:
    """Requests/s per backend and scenario, with the ratio to the floor app's."""
    if shutil.which("wrk") is None:
        return {"_meta": {"describe": "wrk is not installed (apt-get install -y wrk)"}}
    out: dict[str, t.Any] = {
        "_meta": {
            "describe": f"gunicorn {WORKERS} workers x {THREADS} threads (gthread); wrk 2 threads, {CONNECTIONS}"
            f" connections, {seconds:g} s per scenario after a 1 s warm-up; ratio = req/s ÷ no-session req/s.",
            "seconds": seconds,
        }
    }
    log(f"Throughput ({out['_meta']['describe']}):")
    floor_rps: float | None = None
    for backend in backends:
        if backend.storage == "memory":
            out[backend.name] = "n/a (a per-process store: each worker has its own sessions)"
            continue
        reason = apps.unavailable(backend, services)
        if reason is not None:
            out[backend.name] = reason
            continue
        cell: dict[str, t.Any] = {}
        try:
            with gunicorn(backend.name, services) as port:
                scenarios = ("untouched",) if backend.family == "floor" else apps.SCENARIOS
                for scenario in scenarios:
                    cookie = None if scenario == "new" or backend.family == "floor" else _session_cookie(port)
                    wrk(port, f"/{scenario}", cookie, 1)
                    result = wrk(port, f"/{scenario}", cookie, seconds)
                    if backend.family == "floor":
                        floor_rps = result["rps"]
                    result["ratio"] = result["rps"] / floor_rps if floor_rps else None
                    cell[scenario] = result
                    log(
                        f"  {backend.name:20} {scenario:9} {result['rps']:9.0f} req/s"
                        f"  xfloor {result['ratio'] or 0:.2f}  non-2xx {result['non_2xx']:.0f}"
                    )
        except Exception as e:
            cell = {"error": f"{type(e).__name__}: {e}"}  # type: ignore[dict-item]
            log(f"  {backend.name:20} FAILED: {e}")
        out[backend.name] = cell.get("error", cell)
    return out
