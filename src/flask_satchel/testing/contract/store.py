"""The store contract, checked against the store itself: :class:`StoreContract`."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import typing as t
import uuid

import pytest

from ...errors import NotSupported
from ...stores.base import Change, LockingStore, Record, Store

__all__ = ["StoreContract"]

HOUR = 3600.0


def _record(now: float, user: str | None = None, **data: bytes) -> Record:
    return Record(data=data, created_at=now, last_seen=now, expires_at=now + HOUR, user=user)


def _change(now: float, set: dict[str, bytes] | None = None, removed: list[str] | None = None, **kw: t.Any) -> Change:
    return Change(set=set or {}, removed=removed or [], last_seen=now, expires_at=now + HOUR, **kw)


def _key(n: int = 0) -> str:
    return uuid.uuid4().hex if n == 0 else f"{n:032x}"


class StoreContract:
    """What every store must do, checked against the store itself."""

    #: True for stores whose records expire by themselves (Redis, Memcached):
    #: their ``cleanup()`` returns 0 and records past ``expires_at`` may linger
    #: until the server drops them.
    native_ttl = False
    #: False for stores that cannot list or count every session (Memcached).
    lists_everything = True
    #: False for stores whose locks die with their holder (``flock``) rather than lapse.
    lock_leases = True
    #: The coarsest lease a store can keep, in seconds (memcached expires in whole seconds).
    lease_resolution = 0.0

    @pytest.fixture
    def store(self) -> t.Iterator[Store]:
        raise NotImplementedError("provide a 'store' fixture with a fresh, empty store")

    def test_implements_protocol(self, store: Store) -> None:
        """The store has every method of the Store protocol."""
        assert isinstance(store, Store)

    def test_missing_key_loads_none(self, store: Store) -> None:
        """A key that was never created loads as None."""
        assert store.load(_key()) is None

    def test_create_then_load(self, store: Store) -> None:
        """A created record loads back with its data and metadata."""
        now = time.time()
        key = _key()
        record = Record(
            data={"a": b"\x01", "b": b"\xa1x"},
            created_at=now - 10,
            last_seen=now,
            expires_at=now + HOUR,
            permanent=True,
            user="alice",
            client={"ip": "127.0.0.1", "user_agent": "test"},
        )
        store.create(key, record)
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.data == record.data
        assert loaded.created_at == pytest.approx(record.created_at, abs=1e-3)
        assert loaded.last_seen == pytest.approx(record.last_seen, abs=1e-3)
        assert loaded.expires_at == pytest.approx(record.expires_at, abs=1)
        assert loaded.permanent is True
        assert loaded.user == "alice"
        assert loaded.client == {"ip": "127.0.0.1", "user_agent": "test"}

    def test_apply_merges_with_current_record(self, store: Store) -> None:
        """A change sets and removes only its own keys; others are kept."""
        now = time.time()
        key = _key()
        store.create(key, _record(now, a=b"1", b=b"2", c=b"3"))
        assert store.apply(key, _change(now, set={"b": b"20", "d": b"4"}, removed=["c"])) == 3
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.data == {"a": b"1", "b": b"20", "d": b"4"}

    def test_apply_updates_metadata(self, store: Store) -> None:
        """A change moves last_seen/expires_at and sets permanent and the user."""
        now = time.time()
        key = _key()
        store.create(key, _record(now - 100, a=b"1"))
        store.apply(key, _change(now, set={"u": b"x"}, permanent=True, user_changed=True, user="bob"))
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.last_seen == pytest.approx(now, abs=1e-3)
        assert loaded.expires_at == pytest.approx(now + HOUR, abs=1)
        assert loaded.created_at == pytest.approx(now - 100, abs=1e-3)
        assert (loaded.permanent, loaded.user) == (True, "bob")

    def test_apply_updates_client_when_given(self, store: Store) -> None:
        """A change with client details replaces them; one without keeps them."""
        now = time.time()
        key = _key()
        store.create(
            key, Record(data={"a": b"1"}, created_at=now, last_seen=now, expires_at=now + HOUR, client={"ip": "1"})
        )
        store.apply(key, _change(now, set={"a": b"2"}))
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.client == {"ip": "1"}
        store.apply(key, _change(now, client={"ip": "2", "user_agent": "b"}))
        loaded = store.load(key)
        assert loaded is not None
        assert (loaded.client, loaded.data) == ({"ip": "2", "user_agent": "b"}, {"a": b"2"})

    def test_apply_keeps_user_unless_changed(self, store: Store) -> None:
        """A change that does not touch the user keeps the record's user."""
        now = time.time()
        key = _key()
        store.create(key, _record(now, user="carol", a=b"1"))
        store.apply(key, _change(now, set={"a": b"2"}))
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.user == "carol"
        store.apply(key, _change(now, set={"a": b"3"}, user_changed=True, user=None))
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.user is None

    def test_apply_to_missing_record_writes_nothing(self, store: Store) -> None:
        """A change to a record that is gone returns None and never resurrects it."""
        now = time.time()
        key = _key()
        store.create(key, _record(now, a=b"1"))
        assert store.delete(key) is True
        assert store.apply(key, _change(now, set={"a": b"2"})) is None
        assert store.load(key) is None

    def test_apply_that_empties_deletes(self, store: Store) -> None:
        """A change that leaves no key deletes the record and returns 0."""
        now = time.time()
        key = _key()
        store.create(key, _record(now, a=b"1"))
        assert store.apply(key, _change(now, removed=["a"])) == 0
        assert store.load(key) is None

    def test_touch(self, store: Store) -> None:
        """touch moves the expiry without changing data; False when the record is gone."""
        now = time.time()
        key = _key()
        store.create(key, _record(now - 50, a=b"1"))
        assert store.touch(key, now, now + 2 * HOUR) is True
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.data == {"a": b"1"}
        assert loaded.last_seen == pytest.approx(now, abs=1e-3)
        assert loaded.expires_at == pytest.approx(now + 2 * HOUR, abs=1)
        assert store.touch(_key(), now, now + HOUR) is False

    def test_delete(self, store: Store) -> None:
        """delete removes a record once; a second delete reports nothing there."""
        now = time.time()
        key = _key()
        store.create(key, _record(now, a=b"1"))
        assert store.delete(key) is True
        assert store.load(key) is None
        assert store.delete(key) is False

    def test_sessions_of_user(self, store: Store) -> None:
        """sessions(user=…) lists exactly that user's live records, following user changes."""
        now = time.time()
        keys = [_key() for _ in range(4)]
        store.create(keys[0], _record(now, user="dave", a=b"1"))
        store.create(keys[1], _record(now, user="dave", a=b"1"))
        store.create(keys[2], _record(now, user="erin", a=b"1"))
        store.create(keys[3], _record(now, a=b"1"))
        assert sorted(k for k, _ in store.sessions(now, "dave")) == sorted(keys[:2])
        store.apply(keys[3], _change(now, set={"u": b"1"}, user_changed=True, user="dave"))
        store.apply(keys[0], _change(now, set={"u": b"1"}, user_changed=True, user="erin"))
        store.delete(keys[1])
        assert [k for k, _ in store.sessions(now, "dave")] == [keys[3]]
        assert sorted(k for k, _ in store.sessions(now, "erin")) == sorted([keys[0], keys[2]])
        assert all(r.user == "erin" for _, r in store.sessions(now, "erin"))
        assert store.sessions(now, "nobody") == []

    def test_sessions_leave_out_expired(self, store: Store) -> None:
        """Records past expires_at are not listed or counted."""
        now = time.time()
        live, old = _key(), _key()
        store.create(live, Record(data={"a": b"1"}, created_at=now, last_seen=now, expires_at=now + 2 * HOUR, user="f"))
        store.create(old, _record(now, user="f", a=b"1"))
        later = now + 1.5 * HOUR
        assert [k for k, _ in store.sessions(later, "f")] == [live]
        if self.lists_everything:
            assert [k for k, _ in store.sessions(later)] == [live]
            assert store.count(later) == 1

    def test_cleanup_and_count(self, store: Store) -> None:
        """cleanup removes expired records only; count counts live ones (or says it cannot)."""
        now = time.time()
        if not self.lists_everything:
            with pytest.raises(NotSupported):
                store.count(now)
            with pytest.raises(NotSupported):
                store.sessions(now)
            assert store.cleanup(now) == 0
            return
        for _ in range(3):
            store.create(_key(), _record(now, a=b"1"))
        for _ in range(2):
            store.create(_key(), Record(data={"a": b"1"}, created_at=now, last_seen=now, expires_at=now + 3 * HOUR))
        assert store.count(now) == 5
        later = now + 2 * HOUR
        removed = store.cleanup(later)
        assert removed == (0 if self.native_ttl else 3)
        assert store.count(later) == 2
        assert len(store.sessions(later)) == 2

    def test_lock_is_exclusive(self, store: Store) -> None:
        """A session lock has one holder; a wrong token cannot release it; released, it can be taken again."""
        if not isinstance(store, LockingStore):
            pytest.skip(f"{type(store).__name__} does not lock sessions")
        key = _key()
        assert store.lock(key, "a", 30) is True
        assert store.lock(key, "b", 30) is False
        assert store.unlock(key, "b") is False
        assert store.lock(_key(), "b", 30) is True  # other sessions are not blocked
        assert store.unlock(key, "a") is True
        assert store.lock(key, "b", 30) is True
        assert store.unlock(key, "b") is True

    def test_lapsed_lock_can_be_taken(self, store: Store) -> None:
        """A lock whose holder never released it lapses after its lease, or dies with it (no deadlock after a crash)."""
        if not isinstance(store, LockingStore):
            pytest.skip(f"{type(store).__name__} does not lock sessions")
        key = _key()
        if not self.lock_leases:
            assert store.lock(key, "crashed", 0.2) is True
            store.close()  # what the holder's process exiting does to its locks
            assert store.lock(key, "next", 30) is True
            assert store.unlock(key, "next") is True
            return
        lease = 0.2 + self.lease_resolution
        assert store.lock(key, "crashed", lease) is True
        time.sleep(lease + self.lease_resolution + 0.1)
        assert store.lock(key, "next", 30) is True
        assert store.unlock(key, "crashed") is False
        assert store.unlock(key, "next") is True

    def test_late_change_never_shortens_the_session(self, store: Store) -> None:
        """A change from a request that read the record before another one refreshed it keeps the newer expiry."""
        now = time.time()
        key = _key()
        store.create(key, _record(now - 100, a=b"1"))
        assert store.load(key) is not None  # this request's read, before the refresh below
        assert store.touch(key, now, now + 1200)  # another request refreshed the session
        late = Change(set={"b": b"2"}, last_seen=now - 100, expires_at=now + 3500)
        assert store.apply(key, late) == 2
        loaded = store.load(key)
        assert loaded is not None
        assert (loaded.last_seen, loaded.expires_at) == (now, now + 1200)
        assert loaded.data == {"a": b"1", "b": b"2"}

    def test_concurrent_changes_all_survive(self, store: Store) -> None:
        """32 overlapping changes to different keys of one record are all kept."""
        now = time.time()
        key = _key()
        store.create(key, _record(now, base=b"0"))
        barrier = threading.Barrier(32)

        def work(i: int) -> int | None:
            barrier.wait()
            return store.apply(key, _change(now, set={f"k{i}": str(i).encode()}))

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            results = list(pool.map(work, range(32)))
        assert None not in results
        loaded = store.load(key)
        assert loaded is not None
        assert loaded.data == {"base": b"0", **{f"k{i}": str(i).encode() for i in range(32)}}
