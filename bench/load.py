"""The default store under load, as a deployment runs it, against Flask's cookie session.

    .venv/bin/python bench/load.py                  # about 3 minutes
    .venv/bin/python bench/load.py --rounds 1 --users 16   # a smoke run

One app, two session implementations: Flask-Satchel with nothing
configured but a secret key (its default store, SQLite, a file in the
app's instance folder, here a temporary one) and Flask's own cookie
session. Each runs under gunicorn with 4 workers, first sync workers, then
gthread workers with 4 threads each; both servers of a worker class run
side by side and take turns, so a slowdown of the shared machine falls on
both.

The load is ``--connections`` client processes, each one connection
playing simulated users one after the other, one request at a time,
keeping the cookie it is given as a browser does: a login (Flask-Satchel
regenerates the session id), ``--items`` distinct cart additions, a read
of the cart after every second one, and a second login half way; two
requests in three write. The number of requests is fixed (``--users``
users of known length), and ``--timeout`` bounds each run in time as well.
(Not wrk: a wrk thread that has finished reconnects and holds its new
connection open unused, which ties up a sync worker until gunicorn's
worker timeout kills it.)

Afterwards, with the load stopped, every user's cart is read back with the
last cookie that user was given: every addition that was answered 2xx must
be there, once, and nothing else; the session id a login replaced must no
longer open the session (Flask-Satchel; a cookie session cannot be
revoked). Answers that were not 2xx/3xx, socket errors, and any traceback
or worker timeout in gunicorn's log are counted too.

Results go to bench/results/load.md and load.json.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import multiprocessing
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import typing as t

import apps
import services

if t.TYPE_CHECKING:
    from flask import Flask

HERE = os.path.dirname(os.path.abspath(__file__))
SESSIONS = ("cookie", "satchel")
LABELS = {"cookie": "Flask cookie session", "satchel": "Flask-Satchel, SQLite (default store)"}
WORKER_CLASSES = {"sync": ["--worker-class", "sync"], "gthread": ["--worker-class", "gthread", "--threads", "4"]}
WORKERS = 4
_ENV_SESSION = "SATCHEL_LOAD_SESSION"
_ENV_INSTANCE = "SATCHEL_LOAD_INSTANCE"
#: The profile a login stores, about 1 KB like the other benchmarks' session.
PROFILE = {k: v for k, v in apps.DATA.items() if k not in ("_user_id", "cart", "counter")}


def create_app() -> Flask:
    """The app gunicorn serves (``load:create_app()``); which session it uses comes from the environment."""
    from flask import Flask, request, session

    app = Flask("bench_load", instance_path=os.environ[_ENV_INSTANCE])
    app.secret_key = apps.SECRET
    if os.environ[_ENV_SESSION] == "satchel":
        from flask_satchel import Session

        Session(app)

    @app.post("/login")
    def login() -> str:
        # A login gets a fresh session id; Flask's cookie session has none to change.
        regenerate = getattr(session, "regenerate", None)
        if regenerate is not None:
            regenerate()
        if "csrf_token" not in session:
            session.update(PROFILE)
        session["_user_id"] = request.args["user"]
        return "ok"

    @app.post("/cart")
    def add() -> str:
        session["cart"] = [*session.get("cart", ()), request.args["item"]]
        return str(len(session["cart"]))

    @app.get("/cart")
    def cart() -> str:
        return f"{session.get('_user_id', '')}|{','.join(session.get('cart', ()))}"

    return app


def plan(user: str, items: int) -> list[tuple[str, str, int]]:
    """One user's requests: (method, path, the cart item it adds or 0)."""
    steps = [("POST", f"/login?user={user}", 0)]
    for i in range(1, items + 1):
        steps.append(("POST", f"/cart?item={user}-i{i}", i))
        if i % 2 == 0:
            steps.append(("GET", "/cart", 0))
        if i == items // 2:
            steps.append(("POST", f"/login?user={user}", 0))
    return steps


def _session_cookie(headers: list[str], current: str | None) -> str | None:
    """The session cookie after a response: a new value, a deletion (None), or unchanged."""
    for header in headers:
        name, _, rest = header.partition("=")
        if name.strip() == "session":
            value = rest.split(";", 1)[0]
            return value or None
    return current


def client(
    port: int, users: list[str], items: int, deadline: float, start: t.Any, results: t.Any
) -> None:  # pragma: no cover (runs in the client processes)
    """One connection: play ``users`` one after the other, one request at a time, keeping the cookie.

    A process of its own, as each browser is: client threads in one
    process would queue for the GIL, and the wait would show up as the
    server's latency.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies: list[float] = []
    codes: dict[int, int] = {}
    socket_errors = 0
    finished = []
    start.wait()
    began = time.monotonic()
    for user in users:
        cookie: str | None = None
        stale = ""
        failed: list[int] = []
        logins = 0
        for method, path, item in plan(user, items):
            if time.monotonic() > deadline:
                break
            if path.startswith("/login"):
                logins += 1
                if logins == 2 and cookie:
                    stale = cookie
            headers = {"Cookie": f"session={cookie}"} if cookie else {}
            if method == "POST":
                headers["Content-Length"] = "0"
            sent = time.perf_counter_ns()
            try:
                conn.request(method, path, headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                socket_errors += 1
                conn.close()
                if item:
                    failed.append(item)
                continue
            latencies.append((time.perf_counter_ns() - sent) / 1000.0)
            codes[response.status] = codes.get(response.status, 0) + 1
            if item and not 200 <= response.status < 400:
                failed.append(item)
            cookie = _session_cookie(response.headers.get_all("Set-Cookie") or [], cookie)
        else:
            finished.append({"user": user, "cookie": cookie or "", "stale": stale, "failed": failed})
            continue
        break  # out of time
    conn.close()
    results.put(
        {
            "began": began,
            "ended": time.monotonic(),
            "latencies_us": latencies,
            "codes": codes,
            "socket_errors": socket_errors,
            "users": finished,
        }
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load(port: int, tag: str, connections: int, per_conn: int, items: int, timeout: float) -> dict[str, t.Any]:
    """One bounded run: ``connections`` client processes, each playing ``per_conn`` users; merged results."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(connections)
    results = ctx.Queue()
    deadline = time.monotonic() + timeout
    procs = []
    for c in range(connections):
        users = [f"{tag}-c{c}-u{u}" for u in range(per_conn)]
        procs.append(ctx.Process(target=client, args=(port, users, items, deadline, start, results), daemon=True))
    for proc in procs:
        proc.start()
    parts = []
    try:
        for _ in procs:
            parts.append(results.get(timeout=timeout + 30))
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
    latencies = [x for p in parts for x in p["latencies_us"]]
    codes: dict[str, int] = {}
    for p in parts:
        for code, n in p["codes"].items():
            codes[str(code)] = codes.get(str(code), 0) + n
    seconds = max(p["ended"] for p in parts) - min(p["began"] for p in parts)
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "rps": len(latencies) / seconds,
        "p50_us": _percentile(latencies, 0.50),
        "p90_us": _percentile(latencies, 0.90),
        "p99_us": _percentile(latencies, 0.99),
        "max_us": max(latencies),
        "codes": codes,
        "socket_errors": sum(p["socket_errors"] for p in parts),
        "users": [u for p in parts for u in p["users"]],
    }


def _log(message: str) -> None:
    print(message, flush=True)


def _get(port: int, path: str, cookie: str | None = None) -> tuple[int, str, list[str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Cookie": f"session={cookie}"} if cookie else {})
        response = conn.getresponse()
        return response.status, response.read().decode(), response.headers.get_all("Set-Cookie") or []
    finally:
        conn.close()


@contextlib.contextmanager
def gunicorn(session: str, worker_class: str, workdir: str) -> t.Iterator[tuple[int, str, int]]:
    """A gunicorn serving the app with ``session`` on a free loopback port: (port, its log file, its pid)."""
    instance = tempfile.mkdtemp(prefix=f"instance-{session}-{worker_class}-", dir=workdir)
    log_path = os.path.join(workdir, f"gunicorn-{session}-{worker_class}.log")
    options = ["--workers", str(WORKERS), *WORKER_CLASSES[worker_class]]
    env = dict(os.environ) | {_ENV_SESSION: session, _ENV_INSTANCE: instance}
    with services.gunicorn("load:create_app()", options, env, log_path, ready="/cart") as (port, proc):
        yield port, log_path, proc.pid


def verify(port: int, session: str, run: dict[str, t.Any], items: int) -> dict[str, t.Any]:
    """Read every finished user's cart back: what was acknowledged must be there, once, and nothing else."""
    lost = duplicated = foreign = wrong_user = no_cookie = stale_open = errors = 0
    examples: list[str] = []
    for u in run["users"]:
        if not u["cookie"]:
            no_cookie += 1
            continue
        status, body, _ = _get(port, "/cart", u["cookie"])
        if status != 200:
            errors += 1
            examples.append(f"{u['user']}: reading the cart answered {status}")
            continue
        user, _, listed = body.partition("|")
        cart = [i for i in listed.split(",") if i]
        acked = {f"{u['user']}-i{i}" for i in range(1, items + 1) if i not in u["failed"]}
        missing = acked - set(cart)
        lost += len(missing)
        duplicated += len(cart) - len(set(cart))
        foreign += len([i for i in cart if not i.startswith(f"{u['user']}-i")])
        if user != u["user"]:
            wrong_user += 1
        if (missing or user != u["user"]) and len(examples) < 5:
            examples.append(f"{u['user']}: user {user!r}, missing {sorted(missing)[:5]}")
        if session == "satchel" and u["stale"]:
            status, body, _ = _get(port, "/cart", u["stale"])
            if status != 200 or body != "|":
                stale_open += 1
                if len(examples) < 5:
                    examples.append(f"{u['user']}: the id its login replaced still opens {body[:60]!r} ({status})")
    return {
        "users_checked": len(run["users"]),
        "lost_items": lost,
        "applied_twice": duplicated,
        "foreign_items": foreign,
        "wrong_user": wrong_user,
        "no_cookie": no_cookie,
        "read_back_errors": errors,
        "replaced_id_still_opens": stale_open if session == "satchel" else None,
        "examples": examples,
    }


def workers_cpu(master: int) -> float:
    """CPU seconds used so far by the worker processes of the gunicorn ``master``.

    Other people's processes share this machine's two CPUs, and requests/s
    move with what they leave over; the CPU time a request costs the
    workers hardly does, so it is reported next to them.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:  # ppid; then utime and stime are fields 14 and 15 of stat(5)
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _log_problems(log_path: str, start: int) -> list[str]:
    """Lines of gunicorn's log written since ``start`` that speak of a failure."""
    with open(log_path, errors="replace") as f:
        f.seek(start)
        text = f.read()
    words = ("Traceback", "ERROR", "CRITICAL", "WORKER TIMEOUT", "Exception", "exited")
    return [line for line in text.splitlines() if any(w in line for w in words)]


def run(args: argparse.Namespace, workdir: str) -> dict[str, t.Any]:
    per_conn = max(1, args.users // args.connections)
    out: dict[str, t.Any] = {}
    for worker_class in args.worker_classes:
        _log(f"{worker_class}: {WORKERS} workers" + (" x 4 threads" if worker_class == "gthread" else ""))
        runs: dict[str, list[dict[str, t.Any]]] = {s: [] for s in SESSIONS}
        with contextlib.ExitStack() as stack:
            servers = {s: stack.enter_context(gunicorn(s, worker_class, workdir)) for s in SESSIONS}
            for session, (port, _, _) in servers.items():  # every worker warm, the SQLite file made
                load(port, f"warm-{worker_class}-{session}", args.connections, 1, 4, args.timeout)
            for round_no in range(args.rounds):
                order = SESSIONS if round_no % 2 == 0 else SESSIONS[::-1]
                for session in order:
                    port, log_path, pid = servers[session]
                    log_start = os.path.getsize(log_path)
                    tag = f"{worker_class}-r{round_no}-{session}"
                    cpu = workers_cpu(pid)
                    result = load(port, tag, args.connections, per_conn, args.items, args.timeout)
                    result["cpu_us"] = (workers_cpu(pid) - cpu) / result["requests"] * 1e6
                    result["check"] = verify(port, session, result, args.items)
                    result["log_problems"] = _log_problems(log_path, log_start)
                    runs[session].append(result)
                    c = result["check"]
                    _log(
                        f"  round {round_no + 1} {session:8} {result['rps']:7.0f} req/s  p50"
                        f" {result['p50_us'] / 1000:6.1f} ms  p99 {result['p99_us'] / 1000:6.1f} ms"
                        f"  server CPU {result['cpu_us']:5.0f} µs/req"
                        f"  requests {result['requests']:.0f}  codes {result['codes']}"
                        f"  socket errors {result['socket_errors']}"
                        f"  users {c['users_checked']}  lost {c['lost_items']}  replaced id opens"
                        f" {c['replaced_id_still_opens']}  log problems {len(result['log_problems'])}"
                    )
                    for example in c["examples"]:
                        _log(f"    {example}")
        out[worker_class] = summarise(runs, per_conn * args.connections)
    return out


def summarise(runs: dict[str, list[dict[str, t.Any]]], users: int) -> dict[str, t.Any]:
    cell: dict[str, t.Any] = {}
    for session, results in runs.items():
        checks = [r["check"] for r in results]
        cell[session] = {
            "rps": statistics.median(r["rps"] for r in results),
            "p50_ms": statistics.median(r["p50_us"] for r in results) / 1000,
            "p99_ms": statistics.median(r["p99_us"] for r in results) / 1000,
            "p99_worst_ms": max(r["p99_us"] for r in results) / 1000,
            "cpu_us": statistics.median(r["cpu_us"] for r in results),
            "requests": sum(r["requests"] for r in results),
            "not_2xx_3xx": sum(n for r in results for code, n in r["codes"].items() if not 200 <= int(code) < 400),
            "socket_errors": sum(r["socket_errors"] for r in results),
            "users_expected": users * len(results),
            "users_checked": sum(c["users_checked"] for c in checks),
            "lost_items": sum(c["lost_items"] for c in checks),
            "applied_twice": sum(c["applied_twice"] for c in checks),
            "foreign_items": sum(c["foreign_items"] for c in checks),
            "wrong_user": sum(c["wrong_user"] for c in checks),
            "read_back_errors": sum(c["read_back_errors"] for c in checks),
            "no_cookie": sum(c["no_cookie"] for c in checks),
            "replaced_id_still_opens": (
                None if session == "cookie" else sum(c["replaced_id_still_opens"] or 0 for c in checks)
            ),
            "log_problems": [line for r in results for line in r["log_problems"]][:20],
            "runs": [{k: v for k, v in r.items() if k != "users"} for r in results],
        }
    cookie, satchel = runs["cookie"], runs["satchel"]
    # Each round's ratio pairs two runs a few seconds apart; the median sets aside a spoiled round.
    ratios = [s["rps"] / c["rps"] for s, c in zip(satchel, cookie, strict=True)]
    cell["ratio"] = statistics.median(ratios)
    cell["ratios"] = [round(r, 3) for r in ratios]
    cpu = [s["cpu_us"] / c["cpu_us"] for s, c in zip(satchel, cookie, strict=True)]
    cell["cpu_ratio"] = statistics.median(cpu)
    cell["cpu_ratios"] = [round(r, 3) for r in cpu]
    return cell


def report(results: dict[str, t.Any]) -> str:
    meta = results["meta"]
    lines = [
        "# The default store under load",
        "",
        f"Run {meta['started']} on {meta['host']} ({meta['cpus']} CPUs, load {meta['loadavg']}), Python"
        f" {meta['python']}, Flask {meta['versions']['flask']}, Flask-Satchel {meta['versions']['flask-satchel']},"
        f" gunicorn {meta['versions']['gunicorn']}; `{meta['command']}`; {meta['seconds']} s.",
        "",
        f"gunicorn, {WORKERS} workers; {meta['connections']} client processes, one connection each, each"
        f" playing {meta['users_per_conn']} users one after the other"
        f" ({meta['users_per_conn'] * meta['connections']} users a run): a login, "
        f"{meta['items']} cart additions, a cart read after every second one, a second login half way"
        f" ({meta['requests_per_user']} requests a user). {meta['rounds']} round(s), the two apps taking turns;"
        " req/s, p50 and p99 are medians over the rounds, the ratio the median of each round's ratio;"
        " errors and checks are totals. Server CPU: user and system time of gunicorn's workers (from"
        " `/proc`) over the run, per request, which the other processes on this machine hardly move.",
        "",
        "| workers | session | req/s | Satchel / cookie | p50 ms | p99 ms | server CPU µs/req | Satchel / cookie |"
        " requests | not 2xx/3xx |"
        " socket errors | users checked | carts read back wrong | additions lost, twice, elsewhere |"
        " replaced id still opens | log problems |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for worker_class, cell in results["load"].items():
        label = f"{worker_class}" + (" x 4 threads" if worker_class == "gthread" else "")
        if not isinstance(cell, dict):
            lines.append(f"| {label} | {cell} | | | | | | | | | | | | | | |")
            continue
        for session in SESSIONS:
            c = cell[session]
            ratio = f"{cell['ratio']:.2f} ({', '.join(f'{r:.2f}' for r in cell['ratios'])})"
            cpu_ratio = f"{cell['cpu_ratio']:.2f} ({', '.join(f'{r:.2f}' for r in cell['cpu_ratios'])})"
            opens = "n/a" if c["replaced_id_still_opens"] is None else str(c["replaced_id_still_opens"])
            wrong = c["wrong_user"] + c["read_back_errors"] + c["no_cookie"]
            lines.append(
                f"| {label} | {LABELS[session]} | {c['rps']:,.0f} | {ratio if session == 'satchel' else ''} |"
                f" {c['p50_ms']:.1f} | {c['p99_ms']:.1f} | {c['cpu_us']:,.0f} |"
                f" {cpu_ratio if session == 'satchel' else ''} | {c['requests']:,.0f} | {c['not_2xx_3xx']} |"
                f" {c['socket_errors']:.0f} | {c['users_checked']} of {c['users_expected']} | {wrong} |"
                f" {c['lost_items']}, {c['applied_twice']}, {c['foreign_items']} | {opens} | {len(c['log_problems'])} |"
            )
    lines += [
        "",
        "Checked afterwards, for every user who finished: the cart read back with the user's last cookie"
        " (wrong: not a 200, another user's name, or no cookie at all); cart additions answered 2xx/3xx"
        " missing from it (lost), found in it twice, or not this user's (elsewhere); and, for Flask-Satchel,"
        " whether the session id the second login replaced still opens a session. Log problems: tracebacks,"
        " errors and worker timeouts in gunicorn's log during the runs.",
        "",
    ]
    return "\n".join(lines)


def _stop(signum: int, frame: t.Any) -> None:
    raise KeyboardInterrupt  # so the gunicorns are stopped and the temporary folder removed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=8, help="users at a time (default 8)")
    p.add_argument("--users", type=int, default=64, help="users per run, split over the connections (default 64)")
    p.add_argument("--items", type=int, default=24, help="cart additions per user (default 24)")
    p.add_argument("--rounds", type=int, default=5, help="runs of each app per worker class (default 5)")
    p.add_argument("--timeout", type=float, default=60, help="the longest one run may take, in seconds (default 60)")
    p.add_argument("--worker-classes", default="sync,gthread", help="comma-separated: sync,gthread")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="where load.md/.json go")
    args = p.parse_args(argv)
    args.worker_classes = [w.strip() for w in args.worker_classes.split(",") if w.strip()]
    if unknown := set(args.worker_classes) - set(WORKER_CLASSES):
        raise SystemExit(f"unknown worker classes {sorted(unknown)}; known: {', '.join(WORKER_CLASSES)}")
    signal.signal(signal.SIGTERM, _stop)
    items = args.items
    start = time.monotonic()
    results: dict[str, t.Any] = {
        "meta": {
            **services.run_meta("load.py", ("flask", "flask-satchel", "gunicorn")),
            "connections": args.connections,
            "users_per_conn": max(1, args.users // args.connections),
            "items": items,
            "requests_per_user": 2 + items + items // 2,
            "rounds": args.rounds,
        }
    }
    workdir = tempfile.mkdtemp(prefix="satchel-load-")
    try:
        results["load"] = run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["meta"]["seconds"] = round(time.monotonic() - start, 1)
    md = report(results)
    services.save(args.out, "load", results, md)
    _log("")
    _log(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
