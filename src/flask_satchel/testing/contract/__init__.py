"""The contract test-suites, for Flask-Satchel's stores and for yours.

They are pytest test classes, so this module needs pytest: install
``flask-satchel[testing]``. Subclass one in a test module and provide one
fixture:

- :class:`StoreContract` checks a :class:`~flask_satchel.stores.base.Store`
  directly; provide ``store``, a fresh store with no records.
- :class:`AppContract` checks every session semantic of Flask-Satchel's
  contract through a real Flask app (:func:`flask_satchel.testing.make_app`);
  provide ``config``, the app config that selects the store (it must start
  with no sessions). Its base, :class:`SessionContract`, holds what a
  client-side store gives too.

Run them against the real server, never a mock of it::

    from flask_satchel.testing.contract import AppContract, StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self):
            store = MyStore(...)
            yield store
            store.close()

    class TestMyStoreApp(AppContract):
        @pytest.fixture
        def config(self):
            return {"SESSION_URL": "mystore://127.0.0.1:7000"}

A class attribute tells a suite what a store cannot do (``lists_everything``,
``native_ttl``, ``lock_leases``, ``lease_resolution``); the suite then checks
that the store says so instead of skipping the test.
"""

try:
    import pytest  # noqa: F401  (only to name the extra when it is missing)
except ImportError as exc:  # pragma: no cover - what a user without the extra sees
    raise ImportError(
        "flask_satchel.testing.contract holds pytest test classes and needs pytest: "
        "pip install 'flask-satchel[testing]'"
    ) from exc

from .app import AppContract as AppContract
from .session import SessionContract as SessionContract
from .store import StoreContract as StoreContract

__all__ = ["AppContract", "SessionContract", "StoreContract"]
