"""The engine the SQL store runs on: one made from ``SESSION_URL``, or the app's own.

For engines it creates from ``SESSION_URL``, the store bounds every wait on
the database by ``SESSION_STORE_TIMEOUT``: the server cancels slow statements
(``statement_timeout``), and the client gives up on a server that does not
answer at all (a frozen host, a dead link), where a server-side limit cannot
help. Connecting is bounded too, in whole seconds and at least 2 on
PostgreSQL (libpq's rule). An engine handed over in ``SESSION_SQLALCHEMY`` is
used as configured: set its timeouts there.

Engines made from ``SESSION_URL`` run in autocommit mode
(``isolation_level="AUTOCOMMIT"``): a single statement is its own
transaction, so a read costs no ``BEGIN`` before it and no ``ROLLBACK``
after it (``skip_autocommit_rollback``), and the locked change opens its
transaction explicitly. They do not ping on every checkout either: a pooled
connection the server has dropped fails at once, SQLAlchemy invalidates it
(``DBAPIError.connection_invalidated``), and the store retries the
statement once on a fresh one.
"""

from __future__ import annotations

import math
import time
import typing as t

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ...errors import ConfigError

if t.TYPE_CHECKING:
    from urllib.parse import SplitResult

__all__ = ["engine_of", "make_engine"]

#: Bare URL schemes mapped to the drivers Flask-Satchel's extras install.
DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def bounded_psycopg_connection() -> type[t.Any]:
    """A psycopg connection class whose every wait on the server is bounded.

    psycopg has no client-side statement timeout: ``statement_timeout`` is
    enforced by the server, which cannot enforce anything while it is frozen
    or unreachable behind a silent network. psycopg funnels every exchange
    through ``Connection.wait``, which takes a timeout (psycopg 3.3, the
    oldest the ``postgresql`` extra installs). A wait that ends with an
    ``OperationalError`` carrying no SQLSTATE (nothing came back from the
    server) once the time is up is that timeout: the connection, in an
    unknown state, is closed, and the error becomes the public
    ``ConnectionTimeout``. SQLAlchemy sees a closed connection as a
    disconnect, and invalidates it.
    """
    import psycopg

    class BoundedConnection(psycopg.Connection[t.Any]):
        #: Seconds to wait for any answer from the server.
        answer_timeout: float = 2.0

        def wait(self, gen: t.Any, interval: float | None = None, timeout: float | None = None) -> t.Any:
            limit = self.answer_timeout if timeout is None else timeout
            started = time.monotonic()
            try:
                if interval is None:
                    return super().wait(gen, timeout=limit)
                return super().wait(gen, interval, limit)
            except psycopg.OperationalError as e:
                if e.sqlstate is not None or time.monotonic() - started < limit:
                    raise  # the server's own answer, or a connection lost before the time was up
                self.close()
                raise psycopg.errors.ConnectionTimeout(
                    f"no answer from the database server within {limit:g} s"
                ) from None

    return BoundedConnection


def _psycopg_args(sa_url: sa.URL, timeout: float) -> tuple[sa.URL, dict[str, t.Any]]:
    """The URL (without what psycopg cannot take as text) and psycopg's bounded ``connect_args``."""
    query = sa_url.query
    # libpq counts whole seconds, at least 2.
    connect_args: dict[str, t.Any] = {"connect_timeout": max(2, math.ceil(timeout))}
    # Server settings in the URL's ``options`` are kept, after this one:
    # PostgreSQL applies them in order, so the URL still wins for what it
    # names (``?options=-c synchronous_commit=off``, say) without losing the
    # timeout.
    url_options = query.get("options", ())
    connect_args["options"] = " ".join(
        [f"-c statement_timeout={math.ceil(timeout * 1000)}"]
        + ([url_options] if isinstance(url_options, str) else list(url_options))
    )
    # Prepare each statement on its first run rather than its fifth:
    # preparing costs psycopg one extra round trip either way, once per
    # statement and pooled connection, and from then on the server skips
    # parsing and planning. The store runs a dozen statements, all hot.
    connect_args["prepare_threshold"] = 0
    if "prepare_threshold" in query:
        # psycopg wants a number (or None, never prepare); a URL brings text.
        threshold = str(query["prepare_threshold"])
        sa_url = sa_url.difference_update_query(["prepare_threshold"])
        try:
            connect_args["prepare_threshold"] = None if threshold.lower() == "none" else int(threshold)
        except ValueError:
            raise ConfigError(
                "SESSION_URL", f"prepare_threshold must be a whole number or 'none', not {threshold!r}"
            ) from None
    return sa_url, connect_args


def make_engine(url: SplitResult, timeout: float) -> sa.Engine:
    """An engine for ``SESSION_URL`` with every wait bounded by ``timeout`` seconds."""
    sa_url = sa.make_url(url.geturl())
    scheme = sa_url.drivername
    sa_url = sa_url.set(drivername=DRIVERS.get(scheme, scheme))
    backend, driver = sa_url.get_backend_name(), sa_url.get_driver_name()
    connection_class: type[t.Any] | None = None
    if backend == "postgresql" and driver == "psycopg":
        sa_url, connect_args = _psycopg_args(sa_url, timeout)
        connection_class = bounded_psycopg_connection()
    elif backend in ("mysql", "mariadb") and driver == "pymysql":
        connect_args = {"connect_timeout": timeout, "read_timeout": timeout, "write_timeout": timeout}
    else:
        raise ConfigError(
            "SESSION_URL",
            f"unsupported SQL driver {scheme!r}: use postgresql+psycopg:// or mysql+pymysql:// (mariadb+pymysql://),"
            " or hand an Engine to SESSION_SQLALCHEMY",
        )
    for name in list(connect_args):
        if name in sa_url.query and name != "options":  # what the URL says explicitly wins
            del connect_args[name]
    try:
        # Autocommit set once per connection at connect time, never switched
        # per checkout: PyMySQL switches with a query, which fails on a
        # broken connection while it is being returned to the pool.
        engine = sa.create_engine(
            sa_url,
            isolation_level="AUTOCOMMIT",
            skip_autocommit_rollback=True,
            pool_timeout=timeout,
            connect_args=connect_args,
        )
    except ModuleNotFoundError:
        raise  # a driver not installed: ``open_store`` names the extra that installs it
    except (ImportError, sa_exc.ArgumentError) as e:
        raise ConfigError("SESSION_URL", f"cannot use {sa_url.render_as_string()!r}: {e}") from None

    if connection_class is not None:
        bounded = connection_class

        @sa.event.listens_for(engine, "do_connect")
        def connect(dialect: t.Any, record: t.Any, cargs: t.Any, cparams: dict[str, t.Any]) -> t.Any:
            conn = bounded.connect(*cargs, **cparams)
            conn.answer_timeout = timeout
            return conn

    return engine


def engine_of(client: t.Any) -> sa.Engine:
    """The engine in ``SESSION_SQLALCHEMY``: an Engine, or a Flask-SQLAlchemy ``db``'s engine."""
    if isinstance(client, sa.Engine):
        return client
    if type(client).__module__.split(".")[0] == "flask_sqlalchemy":
        try:
            engine = client.engine  # the current app's default engine; needs an app context
        except (RuntimeError, KeyError) as e:
            raise ConfigError(
                "SESSION_SQLALCHEMY", f"cannot get the engine of {client!r} ({e}); call db.init_app(app) first"
            ) from None
        if isinstance(engine, sa.Engine):
            return engine
    raise ConfigError(
        "SESSION_SQLALCHEMY",
        f"expected an SQLAlchemy Engine or a Flask-SQLAlchemy db object, got {type(client).__name__}"
        " (async engines and connections are not supported)",
    )
