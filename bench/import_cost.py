"""What ``SESSION_MIGRATE_FLASK_SESSION`` costs a request whose cookie names nothing.

Such a request (a random 43-character cookie: a stale cookie, a bot, a
forged id) is the one that pays for the import: Flask-Satchel's store finds
nothing, and the importer then asks Flask-Session's backend. A request with
a known Flask-Satchel session never reaches the importer; it is measured
too, to show that. Each is counted from the server's own counters, with
and without the key, on private servers (Redis, memcached), through a
counting relay (PostgreSQL) or with audit hooks (the file system):

    .venv/bin/python bench/import_cost.py [--requests 20]

Redis's ``total_reads_processed`` is the number of reads the server made
on client sockets, about one per round trip; its command statistics name
the commands (a ``MULTI … EXEC`` is one round trip of four commands).
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import sys
import tempfile
import typing as t

import counters
import services as services_mod
from flask import Flask, session

from flask_satchel import Session

Counter = t.Callable[[], dict[str, float]]


def _app(config: dict[str, t.Any], migrate: bool, prepare: t.Callable[[Flask], None] | None) -> Flask:
    app = Flask(f"import_cost_{migrate}")
    app.config.update(config, SESSION_MIGRATE_FLASK_SESSION=migrate)
    if prepare is not None:
        prepare(app)
    Session(app)

    @app.get("/read")
    def read() -> str:
        return repr(session.get("_user_id"))

    @app.get("/fill")
    def fill() -> str:
        session["_user_id"] = "42"
        return "ok"

    return app


def _request(app: Flask, cookie: str) -> None:
    browser = app.test_client()
    browser.set_cookie("session", cookie)
    response = browser.get("/read")
    assert response.status_code == 200, response.text


def _per_request(count: Counter, run: t.Callable[[], None], n: int) -> dict[str, float]:
    start = count()
    for _ in range(n):
        run()
    end = count()
    return {name: (end.get(name, 0.0) - start.get(name, 0.0)) / n for name in end if end[name] != start.get(name)}


def measure(
    name: str,
    config: dict[str, t.Any],
    count: Counter,
    n: int,
    prepare: t.Callable[[Flask], None] | None = None,
) -> list[tuple[str, str, dict[str, float]]]:
    rows = []
    for migrate in (False, True):
        app = _app(config, migrate, prepare)
        try:
            unknown, known = _both(app, count, n)
        finally:
            app.extensions["satchel"].store.close()
        key = "on" if migrate else "off"
        rows += [(name, f"{key}, cookie names nothing", unknown), (name, f"{key}, known session", known)]
    return rows


def _both(app: Flask, count: Counter, n: int) -> tuple[dict[str, float], dict[str, float]]:
    """Per request: (a random cookie, the cookie of a session the store holds)."""
    browser = app.test_client()
    browser.get("/fill")
    known = browser.get_cookie("session")
    assert known is not None
    _request(app, secrets.token_urlsafe(32))  # connections made, scripts loaded
    return (
        _per_request(count, lambda: _request(app, secrets.token_urlsafe(32)), n),
        _per_request(count, lambda: _request(app, known.value), n),
    )


def _redis(url: str) -> Counter:
    probe = counters.RedisProbe(url)

    def count() -> dict[str, float]:
        read = probe.read()
        keep = ("round_trips", "commands")
        return {k: v for k, v in read.items() if k in keep or k.startswith("cmd:")}

    return count


def _memcached(port: int) -> Counter:
    probe = counters.MemcachedProbe(port)

    def count() -> dict[str, float]:
        read = probe.read()
        return {"gets": read["cmd:get"], "round_trips": read["round_trips"] + read["cmd:cas"]}

    return count


def _files() -> Counter:
    """File system calls, from Python's audit events: one rename per name the importer tries."""
    calls: dict[str, float] = {}
    watched = {"open", "os.rename", "os.remove", "os.scandir", "os.listdir"}

    def hook(event: str, args: tuple[t.Any, ...]) -> None:
        if event in watched:
            calls[event] = calls.get(event, 0.0) + 1

    sys.addaudithook(hook)  # cannot be removed: the file system runs last
    return lambda: dict(calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20, help="requests per row, averaged")
    args = parser.parse_args()
    rows: list[tuple[str, str, dict[str, float]]] = []
    with services_mod.running() as services:
        prefix = f"import-cost-{services.tag}:"
        if services.redis_url:
            config = {"SESSION_URL": services.redis_url, "SESSION_KEY_PREFIX": prefix}
            rows += measure("redis", config, _redis(services.redis_url), args.requests)
        if services.memcached_port:
            config = {"SESSION_URL": f"memcached://127.0.0.1:{services.memcached_port}", "SESSION_KEY_PREFIX": prefix}
            rows += measure("memcached", config, _memcached(services.memcached_port), args.requests)
        if services.pg_url:
            rows += _postgresql(services, prefix, args.requests)
        with tempfile.TemporaryDirectory() as folder:
            config = {"SESSION_TYPE": "filesystem", "SESSION_FILE_DIR": folder, "SESSION_KEY_PREFIX": prefix}
            rows += measure("filesystem", config, _files(), args.requests)
        for name, why in services.missing.items():
            print(f"{name}: not measured ({why})")
    print(f"Per request, averaged over {args.requests} requests:\n")
    print("| store | SESSION_MIGRATE_FLASK_SESSION, request | counters |")
    print("|---|---|---|")
    for name, what, counts in rows:
        shown = ", ".join(f"{k} {v:g}" for k, v in sorted(counts.items()))
        print(f"| {name} | {what} | {shown} |")


def _postgresql(services: services_mod.Services, prefix: str, n: int) -> list[tuple[str, str, dict[str, float]]]:
    """PostgreSQL through the counting relay, on an engine from SESSION_URL (autocommit, as the store makes it)."""
    import sqlalchemy as sa
    from flask_sqlalchemy import SQLAlchemy

    from flask_satchel.legacy.sql import flask_session_table

    satchel_table, fsession_table = (f"{name}_import" for name in services.pg_tables())
    relay = counters.Relay("127.0.0.1", 5432)
    url = f"postgresql://postgres@127.0.0.1:{relay.port}/test"
    engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    flask_session_table(fsession_table).create(engine)  # as Flask-Session made it
    try:
        config = {
            "SESSION_URL": url,
            "SESSION_KEY_PREFIX": prefix,
            "SESSION_SQLALCHEMY_TABLE": satchel_table,
            "SESSION_FLASK_SESSION_TABLE": fsession_table,
        }
        count = lambda: {"round_trips": float(relay.round_trips)}  # noqa: E731
        rows = measure("postgresql (SESSION_URL)", config, count, n)
        # Flask-Session needed a Flask-SQLAlchemy db; an app that keeps it for Flask-Satchel has its engine.
        db = SQLAlchemy()
        config = {key: value for key, value in config.items() if key != "SESSION_URL"}
        config.update(
            SESSION_TYPE="sqlalchemy",
            SESSION_SQLALCHEMY=db,
            SQLALCHEMY_DATABASE_URI=url.replace("://", "+psycopg://", 1),
        )
        apps: list[Flask] = []

        def prepare(app: Flask) -> None:
            db.init_app(app)
            apps.append(app)

        rows += measure("postgresql (Flask-SQLAlchemy db)", config, count, n, prepare)
        for app in apps:
            with app.app_context():
                db.engine.dispose()
        return rows
    finally:
        with engine.begin() as conn:
            for table in (satchel_table, fsession_table):
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
        engine.dispose()
        with contextlib.suppress(Exception):
            relay.close()


if __name__ == "__main__":
    main()
