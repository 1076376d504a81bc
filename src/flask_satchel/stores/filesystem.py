"""Sessions as files in a folder, one file each.

Safe for several processes and threads at once, and it never evicts a live
session to make room (Flask-Session's file store drops sessions past 500
files). Each file holds one msgpack record in a frame: a marker byte, the
record's length and its CRC-32, then the record.

- A new session is written to a temporary file in the same folder that is
  then renamed into place, so no reader ever sees a half-made file.
- A change takes an exclusive ``flock`` on the record file, re-reads it,
  merges and writes the new frame over the old one, in place. Replacing the
  file instead (a new inode and a rename) cost 200 µs a change on ext4
  mounted with ``discard``, where freeing the old file's blocks is slow;
  writing in place costs about 10. Readers take no lock: a reader that
  catches a write half done sees a length or checksum that does not match,
  and reads again under a shared ``flock``, which waits for the writer.
- A deleted record stays deleted: a change waiting for the lock checks
  afterwards that the path still names the file it locked (a delete or a
  new record replaces it), finds no file, and writes nothing.
- Files are sharded into 256 folders by the first two hex digits of the key,
  and each file's mtime is its expiry, so ``cleanup()`` and ``count()``
  only ``stat`` files instead of reading them.
- A user's sessions are listed from ``users/<hash of user>/``, which holds an
  empty marker file per session; stale markers are pruned when read.
- Files written before frames existed (bare msgpack, only ever replaced
  whole) are still read, and the first change replaces them by a rename.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import struct
import threading
import time
import typing as t
import zlib

import msgspec

from ..errors import StoreUnavailable
from .base import Change, Record, merge

if t.TYPE_CHECKING:
    from ..settings import Settings

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Record).decode
_USERS = "users"
_LOCKS = "locks"
#: Read size: larger than nearly every session, so one ``read`` gets it all.
_CHUNK = 65536


#: The first byte of a framed record: 0xc1 is never used by msgpack, so no
#: bare record (of files written before frames) can start with it.
_MARK = b"\xc1"
_HEADER = struct.Struct(">cII")  # mark, length of the record, its CRC-32


def _frame(record: Record) -> bytes:
    payload = _encode(record)
    return _HEADER.pack(_MARK, len(payload), zlib.crc32(payload)) + payload


def _unframe(raw: bytes) -> bytes | None:
    """The record bytes of a file's content; None when a write to it was caught half done."""
    if raw[:1] != _MARK:
        return raw  # a bare record of an earlier version: only ever replaced whole
    if len(raw) < _HEADER.size:
        return None
    _, length, crc = _HEADER.unpack_from(raw)
    payload = raw[_HEADER.size : _HEADER.size + length]
    # Bytes past the frame are the old record's tail, about to be truncated.
    if len(payload) != length or zlib.crc32(payload) != crc:
        return None
    return payload


def _read_all(fd: int) -> bytes:
    """The whole file behind ``fd``: one ``read`` for a session-sized file."""
    chunk = os.read(fd, _CHUNK)
    if len(chunk) < _CHUNK:
        return chunk  # short read of a regular file: the end
    chunks = [chunk]
    while chunk:
        chunk = os.read(fd, _CHUNK)
        chunks.append(chunk)
    return b"".join(chunks)


class _Held(t.NamedTuple):
    """A locked record file: its path, the open descriptor, its size, whether it is bare, its record."""

    path: str
    fd: int
    size: int
    bare: bool
    record: Record


class FileSystemStore:
    """Records in files below ``directory``."""

    def __init__(self, directory: str, *, mode: int = 0o600, timeout: float = 2.0) -> None:
        self.directory = directory
        self._prefix = os.path.join(directory, "")
        self.mode = mode
        self.timeout = timeout
        #: Session locks this process holds: token -> (path, open descriptor).
        self._held: dict[str, tuple[str, int]] = {}
        self._held_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> FileSystemStore:
        return cls(settings.file_dir, mode=settings.file_mode, timeout=settings.store_timeout)

    # Paths -----------------------------------------------------------------

    def _path(self, key: str) -> str:
        # Keys are hex digests (the interface's) or other plain names; a
        # format string is a third of the cost of os.path.join here.
        return f"{self._prefix}{key[:2]}{os.sep}{key}"

    def _user_dir(self, user: str) -> str:
        return os.path.join(self.directory, _USERS, hashlib.sha256(user.encode()).hexdigest()[:32])

    def _shards(self) -> t.Iterator[os.DirEntry[str]]:
        """Every record file, as a directory entry."""
        try:
            folders = list(os.scandir(self.directory))
        except FileNotFoundError:
            return
        for folder in folders:
            if folder.name in (_USERS, _LOCKS) or not folder.is_dir():
                continue
            for entry in os.scandir(folder.path):
                if not entry.name.endswith(".tmp"):
                    yield entry

    # Reading and writing files ---------------------------------------------

    def _read(self, path: str) -> Record | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            payload = _unframe(_read_all(fd))
            if payload is None:  # a change is being written: wait for it, then read again
                self._flock(fd, fcntl.LOCK_SH, path)
                os.lseek(fd, 0, os.SEEK_SET)
                payload = _unframe(_read_all(fd))
                if payload is None:
                    raise ValueError(f"session file {path!r} is damaged: its checksum does not match")
            return _decode(payload)
        finally:
            os.close(fd)

    def _write(self, path: str, record: Record) -> None:
        """Write a new file for ``record`` at ``path`` atomically: a temporary file renamed into place."""
        tmp = f"{path}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.mode)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.mode)
        try:
            os.write(fd, _frame(record))
            # Through the descriptor: no second lookup of the path.
            os.utime(fd, (record.expires_at, record.expires_at))
        finally:
            os.close(fd)
        # No fsync: losing the last writes to a power cut costs a re-login,
        # and an fsync would cost milliseconds per change. The rename is what
        # makes the creation atomic: a reader, or a crashed process, sees no
        # file or a whole one.
        os.replace(tmp, path)

    @staticmethod
    def _rewrite(held: _Held, record: Record) -> None:
        """Write ``record`` over the locked file, in place.

        The frame goes first, then the file is cut to its length: a reader
        in between sees the new frame and the old tail, and the frame's
        length tells them apart. A process killed between the two leaves
        the same, harmlessly. A power cut in the middle of the write can
        leave a torn record; its checksum then fails and the session is
        treated as unreadable (its user logs in again), never misread.
        """
        frame = _frame(record)
        os.pwrite(held.fd, frame, 0)
        if len(frame) < held.size:
            os.ftruncate(held.fd, len(frame))
        os.utime(held.fd, (record.expires_at, record.expires_at))

    def _flock(self, fd: int, kind: int, path: str) -> None:
        """``flock(fd, kind)``, waiting at most ``timeout`` seconds: a 503 rather than a hung request."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, kind | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreUnavailable(f"session file {path!r} stayed locked") from None
                time.sleep(0.0005)

    @contextlib.contextmanager
    def _locked(self, key: str) -> t.Iterator[_Held | None]:
        """Hold the lock of a record file; yields it with its record, or None when there is none.

        The lock is an ``flock`` on the record file itself, not on a lock
        file beside it, and the record is read and written through the
        locked descriptor: one open for all three. A delete unlinks the file
        and a new record is renamed over it, and the store never makes a
        second link, so a locked file that still has a link is the one its
        path names: what the descriptor reads is the current record, and
        what it writes is seen by the next reader. (``fstat`` of the
        descriptor answers that without a second walk of the path.)
        """
        path = self._path(key)
        while True:
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                yield None
                return
            try:
                self._flock(fd, fcntl.LOCK_EX, path)
                if os.fstat(fd).st_nlink:
                    raw = _read_all(fd)
                    payload = _unframe(raw)
                    if payload is None:  # torn by a writer that died mid-write, or by a power cut
                        raise ValueError(f"session file {path!r} is damaged: its checksum does not match")
                    yield _Held(path, fd, len(raw), raw[:1] != _MARK, _decode(payload))
                    return
            finally:
                os.close(fd)  # releases the lock
            # Deleted or replaced while we waited: lock whatever the path names now.

    def _replace(self, held: _Held, record: Record) -> None:
        """Write ``record`` to the locked file: in place, or by a rename over a file of before frames."""
        if held.bare:
            self._write(held.path, record)  # an unframed reader could not tell a torn rewrite
        else:
            self._rewrite(held, record)

    def _index(self, key: str, old: str | None, new: str | None) -> None:
        """Move the session's marker from one user's folder to another's."""
        if old == new:
            return
        if old is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._user_dir(old), key))
        if new is not None:
            folder = self._user_dir(new)
            marker = os.path.join(folder, key)
            flags = os.O_WRONLY | os.O_CREAT
            try:  # the folder is there for every session but a user's first
                fd = os.open(marker, flags, self.mode)
            except FileNotFoundError:
                os.makedirs(folder, exist_ok=True)
                fd = os.open(marker, flags, self.mode)
            os.close(fd)

    # The Store protocol ------------------------------------------------------

    def load(self, key: str) -> Record | None:
        try:
            return self._read(self._path(key))
        except OSError as e:
            raise StoreUnavailable(f"cannot read session file: {e}") from e

    def create(self, key: str, record: Record) -> None:
        self._write(self._path(key), record)
        self._index(key, None, record.user)

    def apply(self, key: str, change: Change) -> int | None:
        with self._locked(key) as held:
            if held is None:
                return None
            old = held.record
            new = merge(old, change)
            if not new.data:
                os.unlink(held.path)
                self._index(key, old.user, None)
                return 0
            self._replace(held, new)
            self._index(key, old.user, new.user)
            return len(new.data)

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        with self._locked(key) as held:
            if held is None:
                return False
            self._replace(held, msgspec.structs.replace(held.record, last_seen=last_seen, expires_at=expires_at))
            return True

    def delete(self, key: str) -> bool:
        with self._locked(key) as held:
            if held is None:
                return False
            os.unlink(held.path)
            record = held.record
        self._index(key, record.user, None)
        return True

    def sessions(self, now: float, user: str | None = None) -> list[tuple[str, Record]]:
        if user is None:
            keys = [entry.name for entry in self._shards() if entry.stat().st_mtime > now]
        else:
            try:
                keys = os.listdir(self._user_dir(user))
            except FileNotFoundError:
                return []
        found = []
        for key in keys:
            record = self._read(self._path(key))
            if record is None or (user is not None and record.user != user):
                if user is not None:  # a stale marker: the session ended or changed hands
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self._user_dir(user), key))
                continue
            if record.expires_at > now:
                found.append((key, msgspec.structs.replace(record, data={})))
        return found

    def cleanup(self, now: float) -> int:
        removed = 0
        for entry in self._shards():
            if entry.stat().st_mtime > now:
                continue
            with self._locked(entry.name) as held:
                if held is None or held.record.expires_at > now:
                    continue  # deleted or refreshed since the scan
                record = held.record
                os.unlink(held.path)
            self._index(entry.name, record.user, None)
            removed += 1
        return removed

    def count(self, now: float) -> int:
        return sum(1 for entry in self._shards() if entry.stat().st_mtime > now)

    def lock(self, key: str, token: str, lease: float) -> bool:
        """An ``flock`` on ``locks/<key>``, held open until ``unlock``.

        The kernel drops an ``flock`` when its process dies, so no lease is
        needed. The file is removed on unlock; a waiter that locked the
        removed file notices the path now names another inode and fails this
        attempt, as ``_locked`` does for records.
        """
        folder = os.path.join(self.directory, _LOCKS)
        path = os.path.join(folder, key)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, self.mode)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, self.mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                with self._held_lock:
                    self._held[token] = (path, fd)
                return True
        except (BlockingIOError, FileNotFoundError):
            pass
        os.close(fd)
        return False

    def unlock(self, key: str, token: str) -> bool:
        with self._held_lock:
            held = self._held.pop(token, None)
        if held is None:
            return False
        path, fd = held
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
        return True

    def close(self) -> None:
        with self._held_lock:
            held, self._held = self._held, {}
        for _, fd in held.values():
            os.close(fd)
