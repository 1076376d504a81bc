"""The store contract and the app contract on the three embedded stores."""

from __future__ import annotations

import typing as t

import pytest

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
