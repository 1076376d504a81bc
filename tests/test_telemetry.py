"""OpenTelemetry: a CLIENT span and a duration per store operation, lifecycle counters, on every store."""

from __future__ import annotations

import inspect
import socket
import subprocess
import sys
import typing as t
import uuid

import msgspec
import pytest
from conftest import MemcachedServer, value_app
from flask import Flask, session
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from flask_satchel.stores.base import HasSchema, LockingStore

_EXPORTER = InMemorySpanExporter()
_READER = InMemoryMetricReader()
_installed: list[bool] = []


class Telemetry(t.NamedTuple):
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def store_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.kind is SpanKind.CLIENT]

    def points(self, name: str) -> list[t.Any]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def total(self, name: str) -> int:
        return sum(int(p.value) for p in self.points(name))


@pytest.fixture
def otel() -> Telemetry:
    """The SDK's in-memory exporters, as the process's providers (they can be set once per process)."""
    if not _installed:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
        _installed.append(True)
    _EXPORTER.clear()
    _READER.get_metrics_data()  # what earlier tests recorded is kept; tests compare before and after
    return Telemetry(_EXPORTER, _READER)


def _up(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


# The shared servers by their port; memcached is a private one (its fixture), so None.
STORES: dict[str, tuple[dict[str, t.Any], int | None]] = {
    "memory": ({"SESSION_TYPE": "memory"}, None),
    "sqlite": ({}, None),
    "filesystem": ({"SESSION_TYPE": "filesystem"}, None),
    "redis": ({"SESSION_URL": "redis://127.0.0.1:6379/0"}, 6379),
    "postgresql": ({"SESSION_URL": "postgresql+psycopg://postgres@127.0.0.1/test"}, 5432),
    "memcached": ({}, None),
}
SYSTEMS = {"memory": "memory", "sqlite": "sqlite", "filesystem": "filesystem", "redis": "redis"}
SYSTEMS |= {"postgresql": "postgresql", "memcached": "memcached"}


@pytest.fixture(params=list(STORES))
def app(request: pytest.FixtureRequest, tmp_path: t.Any, otel: Telemetry, need: t.Any) -> t.Iterator[Flask]:
    config, port = STORES[request.param]
    if port is not None:
        need(_up(port), f"no server on 127.0.0.1:{port}")
    if request.param == "memcached":
        server: MemcachedServer = request.getfixturevalue("memcached")
        config, port = {"SESSION_URL": server.url}, server.port
    tag = uuid.uuid4().hex[:8]
    app = value_app(
        tmp_path,
        SECRET_KEY="k",
        SESSION_KEY_PREFIX=f"otel{tag}:",
        SESSION_SQLALCHEMY_TABLE=f"otel_{tag}",
        SESSION_FILE_DIR=str(tmp_path / "files"),
        SESSION_REFRESH_INTERVAL=3600,
        **config,
    )
    app.config["store_name"] = request.param
    app.config["store_port"] = port

    @app.get("/destroy")
    def destroy() -> str:
        session.destroy()  # type: ignore[attr-defined]
        return "ok"

    yield app
    store = app.session_interface.store  # type: ignore[attr-defined]
    if isinstance(store, HasSchema):
        store.inner.metadata.drop_all(store.inner.engine)  # type: ignore[attr-defined]
    store.close()


def _ops(otel: Telemetry) -> list[str]:
    return [str(s.attributes["db.operation.name"]) for s in otel.store_spans()]  # type: ignore[index]


def test_each_store_operation_is_a_client_span(app: Flask, otel: Telemetry) -> None:
    """A new session is one create; a read-only request one load; a change a load and a change; destroy a delete."""
    client = app.test_client()
    assert client.get("/set/secret-value").status_code == 200
    assert _ops(otel) == ["create"]
    otel.spans.clear()
    assert client.get("/get").text == "'secret-value'"
    assert _ops(otel) == ["load"]
    otel.spans.clear()
    client.get("/set/other-value")
    assert _ops(otel) == ["load", "change"]
    otel.spans.clear()
    client.get("/destroy")
    assert _ops(otel)[-1] == "delete"


def test_spans_follow_the_database_conventions(app: Flask, otel: Telemetry) -> None:
    """Span names are "{operation} {target}"; db.system names the store; a network store names its server."""
    client = app.test_client()
    client.get("/set/x")
    client.get("/get")
    name = app.config["store_name"]
    load = next(s for s in otel.store_spans() if s.attributes and s.attributes["db.operation.name"] == "load")
    attributes = dict(load.attributes or {})
    assert attributes["db.system"] == SYSTEMS[name]
    assert attributes["db.system.name"] == SYSTEMS[name]
    assert load.name.startswith("load ")
    if name in ("redis", "postgresql", "memcached"):
        assert attributes["server.address"] == "127.0.0.1"
        # The conventions leave out a DBMS's default port (the PostgreSQL URL names none).
        assert attributes.get("server.port", 5432) == app.config["store_port"]
    assert load.status.status_code is StatusCode.UNSET


def test_no_sid_cookie_or_value_in_any_attribute(app: Flask, otel: Telemetry) -> None:
    """Spans carry neither the session id, nor the cookie, nor the store key, nor a value."""
    client = app.test_client()
    response = client.get("/set/secret-value")
    cookie = response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    client.get("/get")
    with app.test_request_context(headers={"Cookie": f"session={cookie}"}):
        sid, handle = session.sid, session.handle  # type: ignore[attr-defined]
    secrets = [sid, cookie, handle, "secret-value"]
    for span in otel.spans.get_finished_spans():
        for value in [span.name, *(str(v) for v in (span.attributes or {}).values())]:
            assert not any(secret in value for secret in secrets), (span.name, value)


def test_a_store_span_is_a_child_of_the_request_span(app: Flask, otel: Telemetry) -> None:
    """With a span current (the request's, from an instrumentation), store spans are its children."""
    client = app.test_client()
    client.get("/set/x")
    otel.spans.clear()
    with trace.get_tracer("test").start_as_current_span("GET /get") as request_span:
        client.get("/get")
    (load,) = otel.store_spans()
    assert load.parent is not None
    assert load.parent.span_id == request_span.get_span_context().span_id


def test_durations_are_a_histogram_by_store_and_operation(app: Flask, otel: Telemetry) -> None:
    """db.client.operation.duration has a point for the store's loads, in seconds."""
    client = app.test_client()
    client.get("/set/x")
    client.get("/get")
    system = SYSTEMS[app.config["store_name"]]
    points = [
        p
        for p in otel.points("db.client.operation.duration")
        if p.attributes["db.system"] == system and p.attributes["db.operation.name"] == "load"
    ]
    assert points
    assert sum(p.count for p in points) >= 1
    assert 0 < max(p.max for p in points) < 10
    # The buckets the database conventions advise, not the SDK's default (0, 5, 10, 25, ...: milliseconds).
    assert {tuple(p.explicit_bounds) for p in points} == {(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10)}


def test_lifecycle_counters(app: Flask, otel: Telemetry) -> None:
    """Sessions created and destroyed are counted for the app's store."""
    created, destroyed = otel.total("flask_satchel.sessions.created"), otel.total("flask_satchel.sessions.destroyed")
    client = app.test_client()
    client.get("/set/x")
    client.get("/destroy")
    assert otel.total("flask_satchel.sessions.created") == created + 1
    assert otel.total("flask_satchel.sessions.destroyed") == destroyed + 1


def test_capabilities_are_the_stores_own(app: Flask) -> None:
    """The traced store is a LockingStore or a HasSchema exactly when the store itself is one."""
    store = app.session_interface.store  # type: ignore[attr-defined]
    assert isinstance(store, LockingStore) is isinstance(store.inner, LockingStore)
    assert isinstance(store, HasSchema) is isinstance(store.inner, HasSchema)
    assert isinstance(store, HasSchema) is (app.config["store_name"] == "postgresql")
    # As Python 3.12's isinstance on a protocol looks: defined on the class, not found by __getattr__.
    for name, protocol in (("lock", LockingStore), ("create_table", HasSchema)):
        assert (inspect.getattr_static(store, name, None) is not None) is isinstance(store.inner, protocol)


def test_locks_are_spans(tmp_path: t.Any, otel: Telemetry) -> None:
    """With SESSION_LOCKING, a request's lock and unlock are spans too."""
    app = value_app(tmp_path, SECRET_KEY="k", SESSION_LOCKING=True)
    client = app.test_client()
    client.get("/set/x")
    otel.spans.clear()
    client.get("/get")
    assert _ops(otel) == ["lock", "load", "unlock"]


def test_an_unavailable_store_is_counted_and_marked(tmp_path: t.Any, otel: Telemetry) -> None:
    """A store that cannot answer: the 503, an ERROR span with error.type, one more on the unavailable counter."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    app = value_app(tmp_path, SECRET_KEY="k", SESSION_URL=f"redis://127.0.0.1:{port}/0", SESSION_STORE_TIMEOUT=0.5)
    before = otel.total("flask_satchel.store.unavailable")
    client = app.test_client()
    client.set_cookie("session", "x" * 43)
    assert client.get("/get").status_code == 503
    (load,) = otel.store_spans()
    assert load.status.status_code is StatusCode.ERROR
    assert (load.attributes or {})["error.type"] == "flask_satchel.errors.StoreUnavailable"
    assert otel.total("flask_satchel.store.unavailable") == before + 1


def _fresh_process(tmp_path: t.Any, before: str, after: str) -> list[str]:
    """What a new interpreter prints: ``before``, an app on SQLite that serves one request, then ``after``."""
    code = f"""
import sys
{before}
from flask import Flask, session
from flask_satchel import Session
app = Flask("x", instance_path={str(tmp_path)!r})
app.secret_key = "k"
Session(app)
@app.get("/")
def index():
    session["a"] = 1
    return "ok"
store = app.session_interface.store
assert app.test_client().get("/").status_code == 200
{after}
"""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_nothing_happens_without_opentelemetry(tmp_path: t.Any) -> None:
    """Without opentelemetry installed, Session(app) works and the store is not wrapped."""
    out = _fresh_process(
        tmp_path,
        'sys.modules["opentelemetry"] = None',
        'print(type(store).__name__, "opentelemetry.trace" in sys.modules)',
    )
    assert out == ["SQLiteStore", "False"]


def test_live_sessions_where_the_store_counts_in_one_query(app: Flask, otel: Telemetry) -> None:
    """flask_satchel.sessions.live is the store's count on memory, SQLite and SQL, and absent elsewhere."""
    for value in ("a", "b", "c"):
        app.test_client().get(f"/set/{value}")
    system = SYSTEMS[app.config["store_name"]]
    live = [p.value for p in otel.points("flask_satchel.sessions.live") if p.attributes["db.system"] == system]
    if app.config["store_name"] in ("memory", "sqlite", "postgresql"):
        assert 3 in live  # other apps' stores of the same system are other points
    else:
        assert live == []


def test_without_an_sdk_the_store_steps_aside(tmp_path: t.Any) -> None:
    """With the API installed and no SDK, the first operation puts the store's own methods in place."""
    out = _fresh_process(
        tmp_path,
        "from flask_satchel.telemetry import TracedStore",
        "print(isinstance(store, TracedStore), store.load == store.inner.load, store.create == store.inner.create)",
    )
    assert out == ["True", "True", "True"]


def test_a_forked_worker_decides_again(tmp_path: t.Any) -> None:
    """A worker forked after the master served with no SDK (gunicorn --preload) traces once it sets one up."""
    out = _fresh_process(
        tmp_path,
        "import os",
        """
pid = os.fork()
if pid == 0:  # the worker: an SDK, as in gunicorn's post_fork, then a request
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    app.test_client().get("/")
    print("worker", *[span.name.split()[0] for span in exporter.get_finished_spans()], flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print("master", store.load == store.inner.load)
""",
    )
    assert out == ["worker", "create", "master", "True"]


def test_revoked_and_expired_are_counted(tmp_path: t.Any, otel: Telemetry) -> None:
    """A session the manager revokes, and one that comes back past its idle timeout, are counted."""
    app = value_app(tmp_path, SECRET_KEY="k", SESSION_TYPE="memory")
    revoked, expired = otel.total("flask_satchel.sessions.revoked"), otel.total("flask_satchel.sessions.expired")
    client = app.test_client()
    client.get("/set/x")
    manager = app.extensions["satchel"]
    (info,) = manager.sessions()
    assert manager.revoke(info.handle)
    assert otel.total("flask_satchel.sessions.revoked") == revoked + 1
    other = app.test_client()
    other.get("/set/y")
    store = app.session_interface.store  # type: ignore[attr-defined]
    ((key, record),) = store.sessions(0)
    # Last seen at the epoch: past the idle timeout when the next request reads it.
    stale = msgspec.structs.replace(record, last_seen=0.0)
    store.delete(key)
    store.create(key, stale)
    assert other.get("/get").text == "None"
    assert otel.total("flask_satchel.sessions.expired") == expired + 1
