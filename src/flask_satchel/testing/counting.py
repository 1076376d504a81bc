"""A store wrapper that records each call, to check how much I/O a request does."""

from __future__ import annotations

import typing as t

from ..stores.base import Store

__all__ = ["CountingStore"]


class CountingStore:
    """Wraps a store and records the name of each method called on it.

    Put it in place of the app's store to assert what a request costs::

        interface = app.session_interface
        counting = CountingStore(interface.store)
        interface.store = counting
        client.get("/page")
        assert counting.calls == ["load"]
    """

    def __init__(self, inner: Store) -> None:
        #: The store every call is passed on to.
        self.inner = inner
        #: The names of the methods called, in order.
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> t.Any:
        method = getattr(self.inner, name)

        def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return call

    def writes(self) -> list[str]:
        """The calls that may change the store: everything but ``load``, ``sessions`` and ``count``."""
        return [c for c in self.calls if c not in ("load", "sessions", "count")]
