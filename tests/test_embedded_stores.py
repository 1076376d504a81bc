"""What the SQLite and filesystem stores promise beyond the contract: scale, processes, cleanup."""

from __future__ import annotations

import multiprocessing
import os
import time
import typing as t

from flask import Flask

from flask_satchel import Session
from flask_satchel import current_session as session
from flask_satchel.stores.base import Change, Record
from flask_satchel.stores.filesystem import FileSystemStore
from flask_satchel.stores.sqlite import SQLiteStore

HOUR = 3600.0


def test_filesystem_keeps_1200_sessions(tmp_path: t.Any) -> None:
    """1,200 filesystem sessions all still load: nothing is evicted to make room."""
    app = Flask("fs_scale", instance_path=str(tmp_path))
    app.config.update(SESSION_TYPE="filesystem")
    Session(app)

    @app.get("/set/<int:n>")
    def set_n(n: int) -> str:
        session["n"] = n
        return "ok"

    @app.get("/get")
    def get_n() -> str:
        return str(session.get("n"))

    clients = [app.test_client() for _ in range(1200)]
    for n, client in enumerate(clients):
        client.get(f"/set/{n}")
    assert [client.get("/get").text for client in clients] == [str(n) for n in range(1200)]
    assert app.extensions["satchel"].count() == 1200
    shards = [d for d in os.listdir(tmp_path / "flask_satchel_sessions") if d != "users"]
    assert len(shards) > 200  # spread over up to 256 folders


def test_filesystem_cleanup_removes_expired_files(tmp_path: t.Any) -> None:
    """cleanup() deletes the files of expired sessions and their user-index markers, and nothing else."""
    store = FileSystemStore(str(tmp_path))
    now = time.time()
    for i in range(10):
        expires = now - 1 if i < 4 else now + HOUR
        store.create(
            f"{i:032x}",
            Record(data={"a": b"1"}, created_at=now, last_seen=now, expires_at=expires, user="u" if i < 2 else None),
        )
    assert store.cleanup(now) == 4
    files = [name for folder in os.listdir(tmp_path) if folder != "users" for name in os.listdir(tmp_path / folder)]
    assert sorted(files) == [f"{i:032x}" for i in range(4, 10)]
    assert [f for d in os.listdir(tmp_path / "users") for f in os.listdir(tmp_path / "users" / d)] == []
    assert not [name for name in files if name.endswith(".tmp")]


def _add_keys(store_type: str, path: str, key: str, worker: int, n: int) -> None:
    store = SQLiteStore(path) if store_type == "sqlite" else FileSystemStore(path)
    now = time.time()
    for i in range(n):
        assert store.apply(key, Change(set={f"w{worker}-{i}": b"1"}, last_seen=now, expires_at=now + HOUR)) is not None
    store.close()


def _processes_merge(store_type: str, path: str) -> None:
    store = SQLiteStore(path) if store_type == "sqlite" else FileSystemStore(path)
    now = time.time()
    key = "ab" * 16
    store.create(key, Record(data={"start": b"1"}, created_at=now, last_seen=now, expires_at=now + HOUR))
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_add_keys, args=(store_type, path, key, w, 25)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
    assert [p.exitcode for p in workers] == [0] * 4
    record = store.load(key)
    assert record is not None
    assert len(record.data) == 1 + 4 * 25
    store.close()


def test_sqlite_processes_merge(tmp_path: t.Any) -> None:
    """Four processes changing one session at once through SQLite keep all 100 keys."""
    _processes_merge("sqlite", str(tmp_path / "s.sqlite3"))


def test_filesystem_processes_merge(tmp_path: t.Any) -> None:
    """Four processes changing one session at once through the filesystem keep all 100 keys."""
    _processes_merge("filesystem", str(tmp_path / "files"))


def test_corrupt_record_file_is_an_empty_session(tmp_path: t.Any) -> None:
    """A session file that is not a record reads as a new session, not a 500."""
    app = Flask("fs_corrupt", instance_path=str(tmp_path))
    app.config.update(SESSION_TYPE="filesystem")
    Session(app)

    @app.get("/set")
    def set_value() -> str:
        session["a"] = 1
        return session.handle

    @app.get("/get")
    def get_value() -> str:
        return repr(session.get("a"))

    client = app.test_client()
    handle = client.get("/set").text
    with open(tmp_path / "flask_satchel_sessions" / handle[:2] / handle, "wb") as f:
        f.write(b"\x00garbage")
    response = client.get("/get")
    assert (response.status_code, response.text) == (200, "None")
