"""The performance page's charts and tables, drawn from a benchmark run's ``latest.json``.

``make docs`` calls :func:`build` before Sphinx reads the pages, so what the
page shows is always the last ``make bench`` that was committed, never a
figure copied by hand. Everything goes to ``docs/_generated/`` (not in git):
three PNG charts and ``figures.md``, the tables the page includes.

Run it by hand to look at the charts: ``.venv/bin/python docs/charts.py``.
"""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a build machine

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

OUT = Path(__file__).resolve().parent / "_generated"

#: Flask-Satchel's stores, fastest kind first, with the storage Flask-Session is compared on.
STORES: list[tuple[str, str, str | None]] = [
    ("satchel-memory", "memory", None),
    ("satchel-cookie", "encrypted cookie", None),
    ("satchel-filesystem", "filesystem", "fsession-filesystem"),
    ("satchel-sqlite", "SQLite", "fsession-sqlite"),
    ("satchel-redis", "Redis", "fsession-redis"),
    ("satchel-memcached", "Memcached", "fsession-memcached"),
    ("satchel-postgresql", "PostgreSQL", "fsession-postgresql"),
]
SCENARIOS = [("read", "read-only"), ("write", "one-key change"), ("new", "new session")]

#: Colours that stay apart for colour-blind readers (Okabe and Ito).
SATCHEL = "#0072B2"
SATCHEL_LIGHT = ["#0072B2", "#56B4E9", "#009E73"]
FLASK_SESSION = "#D55E00"
COOKIE = "#999999"


def _overhead(run: dict[str, t.Any], backend: str, scenario: str) -> float | None:
    cell = run["latency"].get(backend, {}).get(scenario)
    return None if cell is None else float(cell["overhead_us"])


def _same_loop(run: dict[str, t.Any], backend: str, scenario: str, other: str) -> float | None:
    """``other``'s µs above the floor, timed in ``backend``'s loop, batch by batch (what the ratios use)."""
    cell = run["latency"].get(backend, {}).get(scenario)
    if cell is None or other not in cell.get("references", {}):
        return None
    return float(cell["references"][other])


def _label_bars(ax: t.Any, bars: t.Any) -> None:
    for bar in bars:
        width = bar.get_width()
        ax.annotate(
            f"{width:,.0f}",
            (max(width, 0), bar.get_y() + bar.get_height() / 2),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )


def _style(ax: t.Any, xlabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.invert_yaxis()  # first store on top


def overhead_chart(run: dict[str, t.Any], path: Path) -> None:
    """µs per request above the no-session app, per Flask-Satchel store and scenario, Flask's cookie session last."""
    rows = [(label, backend) for backend, label, _ in STORES if backend in run["latency"]]
    rows.append(("Flask's cookie session", "cookie"))
    fig, ax = plt.subplots(figsize=(8, 0.62 * len(rows) + 1.4), dpi=110)
    height = 0.27
    for i, (scenario, name) in enumerate(SCENARIOS):
        values = [_overhead(run, backend, scenario) or 0.0 for _, backend in rows]
        colours = [COOKIE if backend == "cookie" else SATCHEL_LIGHT[i] for _, backend in rows]
        ys = [n + (i - 1) * height for n in range(len(rows))]
        bars = ax.barh(ys, values, height=height, color=colours, label=name)
        _label_bars(ax, bars)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    _style(ax, "µs per request above a Flask app with no session (median; shorter is better)")
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in SATCHEL_LIGHT]
    ax.legend(handles, [name for _, name in SCENARIOS], loc="lower right", frameon=False)
    ax.set_title("What a session costs a request, by store", loc="left", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def versus_chart(run: dict[str, t.Any], path: Path) -> None:
    """Flask-Satchel against Flask-Session 0.8 on the same storage, read-only and one-key change."""
    rows = [(label, backend, other) for backend, label, other in STORES if other and backend in run["latency"]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.55 * len(rows) + 1.6), dpi=110, sharey=True)
    height = 0.38
    for ax, (scenario, name) in zip(axes, SCENARIOS[:2], strict=False):
        ours = [_overhead(run, backend, scenario) or 0.0 for _, backend, _ in rows]
        theirs = [_same_loop(run, backend, scenario, other) or 0.0 for _, backend, other in rows]
        _label_bars(ax, ax.barh([n - height / 2 for n in range(len(rows))], ours, height, color=SATCHEL))
        _label_bars(ax, ax.barh([n + height / 2 for n in range(len(rows))], theirs, height, color=FLASK_SESSION))
        ax.set_yticks(range(len(rows)), [label for label, _, _ in rows])
        ax.set_title(name, loc="left", fontsize=10)
        _style(ax, "µs per request above the no-session app")
        ax.set_xlim(0, max(theirs + ours) * 1.18)
    axes[1].invert_yaxis()  # sharey: undo the second inversion
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in (SATCHEL, FLASK_SESSION)]
    fig.legend(handles, ["Flask-Satchel", "Flask-Session 0.8"], loc="lower center", ncol=2, frameon=False)
    fig.suptitle("Against Flask-Session on the same storage (timed in one loop)", x=0.01, ha="left", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def _ratio(data: dict[str, t.Any], backend: str | None) -> float | None:
    cell = data.get(backend or "")
    if not isinstance(cell, dict) or "read" not in cell:
        return None  # a note such as "n/a (a per-process store …)"
    return float(cell["read"]["ratio"])


def throughput_chart(run: dict[str, t.Any], path: Path) -> None:
    """Read-only requests per second under gunicorn + wrk, as a share of the same app without a session."""
    data = run.get("throughput", {})
    rows = [(label, backend, other) for backend, label, other in STORES if _ratio(data, backend) is not None]
    rows.append(("Flask's cookie session", "cookie", None))
    fig, ax = plt.subplots(figsize=(8, 0.62 * len(rows) + 1.4), dpi=110)
    height = 0.38
    ours = [_ratio(data, backend) or 0.0 for _, backend, _ in rows]
    theirs = [_ratio(data, other) or 0.0 for _, _, other in rows]
    colours = [COOKIE if backend == "cookie" else SATCHEL for _, backend, _ in rows]
    bars = [*ax.barh([n - height / 2 for n in range(len(rows))], ours, height, color=colours)]
    bars += [
        bar
        for bar, value in zip(
            ax.barh([n + height / 2 for n in range(len(rows))], theirs, height, color=FLASK_SESSION),
            theirs,
            strict=True,
        )
        if value
    ]
    for bar in bars:
        ax.annotate(
            f"{bar.get_width():.2f}",
            (bar.get_width(), bar.get_y() + bar.get_height() / 2),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.axvline(1.0, color="#444444", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(rows)), [label for label, _, _ in rows])
    ax.set_xlim(0, 1.15)
    _style(ax, "read-only requests per second, as a share of the no-session app's (longer is better)")
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in (SATCHEL, FLASK_SESSION, COOKIE)]
    labels = ["Flask-Satchel", "Flask-Session 0.8, same storage", "Flask's cookie session"]
    ax.legend(handles, labels, loc="lower right", frameon=True, framealpha=0.9, fontsize=8)
    ax.set_title("Throughput of read-only requests under gunicorn + wrk", loc="left", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def figures(run: dict[str, t.Any]) -> str:
    """The page's tables, as Markdown: the run's numbers, nothing typed in by hand."""
    meta = run["meta"]
    floor = run["latency"]["floor"]["untouched"]["median_us"]
    lines = [
        f"Run of {meta['started'][:16].replace('T', ' ')} UTC ({meta['mode']} plan), on `{meta['host']}`: "
        f"{meta['cpus']} CPUs, Python {meta['python']}, Flask {meta['versions'].get('flask', '?')}, "
        f"Flask-Session {meta['versions'].get('flask-session', '?')}; a session of "
        f"{meta['session_bytes']} bytes in 10 keys. A Flask request with no session cost {floor:.1f} µs; "
        "the figures are µs per request above that, medians.",
        "",
        "| store | untouched | read-only | one-key change | new session |",
        "| --- | --: | --: | --: | --: |",
    ]
    rows = [(backend, label) for backend, label, _ in STORES if backend in run["latency"]]
    for backend, label in [*rows, ("cookie", "*Flask's cookie session*")]:
        cells = [_fmt(_overhead(run, backend, s), 1) for s in ("untouched", "read", "write", "new")]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines += [
        "",
        "The same stores against the others, as ratios of their µs timed in one loop (below 1 is faster), and"
        " read-only requests per second under gunicorn as a share of the no-session app's:",
        "",
        "| store | read-only vs Flask-Session | change vs Flask-Session | read-only vs Flask's cookie session"
        " | change vs Flask's cookie session | read-only throughput |",
        "| --- | --: | --: | --: | --: | --: |",
    ]
    for backend, label in rows:
        ratios = run["ratios"].get(backend, {})
        cells = [
            _fmt(ratios.get(name), 2)
            for name in ("read_vs_fsession", "write_vs_fsession", "read_vs_cookie", "write_vs_cookie")
        ]
        cells.append(_fmt(_ratio(run.get("throughput", {}), backend), 2))
        lines.append(f"| {label} | {' | '.join(cells)} |")

    lines += [
        "",
        "Store work per request, counted by the servers themselves (round trips / writes):",
        "",
        "| store | untouched | read-only | one-key change | new session | counted as |",
        "| --- | --: | --: | --: | --: | --- |",
    ]
    for backend, label, other in STORES:
        for name, who in ((backend, label), (other, f"Flask-Session, {label}")):
            io = run.get("io", {}).get(name or "")
            if not io:
                continue
            cells = [
                f"{io[s]['round_trips']:.0f} / {io[s]['writes']:.0f}" if s in io else ""
                for s in ("untouched", "read", "write", "new")
            ]
            lines.append(f"| {who} | {' | '.join(cells)} | {io.get('_unit', '')} |")

    scale = run.get("scale", {})
    if scale:
        lines += [
            "",
            "At scale: a session's load with the store full, against the same load with 1,000 sessions:",
            "",
            "| store | sessions | load at 1,000 (µs) | load when full (µs) | ratio | cleanup of expired"
            " | bytes a session |",
            "| --- | --: | --: | --: | --: | --: | --: |",
        ]
        for backend, label, _ in STORES:
            cell = scale.get(backend)
            if not cell:
                continue
            cleanup = cell.get("cleanup_s")
            cleanup_text = "native TTL" if cleanup is None else f"{cleanup:.1f} s for {cell.get('expired', 0):,}"
            lines.append(
                f"| {label} | {cell['size']:,} | {cell['load_small_us']:.1f} | {cell['load_large_us']:.1f} "
                f"| \N{MULTIPLICATION SIGN}{cell['load_ratio']:.2f} | {cleanup_text}"
                f" | {cell.get('bytes_per_session', 0):,.0f} |"
            )
    return "\n".join(lines) + "\n"


def build(results: Path, out: Path = OUT) -> list[Path]:
    """Write the charts and ``figures.md`` for the run in ``results``; returns the files written."""
    run = json.loads(results.read_text(encoding="utf-8"))
    out.mkdir(exist_ok=True)
    written = [out / "overhead.png", out / "versus-flask-session.png", out / "throughput.png", out / "figures.md"]
    overhead_chart(run, written[0])
    versus_chart(run, written[1])
    throughput_chart(run, written[2])
    written[3].write_text(figures(run), encoding="utf-8")
    return written


if __name__ == "__main__":
    for path in build(Path(__file__).resolve().parent.parent / "bench" / "results" / "latest.json"):
        print(path)
