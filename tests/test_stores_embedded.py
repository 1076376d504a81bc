"""The store contract and the app contract on the three embedded stores."""

from __future__ import annotations

import os
import sys
import threading
import time
import typing as t

import pytest

from flask_satchel.stores.base import Change, Record
from flask_satchel.stores.filesystem import FileSystemStore
from flask_satchel.stores.memory import MemoryStore
from flask_satchel.stores.sqlite import SQLiteStore
from flask_satchel.testing import AppContract, StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> t.Iterator[MemoryStore]:
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
    def store(self, tmp_path: t.Any) -> t.Iterator[FileSystemStore]:
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


def test_filesystem_change_opens_the_record_once(tmp_path: t.Any) -> None:
    """A change locks and reads the record through one descriptor: two opens (record, temporary file), one rename."""
    store = FileSystemStore(str(tmp_path))
    now = time.time()
    store.create("ab" * 16, Record(data={"a": b"1"}, created_at=now, last_seen=now, expires_at=now + 3600))
    assert _file_events(lambda: store.load("ab" * 16)) == ["open"]
    change = Change(set={"b": b"2"}, last_seen=now, expires_at=now + 3600)
    assert _file_events(lambda: store.apply("ab" * 16, change)) == ["open", "open", "os.rename"]
    record = store.load("ab" * 16)
    assert record is not None
    assert record.data == {"a": b"1", "b": b"2"}
    assert os.stat(store._path("ab" * 16)).st_mtime == pytest.approx(now + 3600, abs=1e-3)


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
