"""OpenTelemetry: a span and a duration for each store operation, and counts of the sessions' lifecycle.

``Session(app)`` installs it when ``opentelemetry-api`` is importable (the
``otel`` extra); without it nothing here is imported. Spans and metrics go
wherever the app's OpenTelemetry SDK sends them (live sessions too, for the
stores that count in one query: memory, SQLite, SQL). With no SDK
configured the store is called directly, with neither span nor measurement.

Each store operation a request makes (load, change, create, touch, delete,
lock, unlock) is a CLIENT span named and attributed after OpenTelemetry's
database conventions, a child of the current span (the request's, when an
instrumentation such as opentelemetry-instrumentation-flask made one). Its
attributes name the store (:meth:`~flask_satchel.stores.base.Described.describe`)
and the operation, never a session id, a store key or a value. redis-py's
and SQLAlchemy's own instrumentations, if installed, see the commands and
statements underneath as children of these spans.
"""

from __future__ import annotations

import os
import time
import typing as t
import weakref

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, StatusCode

from . import signals
from .errors import SatchelError, StoreUnavailable
from .stores.base import Described, HasSchema, LockingStore

if t.TYPE_CHECKING:
    from flask import Flask

    from .stores.base import Change, Record, Store

#: Store method to the operation's name in spans and metrics.
OPERATIONS = {
    "load": "load",
    "apply": "change",
    "create": "create",
    "touch": "touch",
    "delete": "delete",
    "lock": "lock",
    "unlock": "unlock",
}

_SCOPE = "flask_satchel"
_API_PACKAGES = ("opentelemetry.trace", "opentelemetry.metrics")
#: The lifecycle signals, each counted as ``flask_satchel.sessions.<name>``.
_LIFECYCLE = {
    "created": signals.session_created,
    "destroyed": signals.session_destroyed,
    "revoked": signals.session_revoked,
    "expired": signals.session_expired,
}
#: The bucket boundaries, in seconds, the database conventions advise for db.client.operation.duration.
_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


class _Instruments:
    """The meter's instruments, made once: a second instrument of the same name would be ignored."""

    def __init__(self) -> None:
        meter = metrics.get_meter(_SCOPE)
        self.duration = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of session store operations.",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self.unavailable = meter.create_counter(
            "flask_satchel.store.unavailable", unit="{error}", description="Store operations that failed: a 503."
        )
        self.lifecycle = {
            what: meter.create_counter(
                f"flask_satchel.sessions.{what}", unit="{session}", description=f"Sessions {what}."
            )
            for what in _LIFECYCLE
        }
        #: Every traced store; an app's store leaves with it.
        self.stores: weakref.WeakSet[TracedStore] = weakref.WeakSet()
        meter.create_observable_gauge(
            "flask_satchel.sessions.live", [self._observe], unit="{session}", description="Live sessions."
        )

    def _observe(self, options: CallbackOptions) -> t.Iterable[Observation]:
        return [seen for seen in (store.live() for store in list(self.stores)) if seen is not None]


class TracedStore:
    """The app's store, with each operation traced and timed; anything else is the store's own.

    Attributes the store lacks are missing here too, so the capability
    checks (``LockingStore``, ``HasSchema``) answer as for the store itself.
    """

    def __init__(self, inner: Store) -> None:
        #: The store every call goes to.
        self.inner = inner
        described = inner.describe() if isinstance(inner, Described) else {"db.system": type(inner).__name__}
        system = str(described.get("db.system"))
        #: What names the store, on every span and measurement.
        self.attributes: dict[str, str | int] = {**described, "db.system.name": system}
        target = described.get("db.collection.name") or described.get("db.namespace") or system
        self._spans = {
            method: (f"{op} {target}", {**self.attributes, "db.operation.name": op})
            for method, op in OPERATIONS.items()
        }
        self._tracer = trace.get_tracer(_SCOPE)
        self._duration, self._unavailable = _INSTRUMENTS.duration, _INSTRUMENTS.unavailable
        self._closed = False
        # Only where a count is one query or one pass in memory: Redis and the
        # filesystem would read every session at each collection, memcached cannot count.
        self._counts = bool(getattr(inner, "counts_cheaply", False))
        #: Whether an SDK is set up, as :meth:`_decide` found at the first operation.
        self._on = False
        self._decided = False
        _INSTRUMENTS.stores.add(self)

    def live(self) -> Observation | None:
        """The count of live sessions, or None when the store is closed or cannot count cheaply or now."""
        if self._closed or not self._counts:
            return None
        try:
            return Observation(self.inner.count(time.time()), self.attributes)
        except SatchelError:  # the store is down: no reading, and the outage shows on the requests
            return None

    def _decide(self) -> bool:
        """At the first operation: trace if an SDK is set up, else step aside for good.

        The first operation comes after the app's start-up, gunicorn's
        ``post_fork`` included, where SDKs are set up. Without one, the
        store's own methods take the place of this object's, so a request
        pays nothing. The API's own providers (the no-op ones, and the
        proxies that wait for an SDK) are defined in its
        ``opentelemetry.trace`` and ``opentelemetry.metrics`` packages; an
        SDK's are defined elsewhere.
        """
        providers = (trace.get_tracer_provider(), metrics.get_meter_provider())
        self._on = any(not type(p).__module__.startswith(_API_PACKAGES) for p in providers)
        self._decided = True
        if not self._on:
            for method in OPERATIONS:
                if hasattr(self.inner, method):
                    setattr(self, method, getattr(self.inner, method))
        return self._on

    def _undecide(self) -> None:
        """Decide again at the next operation: in a forked worker, which may set up its own SDK."""
        for method in OPERATIONS:
            self.__dict__.pop(method, None)
        self._on = self._decided = False

    def _call(self, method: str, call: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
        # With no SDK, even the API's no-op spans and instruments cost far more
        # than an operation's telemetry is worth (bench/README.md): see _decide.
        if not (self._on or (not self._decided and self._decide())):
            return call(*args)
        name, attributes = self._spans[method]
        span = self._tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        start = time.perf_counter()
        try:
            if span.is_recording():
                with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                    return call(*args)
            return call(*args)
        except BaseException as e:
            # The type only: a message may name a path or a server, and the span needs neither.
            # Fully qualified, as redis.exceptions.ConnectionError is not the builtin ConnectionError.
            kind = type(e)
            error = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
            span.set_attribute("error.type", error)
            span.set_status(StatusCode.ERROR)
            attributes = {**attributes, "error.type": error}
            if isinstance(e, StoreUnavailable):
                self._unavailable.add(1, self.attributes)
            raise
        finally:
            span.end()
            self._duration.record(time.perf_counter() - start, attributes)

    def load(self, key: str) -> Record | None:
        return t.cast("Record | None", self._call("load", self.inner.load, key))

    def create(self, key: str, record: Record) -> None:
        self._call("create", self.inner.create, key, record)

    def apply(self, key: str, change: Change) -> int | None:
        return t.cast("int | None", self._call("apply", self.inner.apply, key, change))

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        return bool(self._call("touch", self.inner.touch, key, last_seen, expires_at))

    def delete(self, key: str) -> bool:
        return bool(self._call("delete", self.inner.delete, key))

    def sessions(self, now: float, user: str | None = None) -> list[tuple[str, Record]]:
        return self.inner.sessions(now, user)

    def cleanup(self, now: float) -> int:
        return self.inner.cleanup(now)

    def count(self, now: float) -> int:
        return self.inner.count(now)

    def close(self) -> None:
        self._closed = True
        self.inner.close()

    def __getattr__(self, name: str) -> t.Any:
        # What the Store protocol does not name (a SQL store's engine, say).
        # Capabilities are methods of the subclasses below, not this: from
        # Python 3.12, isinstance on a protocol does not see __getattr__.
        return getattr(self.inner, name)


class _Locking(TracedStore):
    """A traced store that can lock (``LockingStore``)."""

    def lock(self, key: str, token: str, lease: float) -> bool:
        return bool(self._call("lock", t.cast("LockingStore", self.inner).lock, key, token, lease))

    def unlock(self, key: str, token: str) -> bool:
        return bool(self._call("unlock", t.cast("LockingStore", self.inner).unlock, key, token))


class _Schema(TracedStore):
    """A traced store with a table to create (``HasSchema``)."""

    def create_table(self) -> None:
        t.cast("HasSchema", self.inner).create_table()


class _LockingSchema(_Locking, _Schema):
    pass


def traced(store: Store) -> TracedStore:
    """``store`` traced, with the capabilities it has and no others."""
    kinds = {(False, False): TracedStore, (True, False): _Locking, (False, True): _Schema, (True, True): _LockingSchema}
    return kinds[isinstance(store, LockingStore), isinstance(store, HasSchema)](store)


def count_lifecycle(app: Flask, attributes: t.Mapping[str, str | int]) -> None:
    """Count the app's sessions created, destroyed, revoked and expired, from the lifecycle signals."""
    for what, signal in _LIFECYCLE.items():

        def receiver(sender: Flask, *, _counter: t.Any = _INSTRUMENTS.lifecycle[what], **extra: t.Any) -> None:
            _counter.add(1, attributes)

        # The signal holds the receiver (weak=False), nothing else does; blinker drops it with the app.
        signal.connect(receiver, sender=app, weak=False)


def _after_fork() -> None:
    for store in list(_INSTRUMENTS.stores):
        store._undecide()


_INSTRUMENTS = _Instruments()
# A worker forked from a master that already served (gunicorn --preload) sets up
# its SDK in post_fork, as OpenTelemetry advises: it decides for itself.
os.register_at_fork(after_in_child=_after_fork)
