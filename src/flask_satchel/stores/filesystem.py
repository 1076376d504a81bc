"""Sessions as files in a folder, one file each.

Safe for several processes and threads at once, and it never evicts a live
session to make room (Flask-Session's file store drops sessions past 500
files). Each file holds one msgpack record:

- Writes go to a temporary file in the same folder that is then renamed over
  the record, so a reader sees the old record or the new one, never half of
  one, and needs no lock.
- A change takes an exclusive ``flock`` on the record file, re-reads it,
  merges and renames the new version in. A rename replaces the inode, so a
  request that was waiting for the lock checks afterwards that the path
  still names the file it locked, and starts again if not. A deleted record
  stays deleted: a waiting change finds no file and writes nothing.
- Files are sharded into 256 folders by the first two hex digits of the key,
  and each file's mtime is its expiry, so ``cleanup()`` and ``count()``
  only ``stat`` files instead of reading them.
- A user's sessions are listed from ``users/<hash of user>/``, which holds an
  empty marker file per session; stale markers are pruned when read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import threading
import time
import typing as t

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
            return _decode(_read_all(fd))
        finally:
            os.close(fd)

    def _write(self, path: str, record: Record) -> None:
        """Write ``record`` to ``path`` atomically: a temporary file renamed into place."""
        tmp = f"{path}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.mode)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.mode)
        try:
            os.write(fd, _encode(record))
            # Through the descriptor: no second lookup of the path.
            os.utime(fd, (record.expires_at, record.expires_at))
        finally:
            os.close(fd)
        # No fsync: losing the last writes to a power cut costs a re-login,
        # and an fsync would cost milliseconds per change. The rename is what
        # makes the write atomic: a reader, or a crashed process, leaves the
        # old record or the new one, never half of one. (On ext4, renaming
        # over an existing file also makes the kernel write the new data
        # before the rename is committed, so even a power cut leaves a whole
        # file.)
        os.replace(tmp, path)

    @contextlib.contextmanager
    def _locked(self, key: str) -> t.Iterator[tuple[str, Record] | None]:
        """Hold the lock of a record file; yields its path and record, or None when there is none.

        The lock is an ``flock`` on the record file itself, not on a lock
        file beside it, and the record is read through the locked descriptor:
        one open for both. Records are only ever replaced, never written in
        place, so once the path is seen to still name the locked file, what
        that descriptor reads is the current record.
        """
        path = self._path(key)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                yield None
                return
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise StoreUnavailable(f"session file {path!r} stayed locked") from None
                        time.sleep(0.0005)
                try:
                    current = os.stat(path).st_ino
                except FileNotFoundError:
                    current = None
                if current == os.fstat(fd).st_ino:
                    yield path, _decode(_read_all(fd))
                    return
                if current is None:
                    yield None
                    return
            finally:
                os.close(fd)  # releases the lock
            # The file was replaced while we waited: lock the new one.

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
        with self._locked(key) as locked:
            if locked is None:
                return None
            path, old = locked
            new = merge(old, change)
            if not new.data:
                os.unlink(path)
                self._index(key, old.user, None)
                return 0
            self._write(path, new)
            self._index(key, old.user, new.user)
            return len(new.data)

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        with self._locked(key) as locked:
            if locked is None:
                return False
            path, record = locked
            self._write(path, msgspec.structs.replace(record, last_seen=last_seen, expires_at=expires_at))
            return True

    def delete(self, key: str) -> bool:
        with self._locked(key) as locked:
            if locked is None:
                return False
            path, record = locked
            os.unlink(path)
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
            with self._locked(entry.name) as locked:
                if locked is None or locked[1].expires_at > now:
                    continue  # deleted or refreshed since the scan
                path, record = locked
                os.unlink(path)
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
