"""Where the time of a session request goes: pyinstrument on the hot path.

Profiles the read-only and the one-key-change requests on the SQLite and
memory stores (the two with the least I/O, where Python overhead shows most)
over many requests, and keeps pyinstrument's text tree, trimmed to the
frames that matter.
"""

from __future__ import annotations

import typing as t

import apps
import latency

if t.TYPE_CHECKING:
    from services import Services

TARGETS = [
    ("satchel-sqlite", "read"),
    ("satchel-sqlite", "write"),
    ("satchel-memory", "read"),
    ("satchel-memory", "write"),
]


def profile(app: t.Any, scenario: str, requests: int, interval: float = 0.0001) -> str:
    from pyinstrument import Profiler

    call = latency.prepare(app, scenario)
    for _ in range(50):
        call()
    profiler = Profiler(interval=interval)
    profiler.start()
    for _ in range(requests):
        call()
    profiler.stop()
    return str(
        profiler.output_text(unicode=True, color=False, show_all=False, short_mode=True, time="percent_of_total")
    )


def run(services: Services, log: t.Callable[[str], None], requests: int = 3000) -> dict[str, str]:
    """Profile text per ``backend/scenario``."""
    out: dict[str, str] = {}
    for name, scenario in TARGETS:
        app = apps.build(name, services)
        try:
            text = profile(app, scenario, requests)
        finally:
            apps.close(app)
        out[f"{name} {scenario}"] = text
        log(f"Profile of {name} {scenario} ({requests} requests):\n{text}")
    return out
