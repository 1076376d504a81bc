"""The filesystem store under real faults: a full disk, a file size limit, kill -9, damaged and foreign files."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import random
import resource
import signal
import struct
import subprocess
import time
import typing as t
import zlib
from pathlib import Path

import msgspec
import pytest
from conftest import require
from flask import Flask
from flask.testing import FlaskClient

from flask_satchel.serialization import decode_value, encode_value
from flask_satchel.stores.base import Change, Record
from flask_satchel.stores.filesystem import FileSystemStore
from flask_satchel.testing import make_app

HOUR = 3600.0


def _app(directory: Path, instance: Path, **config: t.Any) -> Flask:
    return make_app({"SESSION_TYPE": "filesystem", "SESSION_FILE_DIR": str(directory), **config}, instance)


def _record_path(directory: Path, handle: str) -> Path:
    return directory / handle[:2] / handle


def _leftovers(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.tmp"))


# A full disk -----------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> t.Iterator[Path]:
    """A 2 MB tmpfs, mounted for the test and unmounted after it."""
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    mounted = os.geteuid() == 0 and (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mountpoint)], capture_output=True
        ).returncode
        == 0
    )
    require(mounted, "mounting a tmpfs needs root")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def _fill(path: Path) -> None:
    """Write ``path`` until the filesystem it is on has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = b"f" * 65536
        while True:
            try:
                os.write(fd, chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                return
    finally:
        os.close(fd)


def test_full_disk_keeps_the_old_value_and_answers_503(tmpfs: Path, tmp_path: Path) -> None:
    """On a full disk a change or a new session is a 503 with Retry-After; the old value stays, no *.tmp file does."""
    directory = tmpfs / "sessions"
    app = _app(directory, tmp_path / "instance")
    client = app.test_client()
    assert client.get("/set/a/old").status_code == 200
    filler = tmpfs / "filler"
    _fill(filler)

    grown = client.get("/set/b/" + "x" * 20000)
    assert grown.status_code == 503
    assert grown.headers["Retry-After"]
    assert client.get("/get/a").text == "'old'"  # reads still work on the full disk

    newcomer = app.test_client().get("/set/a/new")
    assert newcomer.status_code == 503  # a new session: 503, not a 500
    assert newcomer.headers["Retry-After"]
    assert _leftovers(directory) == []

    filler.unlink()
    assert client.get("/dump").text == repr([("a", "old")])
    assert client.get("/set/b/grown").status_code == 200  # service resumes by itself
    assert client.get("/dump").text == repr([("a", "old"), ("b", "grown")])


# A short write ---------------------------------------------------------------------


def _write_under_size_limit(directory: str, instance: str, cookie: str, limit: int, results: t.Any) -> None:
    """In a child: cap the size of files this process may write, then grow the session past it."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    app = _app(Path(directory), Path(instance))
    client = app.test_client()
    client.set_cookie(app.config["SESSION_COOKIE_NAME"], cookie)
    response = client.get("/set/b/" + "y" * (4 * limit))
    results.put((response.status_code, response.headers.get("Retry-After")))


def test_short_write_keeps_the_old_record(tmp_path: Path) -> None:
    """A write cut short by the file size limit is a 503, and the session still reads its old value."""
    directory, instance = tmp_path / "sessions", tmp_path / "instance"
    app = _app(directory, instance)
    client = app.test_client()
    assert client.get("/set/a/" + "o" * 1000).status_code == 200
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(
        target=_write_under_size_limit, args=(str(directory), str(instance), cookie.value, 16384, results)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    status, retry_after = results.get(timeout=5)
    assert status == 503
    assert retry_after
    assert client.get("/dump").text == repr([("a", "o" * 1000)])
    assert _leftovers(directory) == []


# kill -9 ---------------------------------------------------------------------------

_SIZES = [1 << 10, 64 << 10, 1 << 20, 4 << 20, 8 << 20]
_KEYS = 12
_KILLS = 100


def _value(generation: int, index: int) -> str:
    """The value a writer gives session ``index`` at ``generation``: its generation number, repeated to a size."""
    size = _SIZES[(generation * 7 + index) % len(_SIZES)]
    return f"{generation:012d}" * (size // 12)


def _check(value: t.Any, index: int, at_least: int) -> int:
    """The generation of a whole value of session ``index``, no older than ``at_least``; fails on a torn one."""
    assert isinstance(value, str)
    generation = int(value[:12])
    assert value == _value(generation, index), f"session {index}: a torn value of generation {generation}"
    assert generation >= at_least, f"session {index} went back from generation {at_least} to {generation}"
    return generation


def _writer(directory: str, keys: list[str], first: int) -> None:
    """In a child: rewrite the sessions with ever newer generations until killed."""
    store = FileSystemStore(directory)
    rng = random.Random(first)
    generation = first
    while True:
        generation += 1
        index = rng.randrange(len(keys))
        now = time.time()
        change = Change(set={"v": encode_value(_value(generation, index))}, last_seen=now, expires_at=now + HOUR)
        store.apply(keys[index], change)


def test_kill_9_during_writes_leaves_whole_records(tmp_path: Path) -> None:
    """After each of 100 kill -9s of a writer of 1 KB-8 MB sessions, every session reads a whole old or new value."""
    directory = tmp_path / "sessions"
    app = _app(directory, tmp_path / "instance")
    clients: list[FlaskClient] = []
    keys = []
    for index in range(_KEYS):
        client = app.test_client()
        assert client.get(f"/set/v/{_value(0, index)}").status_code == 200
        clients.append(client)
        keys.append(client.get("/handle").text)
    store = FileSystemStore(str(directory))
    seen = [0] * _KEYS
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(16)
    mid_write = 0
    for kill in range(1, _KILLS + 1):
        writer = ctx.Process(target=_writer, args=(str(directory), keys, kill * 10**6))
        writer.start()
        time.sleep(rng.uniform(0.005, 0.08))
        os.kill(t.cast(int, writer.pid), signal.SIGKILL)
        writer.join(10)
        assert writer.exitcode == -signal.SIGKILL
        for index, key in enumerate(keys):
            record = store.load(key)
            assert record is not None, f"session {index} is gone after kill {kill}"
            seen[index] = _check(decode_value(record.data["v"]), index, seen[index])
        # A writer killed mid-write leaves its temporary file; cleanup takes it once old.
        mid_write += bool(_leftovers(directory))
        store.cleanup(time.time() + 120)
        assert _leftovers(directory) == []
    assert any(seen)  # the writers got through writes between the kills
    assert mid_write >= _KILLS // 10  # and many kills landed in the middle of one
    for index, client in enumerate(clients):
        text = client.get("/get/v").text
        assert text[0] == text[-1] == "'"
        _check(text[1:-1], index, seen[index])


# Damaged and foreign files ---------------------------------------------------------


def _damage(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "flipped":
        middle = len(raw) // 2
        path.write_bytes(raw[:middle] + bytes(b ^ 0xFF for b in raw[middle : middle + 4]) + raw[middle + 4 :])
    elif how == "garbage":
        path.write_bytes(os.urandom(len(raw)))
    elif how == "unframed":  # a bare msgpack record, as files were before frames
        now = time.time()
        path.write_bytes(msgspec.msgpack.encode(Record(created_at=now, last_seen=now, expires_at=now + HOUR)))
    elif how == "undecodable":  # a frame with a valid checksum around bytes that are no record
        payload = b"\x93\x01\x02"  # a msgpack array, not a record map
        path.write_bytes(struct.pack(">cII", b"\xc1", len(payload), zlib.crc32(payload)) + payload)
    elif how == "folder":
        path.unlink()
        path.mkdir()
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "flipped", "garbage", "unframed", "undecodable", "folder"])
def test_damaged_file_is_an_empty_session_and_cleanup_removes_it(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged session file is an empty session with a warning naming it; cleanup and count carry on and remove it."""
    directory = tmp_path / "sessions"
    app = _app(directory, tmp_path / "instance")
    healthy, damaged = app.test_client(), app.test_client()
    assert healthy.get("/set/a/kept").status_code == 200
    assert damaged.get("/set/a/lost").status_code == 200
    path = _record_path(directory, damaged.get("/handle").text)
    _damage(path, how)
    future = time.time() + HOUR
    os.utime(path, (future, future))  # as if it were a record that expires in an hour
    manager = app.extensions["satchel"]

    with caplog.at_level(logging.WARNING, logger="flask_satchel.security"):
        response = damaged.get("/dump")
        assert (response.status_code, response.text) == (200, "[]")
        assert any(str(path) in r.getMessage() for r in caplog.records if r.name == "flask_satchel.security")
        assert manager.cleanup() == 0  # not expired yet: kept
        assert path.exists()
        manager.count()  # works; it only stats files, so a damaged one not yet expired may still count
        assert [info.handle for info in manager.sessions()] == [healthy.get("/handle").text]

        past = time.time() - 10
        os.utime(path, (past, past))  # its mtime is its expiry: now in the past
        caplog.clear()
        result = app.test_cli_runner().invoke(args=["session", "cleanup"])
        assert result.exit_code == 0, result.output
        assert not path.exists()
        assert any(str(path) in r.getMessage() for r in caplog.records if r.name == "flask_satchel.security")
    assert manager.count() == 1
    assert healthy.get("/dump").text == repr([("a", "kept")])


def test_periodic_cleanup_past_a_damaged_file_never_fails_a_request(tmp_path: Path) -> None:
    """With SESSION_CLEANUP_N_REQUESTS, a damaged expired file does not turn the user's request into a 500."""
    directory = tmp_path / "sessions"
    app = _app(directory, tmp_path / "instance", SESSION_CLEANUP_N_REQUESTS=1)
    victim, user = app.test_client(), app.test_client()
    assert victim.get("/set/a/1").status_code == 200
    path = _record_path(directory, victim.get("/handle").text)
    _damage(path, "flipped")
    past = time.time() - 10
    os.utime(path, (past, past))
    response = user.get("/set/a/2")
    assert response.status_code == 200
    assert not path.exists()
    assert user.get("/dump").text == repr([("a", "2")])


def test_foreign_entries_and_leftover_temporary_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Foreign files and folders in a shard are skipped, logged, removed once expired; old *.tmp files go too."""
    directory = tmp_path / "sessions"
    app = _app(directory, tmp_path / "instance")
    client = app.test_client()
    assert client.get("/set/a/1").status_code == 200
    handle = client.get("/handle").text
    shard = directory / handle[:2]
    past, future = time.time() - 10, time.time() + HOUR
    foreign = {
        "stray file": shard / "notes.txt",
        "other shard's name": shard / ("zz" + handle[2:]),
        "folder": shard / (handle[:2] + "f" * 30),
    }
    for name, path in foreign.items():
        if name == "folder":
            path.mkdir()
        else:
            path.write_bytes(b"not a session")
    fresh_foreign = shard / "README"
    fresh_foreign.write_bytes(b"kept until it expires")
    os.utime(fresh_foreign, (future, future))
    old_tmp = shard / f"{handle}.0badf00d.tmp"
    old_tmp.write_bytes(b"\xc1 half a record")
    os.utime(old_tmp, (past - HOUR, past - HOUR))  # a killed writer's, long ago
    live_tmp = shard / f"{handle}.1234abcd.tmp"
    live_tmp.write_bytes(b"\xc1 a write in progress")
    os.utime(live_tmp, (future, future))  # as a writer sets it, just before its rename
    for path in foreign.values():
        os.utime(path, (past, past))
    manager = app.extensions["satchel"]

    with caplog.at_level(logging.WARNING, logger="flask_satchel.security"):
        assert manager.count() == 1  # neither foreign entries nor temporary files are sessions
        assert [info.handle for info in manager.sessions()] == [handle]
        result = app.test_cli_runner().invoke(args=["session", "cleanup"])
        assert result.exit_code == 0, result.output
    messages = [r.getMessage() for r in caplog.records if r.name == "flask_satchel.security"]
    for path in [*foreign.values(), fresh_foreign]:
        assert any(str(path) in message for message in messages), path
    assert [path for path in foreign.values() if os.path.lexists(path)] == []
    assert fresh_foreign.exists()
    assert not old_tmp.exists()
    assert live_tmp.exists()
    assert manager.count() == 1
    assert client.get("/dump").text == repr([("a", "1")])
