"""The servers a benchmark run talks to, started and stopped by the run itself.

Redis and memcached are private processes on free loopback ports: the shared
Redis on 6379 is busy with other people's test suites, and their commands
would show up in ``INFO commandstats`` as if our requests had sent them. A
private server also lets the scale run put a million keys somewhere without
bloating anyone else's memory. PostgreSQL is the shared server; everything we
create there carries the run's tag in its name and is dropped at the end.

Everything a worker process needs to rebuild the same apps (gunicorn in the
throughput run) travels as environment variables, see ``to_env``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import http.client
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import typing as t

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_ENV_PREFIX = "SATCHEL_BENCH_"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[t.Any], grace: float = 5.0) -> None:
    """Terminate ``proc``; kill it if it is still there after ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def gunicorn(
    app: str, options: t.Sequence[str], env: t.Mapping[str, str], log_path: str, *, ready: str, timeout: float = 30
) -> t.Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """gunicorn serving ``app`` from bench/ on a free loopback port, once ``GET ready`` answers: (port, process)."""
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    cmd = [exe, "--chdir", os.path.dirname(os.path.abspath(__file__)), *options, "--bind", f"127.0.0.1:{port}"]
    cmd += ["--log-level", "warning", "--graceful-timeout", "5", app]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, env=dict(env), stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                with open(log_path) as f:
                    raise RuntimeError(f"gunicorn exited: {f.read()[-800:]}")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", ready)
                conn.getresponse().read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not answer within {timeout:g} s") from None
                time.sleep(0.1)
            finally:
                conn.close()
        yield port, proc
    finally:
        stop(proc, 10)


def version(dist: str) -> str | None:
    """The installed version of ``dist``, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_meta(script: str, dists: t.Sequence[str]) -> dict[str, t.Any]:
    """What a results file says of its run: when, on what machine, the command, the versions of ``dists``."""
    return {
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "command": " ".join([f".venv/bin/python bench/{script}", *sys.argv[1:]]).strip(),
        "versions": {d: version(d) for d in dists},
    }


def save(folder: str, stem: str, results: t.Mapping[str, t.Any], md: str) -> None:
    """Write a run's report as ``stem.md`` and its numbers as ``stem.json`` into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{stem}.md"), "w") as f:
        f.write(md)
    with open(os.path.join(folder, f"{stem}.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True, default=str)
        f.write("\n")


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


@dataclasses.dataclass
class Services:
    """Where each backend lives for this run; None means not available."""

    #: A scratch folder for SQLite files, session folders and server state.
    workdir: str
    #: Unique per run: table names and key prefixes include it.
    tag: str
    redis_url: str | None = None
    memcached_port: int | None = None
    pg_url: str | None = None
    #: Why a service is missing, for the "n/a" cells of the table.
    missing: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_env(self) -> dict[str, str]:
        env = {f"{_ENV_PREFIX}WORKDIR": self.workdir, f"{_ENV_PREFIX}TAG": self.tag}
        if self.redis_url:
            env[f"{_ENV_PREFIX}REDIS_URL"] = self.redis_url
        if self.memcached_port:
            env[f"{_ENV_PREFIX}MEMCACHED_PORT"] = str(self.memcached_port)
        if self.pg_url:
            env[f"{_ENV_PREFIX}PG_URL"] = self.pg_url
        return env

    @classmethod
    def from_env(cls, env: t.Mapping[str, str] = os.environ) -> Services:
        port = env.get(f"{_ENV_PREFIX}MEMCACHED_PORT")
        return cls(
            workdir=env[f"{_ENV_PREFIX}WORKDIR"],
            tag=env[f"{_ENV_PREFIX}TAG"],
            redis_url=env.get(f"{_ENV_PREFIX}REDIS_URL"),
            memcached_port=int(port) if port else None,
            pg_url=env.get(f"{_ENV_PREFIX}PG_URL"),
        )

    def pg_tables(self) -> tuple[str, str]:
        """(Flask-Satchel's table, Flask-Session's table) on PostgreSQL for this run."""
        return f"bench_satchel_{self.tag}", f"bench_fsession_{self.tag}"


def _start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--logfile",
            os.path.join(workdir, "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_port(port, proc, "redis-server")
    return proc, f"redis://127.0.0.1:{port}/0"


def _start_memcached() -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("memcached")
    if exe is None:
        raise RuntimeError("memcached is not installed (apt-get install -y memcached)")
    port = free_port()
    # 2 GB so the scale and new-session runs never evict; -U 0 turns UDP off.
    cmd = [exe, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "2048", "-t", "2"]
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_port(port, proc, "memcached")
    return proc, port


def _check_postgres() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        return f"PostgreSQL unreachable: {e}"
    return None


def drop_pg_tables(services: Services) -> None:
    """Drop every table this run created on the shared PostgreSQL."""
    if not services.pg_url:
        return
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        for table in services.pg_tables():
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
            conn.execute(f'DROP TABLE IF EXISTS "{table}_scale"')


@contextlib.contextmanager
def running(redis_url: str | None = None) -> t.Iterator[Services]:
    """Start the private servers; stop them and drop our tables afterwards, always."""
    workdir = tempfile.mkdtemp(prefix="satchel-bench-")
    services = Services(workdir=workdir, tag=f"{os.getpid()}_{int(time.time()) % 100000}")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if redis_url:
            services.redis_url = redis_url
        else:
            try:
                proc, services.redis_url = _start_redis(workdir)
                procs.append(proc)
            except RuntimeError as e:
                services.missing["redis"] = str(e)
        try:
            proc, services.memcached_port = _start_memcached()
            procs.append(proc)
        except RuntimeError as e:
            services.missing["memcached"] = str(e)
        reason = _check_postgres()
        if reason is None:
            services.pg_url = PG_URL
        else:
            services.missing["postgresql"] = reason
        yield services
    finally:
        with contextlib.suppress(Exception):
            drop_pg_tables(services)
        for proc in procs:
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
