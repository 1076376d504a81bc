"""Instructions per request, counted by valgrind: a number this VM's noise cannot move.

Wall-clock medians here drift by a factor of two within a run. The number of
instructions a request executes does not: callgrind counts them exactly, so
a change to the hot path can be judged on one run of each version. It says
nothing about cache misses or system calls, which is why the benchmark
itself stays in wall-clock time; this is the tool for A/B comparisons.

Usage (valgrind from ``apt-get install valgrind``)::

    .venv/bin/python bench/instructions.py                 # the in-process backends, read-only
    .venv/bin/python bench/instructions.py satchel-cookie:write cookie:write

Each target runs twice under callgrind, with 100 and with 1,100 measured
requests after the same warm-up; the difference over 1,000 is the count per
request, free of start-up costs. With ``SATCHEL_NO_OTEL=1`` the app runs as
if OpenTelemetry were not installed; otherwise its API is there, with no
SDK configured, as in an app that installed the extra and set nothing up.
Only backends with no server to start are
offered: the floor, Flask's cookie session, and the memory, SQLite,
filesystem and encrypted cookie stores.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
IN_PROCESS = ("floor", "cookie", "satchel-memory", "satchel-cookie", "satchel-sqlite", "satchel-filesystem")
DEFAULT = [f"{name}:read" for name in IN_PROCESS]
_COLLECTED = re.compile(r"Collected : (\d+)")


def _child(name: str, scenario: str, requests: int) -> None:
    """Build the app, warm it up, then run ``requests`` requests (what callgrind counts)."""
    if os.environ.get("SATCHEL_NO_OTEL"):
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]  # as if the otel extra were not installed
    sys.path.insert(0, HERE)
    import apps
    import latency
    from services import Services

    services = Services(workdir=tempfile.mkdtemp(prefix="satchel-ir-"), tag="ir")
    try:
        app = apps.build(name, services)
        # The floor has no session to create: its requests carry no cookie.
        call = latency.Call(app, f"/{scenario}") if name == "floor" else latency.prepare(app, scenario)
        for _ in range(200):
            call()
        for _ in range(requests):
            call()
        apps.close(app)
    finally:
        shutil.rmtree(services.workdir, ignore_errors=True)


def _count(name: str, scenario: str, requests: int) -> int:
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            name,
            scenario,
            str(requests),
        ],
        capture_output=True,
        text=True,
        check=True,
        # A fixed hash seed: dict and set layouts, and so the count, repeat from run to run.
        env=os.environ | {"PYTHONHASHSEED": "0"},
    )
    match = _COLLECTED.search(out.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count from valgrind for {name}:{scenario}:\n{out.stderr[-2000:]}")
    return int(match.group(1))


def per_request(name: str, scenario: str) -> int:
    """Instructions one ``scenario`` request of backend ``name`` executes."""
    return (_count(name, scenario, 1100) - _count(name, scenario, 100)) // 1000


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        _child(argv[1], argv[2], int(argv[3]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    targets = argv or DEFAULT
    for target in targets:
        name, _, scenario = target.partition(":")
        if name not in IN_PROCESS or not scenario:
            raise SystemExit(f"{target!r}: give backend:scenario, backend one of {', '.join(IN_PROCESS)}")
    floor = {}
    for target in targets:
        name, _, scenario = target.partition(":")
        count = per_request(name, scenario)
        line = f"{name:20} {scenario:9} {count:>9,} instructions/request"
        if name != "floor" and scenario in ("untouched", "read"):
            # The floor's read view reads Flask's null session: the same view, no session work.
            if scenario not in floor:
                floor[scenario] = per_request("floor", scenario)
            line += f"   {count - floor[scenario]:>9,} above the no-session app"
        print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
