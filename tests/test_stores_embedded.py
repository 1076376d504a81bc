"""The store contract and the app contract on the three embedded stores."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import sys
import threading
import time
import typing as t

import pytest

from flask_satchel.errors import StoreUnavailable
from flask_satchel.stores.base import Change, Record
from flask_satchel.stores.filesystem import FileSystemStore, files
from flask_satchel.stores.memory import MemoryStore
from flask_satchel.stores.sqlite import SQLiteStore
from flask_satchel.testing.contract import AppContract, StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: t.Any) -> t.Iterator[SQLiteStore]:
        store = SQLiteStore(str(tmp_path / "sessions.sqlite3"))
        yield store
        store.close()


class TestFileSystemStore(StoreContract):
    lock_leases = False  # flock: the kernel releases it when the holder dies

    @pytest.fixture
    def store(self, tmp_path: t.Any) -> FileSystemStore:
        return FileSystemStore(str(tmp_path / "sessions"))


class TestMemoryApp(AppContract):
    @pytest.fixture
    def config(self) -> dict[str, t.Any]:
        return {"SESSION_TYPE": "memory"}


class TestSQLiteApp(AppContract):
    @pytest.fixture
    def config(self) -> dict[str, t.Any]:
        return {}  # the default


class TestFileSystemApp(AppContract):
    @pytest.fixture
    def config(self, tmp_path: t.Any) -> dict[str, t.Any]:
        return {"SESSION_TYPE": "filesystem", "SESSION_FILE_DIR": str(tmp_path / "files")}


# The filesystem store's hot path ---------------------------------------------------


def _file_events(action: t.Callable[[], t.Any]) -> list[str]:
    """The files ``action`` opens, replaces or removes, as audit events say (one list per thread)."""
    events: list[str] = []
    thread = threading.get_ident()

    def hook(event: str, args: tuple[t.Any, ...]) -> None:
        if recording and threading.get_ident() == thread and event in ("open", "os.rename", "os.remove"):
            events.append(event)

    recording = False
    sys.addaudithook(hook)  # hooks cannot be removed: this one is switched off instead
    recording = True
    try:
        action()
    finally:
        recording = False
    return events


def _one_record(tmp_path: t.Any, key: str, data: dict[str, bytes]) -> tuple[FileSystemStore, float]:
    """A filesystem store holding one live record under ``key``, and the time it was made."""
    store = FileSystemStore(str(tmp_path))
    now = time.time()
    store.create(key, Record(data=data, created_at=now, last_seen=now, expires_at=now + 3600))
    return store, now


@pytest.mark.parametrize("meanwhile", ["replaced", "deleted"])
def test_filesystem_change_waiting_on_the_lock_follows_the_path(tmp_path: t.Any, meanwhile: str) -> None:
    """A change that waited on the lock of a file since renamed over or deleted goes to what the path names now."""
    key = "cd" * 16
    store, now = _one_record(tmp_path, key, {"a": b"old"})
    path = store._path(key)
    holder = os.open(path, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another writer, mid-change
    results: list[int | None] = []
    waiter = threading.Thread(
        target=lambda: results.append(store.apply(key, Change(set={"b": b"2"}, last_seen=now, expires_at=now + 60)))
    )
    waiter.start()
    time.sleep(0.1)  # the change is now waiting on the lock of the old file
    assert waiter.is_alive()
    if meanwhile == "replaced":
        other = FileSystemStore(str(tmp_path / "other"))
        other.create(key, Record(data={"a": b"new"}, created_at=now, last_seen=now, expires_at=now + 60))
        os.replace(other._path(key), path)
    else:
        os.unlink(path)
    os.close(holder)  # releases the old file's lock
    waiter.join(5)
    record = store.load(key)
    if meanwhile == "replaced":
        assert results == [2]
        assert record is not None
        assert record.data == {"a": b"new", "b": b"2"}
    else:
        assert results == [None]
        assert record is None
        assert not os.path.exists(path)


def test_filesystem_change_replaces_the_file(tmp_path: t.Any) -> None:
    """A change reads the locked record and renames a whole new file over it: a killed writer tears nothing."""
    key = "ab" * 16
    store, now = _one_record(tmp_path, key, {"a": b"1" * 500})
    path = store._path(key)
    inode = os.stat(path).st_ino
    assert _file_events(lambda: store.load(key)) == ["open"]
    change = Change(set={"b": b"2"}, last_seen=now, expires_at=now + 3600)
    # The record, then its replacement: a temporary file renamed over it.
    assert _file_events(lambda: store.apply(key, change)) == ["open", "open", "os.rename"]
    assert os.stat(path).st_ino != inode
    shrink = Change(set={}, removed=["a"], last_seen=now, expires_at=now + 7200)
    assert store.apply(key, shrink) == 1
    record = store.load(key)
    assert record is not None
    assert record.data == {"b": b"2"}
    assert os.stat(path).st_size == len(files.frame(record)) < 500
    assert os.stat(path).st_mtime == pytest.approx(now + 7200, abs=1e-3)
    assert os.listdir(os.path.dirname(path)) == [key]  # no temporary file left


def test_filesystem_damaged_record_is_refused(tmp_path: t.Any) -> None:
    """A record whose checksum fails (a power cut mid-write) is unreadable, never misread, and no change revives it."""
    key = "cd" * 16
    store, now = _one_record(tmp_path, key, {"a": b"1" * 50})
    path = store._path(key)
    with open(path, "r+b") as f:
        f.seek(-5, os.SEEK_END)
        f.write(b"XXXXX")
    with open(path, "rb") as f:
        damaged = f.read()
    with pytest.raises(ValueError, match="damaged"):
        store.load(key)
    assert store.apply(key, Change(set={"b": b"2"}, last_seen=now, expires_at=now + 3600)) is None
    assert store.touch(key, now, now + 3600) is False
    with open(path, "rb") as f:
        assert f.read() == damaged


def test_filesystem_readers_never_see_a_torn_record(tmp_path: t.Any) -> None:
    """Readers running against a writer that grows and shrinks the record in place only ever see whole records."""
    store = FileSystemStore(str(tmp_path))
    now = time.time()
    key = "bb" * 16
    versions = [{"n": str(i).encode() * (1 if i % 2 else 3000)} for i in range(200)]
    store.create(key, Record(data=versions[0], created_at=now, last_seen=now, expires_at=now + 3600))
    errors: list[BaseException] = []
    seen: list[dict[str, bytes]] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                record = store.load(key)
                assert record is not None
                seen.append(record.data)
        except BaseException as e:
            errors.append(e)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for version in versions[1:]:
            removed = [name for name in ("n",) if name not in version]
            store.apply(key, Change(set=version, removed=removed, last_seen=now, expires_at=now + 3600))
    finally:
        done.set()
        for reader in readers:
            reader.join(10)
    assert errors == []
    assert seen
    assert all(data in versions for data in seen)


def test_filesystem_large_record_round_trips(tmp_path: t.Any) -> None:
    """A record larger than one read (64 KiB) loads and changes whole."""
    store = FileSystemStore(str(tmp_path))
    now = time.time()
    big = {f"k{i}": os.urandom(1000) for i in range(300)}
    store.create("cd" * 16, Record(data=big, created_at=now, last_seen=now, expires_at=now + 3600))
    record = store.load("cd" * 16)
    assert record is not None
    assert record.data == big
    assert store.apply("cd" * 16, Change(set={"x": b"1"}, last_seen=now, expires_at=now + 3600)) == 301
    record = store.load("cd" * 16)
    assert record is not None
    assert record.data == {**big, "x": b"1"}


def test_sqlite_failed_read_is_unavailable_then_recovers(tmp_path: t.Any) -> None:
    """A load SQLite refuses is ``StoreUnavailable`` naming the file; once SQLite answers again, so does the store."""
    path = str(tmp_path / "sessions.sqlite3")
    store = SQLiteStore(path)
    try:
        now = time.time()
        store.create("k", Record(data={"a": b"1"}, created_at=now, last_seen=now, expires_at=now + 60))
        assert store.load("k") is not None
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("ALTER TABLE satchel_sessions RENAME TO moved")
        with pytest.raises(StoreUnavailable, match=r"sessions\.sqlite3"):
            store.load("k")  # the pooled connection's statement names a table that is gone
        other.execute("ALTER TABLE moved RENAME TO satchel_sessions")
        other.close()
        loaded = store.load("k")
        assert loaded is not None
        assert loaded.data == {"a": b"1"}
    finally:
        store.close()
