"""The apps under test: one tiny Flask app per session backend, same views.

Every app has the same four views, one per scenario, so the only difference
between two apps is the session machinery:

- ``/untouched`` never looks at the session;
- ``/read`` reads two keys;
- ``/write`` changes one key (a counter);
- ``/new`` fills a new session with the ~1 KB payload below.

The *floor* app has no session at all: its per-request time is subtracted
from every other app's, which leaves the session's own overhead.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import typing as t

from flask import Flask, session
from flask.sessions import SecureCookieSessionInterface, SessionInterface

if t.TYPE_CHECKING:
    from flask import Request, Response
    from flask.sessions import SessionMixin
    from services import Services

#: The benchmark session: 10 keys, about 1 KB encoded, with tuples and nested
#: lists, the shapes a real app keeps (Flask-Login's keys, a CSRF token, a cart).
DATA: dict[str, t.Any] = {
    "_user_id": "4242",
    "_fresh": True,
    "_id": "9f2b" * 16,
    "csrf_token": "5a1c" * 10,
    "cart": [("sku-1001", 2, 19.99), ("sku-2002", 1, 5.5), ("sku-3003", 4, 0.99)],
    "prefs": {"theme": "dark", "langs": ["en", "fr", "de"], "tz": "Europe/Paris", "page_size": 50},
    "history": [["/products", 1700000000], ["/cart", 1700000042], ["/checkout", 1700000100]] * 4,
    "flags": [True, False, None, 3, 2.5, "beta"],
    "note": "lorem ipsum dolor sit amet " * 8,
    "counter": 0,
}

SCENARIOS = ("untouched", "read", "write", "new")
SECRET = "satchel-bench-secret-key-not-for-production"


class NoSessionInterface(SessionInterface):
    """The floor: Flask with no session work beyond its own null session."""

    def open_session(self, app: Flask, request: Request) -> None:
        return None

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        return None


def _views(app: Flask) -> Flask:
    @app.get("/untouched")
    def untouched() -> str:
        return "ok"

    @app.get("/read")
    def read() -> str:
        return f"{session.get('_user_id')} {len(session.get('cart', ()))}"

    @app.get("/write")
    def write() -> str:
        session["counter"] = session.get("counter", 0) + 1
        return "ok"

    @app.get("/new")
    def new() -> str:
        session.update(DATA)
        return "ok"

    return app


def _flask(name: str, services: Services) -> Flask:
    instance = os.path.join(services.workdir, name)
    os.makedirs(instance, exist_ok=True)
    app = Flask(f"bench_{name.replace('-', '_')}", instance_path=instance)
    app.secret_key = SECRET
    return _views(app)


@dataclasses.dataclass(frozen=True)
class Backend:
    """One column of the comparison: a session implementation on one backend."""

    #: ``floor``, ``cookie``, ``satchel-<store>`` or ``fsession-<store>``.
    name: str
    #: ``floor``, ``cookie``, ``satchel`` or ``flask-session``.
    family: str
    #: The storage it uses: sqlite, filesystem, memory, redis, postgresql, memcached,
    #: cookie (Flask's signed cookie), sealed-cookie (Flask-Satchel's encrypted one), none.
    storage: str
    #: The service it needs from :class:`services.Services`, if any.
    needs: str | None = None
    #: For Flask-Satchel stores being written elsewhere: the module to look for.
    store_module: str | None = None


BACKENDS = [
    Backend("floor", "floor", "none"),
    Backend("cookie", "cookie", "cookie"),
    Backend("satchel-memory", "satchel", "memory"),
    Backend("satchel-cookie", "satchel", "sealed-cookie"),
    Backend("satchel-sqlite", "satchel", "sqlite"),
    Backend("fsession-sqlite", "flask-session", "sqlite"),
    Backend("satchel-filesystem", "satchel", "filesystem"),
    Backend("fsession-filesystem", "flask-session", "filesystem"),
    Backend("satchel-redis", "satchel", "redis", "redis", "redis"),
    Backend("fsession-redis", "flask-session", "redis", "redis"),
    Backend("satchel-postgresql", "satchel", "postgresql", "postgresql", "sql"),
    Backend("fsession-postgresql", "flask-session", "postgresql", "postgresql"),
    Backend("satchel-memcached", "satchel", "memcached", "memcached", "memcached"),
    Backend("fsession-memcached", "flask-session", "memcached", "memcached"),
]
BY_NAME = {b.name: b for b in BACKENDS}
#: Flask-Satchel backend -> the Flask-Session backend on the same storage.
PAIRS = {
    "satchel-sqlite": "fsession-sqlite",
    "satchel-filesystem": "fsession-filesystem",
    "satchel-redis": "fsession-redis",
    "satchel-postgresql": "fsession-postgresql",
    "satchel-memcached": "fsession-memcached",
}


def unavailable(backend: Backend, services: Services) -> str | None:
    """Why ``backend`` cannot run here, or None when it can."""
    if backend.store_module is not None:
        try:
            importlib.import_module(f"flask_satchel.stores.{backend.store_module}")
        except ModuleNotFoundError as e:
            if e.name == f"flask_satchel.stores.{backend.store_module}":
                return "n/a (store not available)"
            return f"n/a (store import failed: {e})"
        except Exception as e:  # a store half-written by someone else
            return f"n/a (store import failed: {type(e).__name__}: {e})"
    if backend.needs is not None:
        if backend.needs == "redis" and not services.redis_url:
            return f"n/a ({services.missing.get('redis', 'no Redis')})"
        if backend.needs == "memcached" and not services.memcached_port:
            return f"n/a ({services.missing.get('memcached', 'no memcached')})"
        if backend.needs == "postgresql" and not services.pg_url:
            return f"n/a ({services.missing.get('postgresql', 'no PostgreSQL')})"
    return None


def key_prefix(services: Services) -> str:
    return f"bench-{services.tag}:"


def _satchel(backend: Backend, services: Services) -> Flask:
    from flask_satchel import Session

    app = _flask(backend.name, services)
    cfg = app.config
    cfg["SESSION_KEY_PREFIX"] = key_prefix(services)
    if backend.storage == "sqlite":
        cfg["SESSION_URL"] = f"sqlite:///{os.path.join(services.workdir, backend.name, 'sessions.sqlite3')}"
    elif backend.storage == "filesystem":
        cfg["SESSION_URL"] = f"file://{os.path.join(services.workdir, backend.name, 'sessions')}"
    elif backend.storage == "memory":
        cfg["SESSION_URL"] = "memory://"
    elif backend.storage == "sealed-cookie":
        cfg["SESSION_TYPE"] = "cookie"
    elif backend.storage == "redis":
        cfg["SESSION_URL"] = services.redis_url
    elif backend.storage == "memcached":
        cfg["SESSION_URL"] = f"memcached://127.0.0.1:{services.memcached_port}"
    elif backend.storage == "postgresql":
        cfg["SESSION_URL"] = services.pg_url
        cfg["SESSION_SQLALCHEMY_TABLE"] = services.pg_tables()[0]
    Session(app)
    return app


def _flask_session(backend: Backend, services: Services) -> Flask:
    from flask_session import Session as FSession

    app = _flask(backend.name, services)
    cfg = app.config
    cfg["SESSION_KEY_PREFIX"] = key_prefix(services)
    if backend.storage == "redis":
        import redis

        cfg["SESSION_TYPE"] = "redis"
        cfg["SESSION_REDIS"] = redis.Redis.from_url(t.cast(str, services.redis_url))
    elif backend.storage == "filesystem":
        from cachelib import FileSystemCache

        # Flask-Session 0.8 deprecates its "filesystem" type in favour of cachelib's
        # FileSystemCache, which is what it uses underneath anyway.
        cfg["SESSION_TYPE"] = "cachelib"
        cfg["SESSION_CACHELIB"] = FileSystemCache(os.path.join(services.workdir, backend.name, "sessions"))
    elif backend.storage == "memcached":
        from pymemcache.client.base import Client

        cfg["SESSION_TYPE"] = "memcached"
        cfg["SESSION_MEMCACHED"] = Client(("127.0.0.1", t.cast(int, services.memcached_port)))
    elif backend.storage in ("sqlite", "postgresql"):
        from flask_sqlalchemy import SQLAlchemy

        if backend.storage == "sqlite":
            cfg["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{os.path.join(services.workdir, backend.name, 'fs.sqlite3')}"
            cfg["SESSION_SQLALCHEMY_TABLE"] = "sessions"
        else:
            cfg["SQLALCHEMY_DATABASE_URI"] = services.pg_url
            cfg["SESSION_SQLALCHEMY_TABLE"] = services.pg_tables()[1]
        cfg["SESSION_TYPE"] = "sqlalchemy"
        cfg["SESSION_SQLALCHEMY"] = SQLAlchemy(app)
    FSession(app)
    return app


def build(name: str, services: Services) -> Flask:
    """A fresh app for backend ``name``; raises if it cannot be built."""
    backend = BY_NAME[name]
    if backend.family == "floor":
        app = _flask(name, services)
        app.session_interface = NoSessionInterface()
        return app
    if backend.family == "cookie":
        app = _flask(name, services)
        app.session_interface = SecureCookieSessionInterface()
        return app
    if backend.family == "satchel":
        return _satchel(backend, services)
    return _flask_session(backend, services)


def close(app: Flask) -> None:
    """Release the app's store connections so nothing leaks between backends."""
    manager = app.extensions.get("satchel")
    if manager is not None:
        store = getattr(manager, "store", None)
        if store is not None:
            store.close()
    interface = app.session_interface
    client = getattr(interface, "client", None)
    if client is not None:
        for method in ("close", "disconnect_all"):
            fn = getattr(client, method, None)
            if callable(fn):
                fn()
                break
    sqla = app.extensions.get("sqlalchemy")
    if sqla is not None:
        with app.app_context():
            sqla.session.remove()
            for engine in sqla.engines.values():
                engine.dispose()
