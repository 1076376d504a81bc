"""Sessions as files in a folder, one file each.

Safe for several processes and threads at once, and it never evicts a live
session to make room (Flask-Session's file store drops sessions past 500
files). Each file holds one msgpack record in a frame: a marker byte, the
record's length and its CRC-32, then the record.

- Every write, of a new session or of a change, goes to a temporary file in
  the same folder that is then renamed over the record. A file a reader
  opens is therefore always whole, and a write that fails (a full disk, an
  I/O error, a writer killed at any instant) leaves the previous record as it
  was: the rename never happened, and the temporary file is removed, or left
  for ``cleanup()`` when its writer was killed. Rewriting the file in place
  was cheaper, but a writer killed half way left a torn record, that is a
  lost session; durability wins over that speed.
- No ``fsync``, by choice: a killed process loses nothing, but a power cut
  or a kernel crash may lose the last writes, or leave a record that fails
  its checksum; that session then reads as unreadable (a warning, a new
  empty session, its user logs in again), never as wrong data. An ``fsync``
  per change would cost more than the rest of the request.
- A change takes an exclusive ``flock`` on the record file, re-reads it,
  merges, and renames the new file over it while still holding the lock. A
  change waiting for that lock checks afterwards that the path still names
  the file it locked; the rename (or a delete) unlinked it, so the waiter
  locks whatever the path names now, and a deleted record stays deleted.
- Files are sharded into 256 folders by the first two hex digits of the key,
  and each file's mtime is its expiry, so ``cleanup()`` and ``count()``
  only ``stat`` files instead of reading them.
- A damaged or foreign file (a bad frame, a name no record has, a folder
  where a file should be) is skipped and logged on ``flask_satchel.security``
  wherever it is met, reads as an unreadable session, and is removed by
  ``cleanup()`` once its mtime has passed, as any expired record is.
- A user's sessions are listed from ``users/<hash of user>/``, which holds an
  empty marker file per session; stale markers are pruned when read.
- Every ``OSError`` (a full disk, an I/O error, a permission) is a
  ``StoreUnavailable`` naming the path and the errno: a 503, and the record
  stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import struct
import threading
import time
import typing as t
import zlib

import msgspec

from ..errors import StoreUnavailable
from .base import Change, Record, decode_record, encode_record, merge, user_hash

if t.TYPE_CHECKING:
    from ..settings import Settings

security_log = logging.getLogger("flask_satchel.security")

_USERS = "users"
_LOCKS = "locks"
#: Read size: larger than nearly every session, so one ``read`` gets it all.
_CHUNK = 65536
#: How old a temporary file or a stale user marker must be before it is
#: taken for the leftover of a killed or failed write: far longer than any
#: write takes.
_STALE_AGE = 60.0

#: The first byte of a record file: 0xc1 is never used by msgpack.
_MARK = b"\xc1"
_HEADER = struct.Struct(">cII")  # mark, length of the record, its CRC-32


class DamagedRecord(ValueError):
    """A session file that is not a whole record; the interface reads it as an unreadable session."""


def _frame(record: Record) -> bytes:
    payload = encode_record(record)
    return _HEADER.pack(_MARK, len(payload), zlib.crc32(payload)) + payload


def _unframe(raw: bytes, path: str) -> Record:
    """The record in a file's content; ``DamagedRecord`` naming ``path`` when it is not one."""
    if len(raw) < _HEADER.size or raw[:1] != _MARK:
        raise DamagedRecord(f"session file {path!r} is damaged: no record frame")
    _, length, crc = _HEADER.unpack_from(raw)
    payload = raw[_HEADER.size :]
    if len(payload) != length or zlib.crc32(payload) != crc:
        raise DamagedRecord(f"session file {path!r} is damaged: its length or checksum does not match")
    try:
        return decode_record(payload)
    except msgspec.DecodeError as e:
        raise DamagedRecord(f"session file {path!r} is damaged: {e}") from e


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


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: ``os.write`` may write less (a disk filling up, a file size limit)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if not written:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def _stale(stat: os.stat_result, now: float) -> bool:
    """Whether a temporary file or a user marker is too old to belong to a write in progress."""
    # A write sets a record's mtime to its expiry, later than now, but
    # cannot set the ctime: the smaller of the two is when it was written.
    return min(stat.st_mtime, stat.st_ctime) < now - _STALE_AGE


def _unavailable(e: OSError, path: str) -> StoreUnavailable:
    """The ``StoreUnavailable`` (a 503) for an ``OSError``: a full disk, an I/O error, a permission."""
    code = errno.errorcode.get(e.errno or 0, str(e.errno))
    return StoreUnavailable(f"session file {e.filename or path!r}: {code} ({e.strerror})")


class _Held(t.NamedTuple):
    """A locked record file: its path and its record (None when the file is damaged)."""

    path: str
    record: Record | None


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
        return os.path.join(self.directory, _USERS, user_hash(user))

    def _scan(self) -> t.Iterator[tuple[os.DirEntry[str], str, os.stat_result]]:
        """Every entry of the shard folders with its kind (record, tmp or foreign) and its ``lstat``.

        Only two-character folders are shards: the store makes no others but
        ``users`` and ``locks``, so a folder it shares by mistake loses nothing.
        """
        try:
            folders = [folder for folder in os.scandir(self.directory) if len(folder.name) == 2 and folder.is_dir()]
        except FileNotFoundError:
            return
        for folder in folders:
            try:
                entries = list(os.scandir(folder.path))
            except FileNotFoundError:
                continue
            for entry in entries:
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted since the scan
                name = entry.name
                if name.endswith(".tmp"):
                    kind = "tmp"
                elif name.startswith(folder.name) and "." not in name and entry.is_file(follow_symlinks=False):
                    kind = "record"
                else:
                    kind = "foreign"
                yield entry, kind, stat

    def _records(self) -> t.Iterator[tuple[str, float]]:
        """The keys of the record files with their mtime (their expiry); foreign entries are logged."""
        for entry, kind, stat in self._scan():
            if kind == "record":
                yield entry.name, stat.st_mtime
            elif kind == "foreign":
                security_log.warning("Foreign entry %r among the session files: skipped", entry.path)

    # Reading and writing files ---------------------------------------------

    def _read(self, path: str) -> Record | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            raw = _read_all(fd)
        except IsADirectoryError:
            raise DamagedRecord(f"session file {path!r} is a folder") from None
        finally:
            os.close(fd)
        # Writes rename whole files into place, so no reader ever sees one half
        # written: a frame that does not match is damage, never a write in progress.
        return _unframe(raw, path)

    def _write(self, path: str, record: Record, then: t.Callable[[], None] | None = None) -> None:
        """Put a file for ``record`` at ``path`` atomically: a temporary file renamed into place.

        On any failure the temporary file is removed and ``path`` keeps what
        it had, so a full disk costs the change, never the session. ``then``
        runs once the new file is in place but still locked, before any
        other change of the record can start.
        """
        tmp = f"{path}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.mode)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.mode)
        try:
            try:
                _write_all(fd, _frame(record))
                # Through the descriptor: no second lookup of the path.
                os.utime(fd, (record.expires_at, record.expires_at))
                if then is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # nobody else can see the file yet: never waits
            finally:
                if then is None:
                    os.close(fd)  # before the rename: a failed close still leaves the old record
            os.replace(tmp, path)
        except BaseException:
            if then is not None:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if then is not None:
            try:
                then()
            finally:
                os.close(fd)

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
        file beside it, and the record is read through the locked
        descriptor. Writes rename a new file over the record and deletes
        unlink it, and the store never makes a second link, so a locked file
        that still has a link is the one its path names, and what it holds
        is the current record. (``fstat`` of the descriptor answers that
        without a second walk of the path.) A folder at the path is no
        record.
        """
        path = self._path(key)
        while True:
            try:
                fd = os.open(path, os.O_RDWR)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                yield None
                return
            try:
                self._flock(fd, fcntl.LOCK_EX, path)
                if os.fstat(fd).st_nlink:
                    try:
                        record: Record | None = _unframe(_read_all(fd), path)
                    except DamagedRecord as e:
                        security_log.warning("%s", e)
                        record = None
                    yield _Held(path, record)
                    return
            finally:
                os.close(fd)  # releases the lock
            # Replaced or deleted while we waited: lock whatever the path names now.

    def _mark(self, key: str, user: str | None) -> None:
        """Add the session's marker to ``user``'s folder.

        Before the record is written: a marker whose record does not name
        its user is pruned when listed (once it is older than any write in
        progress), while a record without its marker would be missing from
        the list, and so from "log out everywhere".
        """
        if user is None:
            return
        folder = self._user_dir(user)
        marker = os.path.join(folder, key)
        flags = os.O_WRONLY | os.O_CREAT
        try:  # the folder is there for every session but a user's first
            fd = os.open(marker, flags, self.mode)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(marker, flags, self.mode)
        os.close(fd)

    def _unmark(self, key: str, user: str | None) -> None:
        """Drop the session's marker from ``user``'s folder, after the record no longer names them."""
        if user is not None:
            with contextlib.suppress(OSError):  # the record is written: a stale marker is pruned when listed
                os.unlink(os.path.join(self._user_dir(user), key))

    # The Store protocol ------------------------------------------------------

    def load(self, key: str) -> Record | None:
        path = self._path(key)
        try:
            return self._read(path)
        except OSError as e:
            raise _unavailable(e, path) from e

    def create(self, key: str, record: Record) -> None:
        path = self._path(key)
        try:
            self._mark(key, record.user)
            self._write(path, record)
        except OSError as e:
            raise _unavailable(e, path) from e

    def apply(self, key: str, change: Change) -> int | None:
        path = self._path(key)
        try:
            with self._locked(key) as held:
                if held is None or held.record is None:
                    return None  # gone, or damaged: no session left to change
                old = held.record
                new = merge(old, change)
                if not new.data:
                    os.unlink(path)
                    self._unmark(key, old.user)
                    return 0
                if new.user != old.user:
                    self._mark(key, new.user)
                    # The old user's marker goes while the new file is still locked:
                    # a change that follows it, and may give the session back to
                    # that user and mark it again, waits until then.
                    self._write(path, new, then=lambda: self._unmark(key, old.user))
                else:
                    self._write(path, new)  # under the lock of the file it replaces
                return len(new.data)
        except OSError as e:
            raise _unavailable(e, path) from e

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        path = self._path(key)
        try:
            with self._locked(key) as held:
                if held is None or held.record is None:
                    return False
                self._write(path, msgspec.structs.replace(held.record, last_seen=last_seen, expires_at=expires_at))
                return True
        except OSError as e:
            raise _unavailable(e, path) from e

    def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            with self._locked(key) as held:
                if held is None:
                    return False
                os.unlink(path)
            if held.record is not None:
                self._unmark(key, held.record.user)
            return True
        except OSError as e:
            raise _unavailable(e, path) from e

    def sessions(self, now: float, user: str | None = None) -> list[tuple[str, Record]]:
        try:
            if user is None:
                keys = [key for key, mtime in self._records() if mtime > now]
            else:
                try:
                    keys = os.listdir(self._user_dir(user))
                except FileNotFoundError:
                    return []
            found = []
            for key in keys:
                try:
                    record = self._read(self._path(key))
                except DamagedRecord as e:
                    security_log.warning("%s: skipped", e)
                    record = None
                if record is None or (user is not None and record.user != user):
                    if user is not None:  # a stale marker: the session ended or changed hands
                        marker = os.path.join(self._user_dir(user), key)
                        with contextlib.suppress(FileNotFoundError):
                            if _stale(os.lstat(marker), now):
                                os.unlink(marker)
                    continue
                if record.expires_at > now:
                    found.append((key, msgspec.structs.replace(record, data={})))
            return found
        except OSError as e:
            raise _unavailable(e, self.directory) from e

    def cleanup(self, now: float) -> int:
        """Remove expired records, damaged and foreign files whose mtime has passed, and old temporary files."""
        removed = 0
        try:
            for entry, kind, stat in self._scan():
                if kind == "tmp":
                    if _stale(stat, now):  # the leftover of a killed writer
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                elif kind == "foreign":
                    self._remove_foreign(entry, stat.st_mtime <= now)
                elif stat.st_mtime <= now:
                    removed += self._remove_expired(entry.name, now)
        except OSError as e:
            raise _unavailable(e, self.directory) from e
        return removed

    def _remove_expired(self, key: str, now: float) -> int:
        """Remove the record of ``key`` if it is still expired, or damaged, under its lock; 1 for a record."""
        with self._locked(key) as held:
            if held is None or (held.record is not None and held.record.expires_at > now):
                return 0  # deleted or refreshed since the scan
            os.unlink(held.path)
        if held.record is None:
            security_log.warning("Removed the damaged session file %r", held.path)
            return 0
        self._unmark(key, held.record.user)
        return 1

    @staticmethod
    def _remove_foreign(entry: os.DirEntry[str], expired: bool) -> None:
        """Log a foreign entry of a shard folder; remove it once its mtime has passed (a folder only if empty)."""
        if not expired:
            security_log.warning("Foreign entry %r among the session files: skipped", entry.path)
            return
        try:
            if entry.is_dir(follow_symlinks=False):
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            return
        except OSError as e:  # a folder that is not empty, say: left to whoever put it there
            security_log.warning("Foreign entry %r among the session files: cannot remove it: %s", entry.path, e)
            return
        security_log.warning("Removed the foreign entry %r among the session files", entry.path)

    def count(self, now: float) -> int:
        try:
            return sum(1 for _, mtime in self._records() if mtime > now)
        except OSError as e:
            raise _unavailable(e, self.directory) from e

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
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            return False
        except OSError as e:
            raise _unavailable(e, path) from e

    def unlock(self, key: str, token: str) -> bool:
        with self._held_lock:
            held = self._held.pop(token, None)
        if held is None:
            return False
        path, fd = held
        with contextlib.suppress(OSError):  # a lock file left behind is taken again by the next lock
            os.unlink(path)
        os.close(fd)
        return True

    def close(self) -> None:
        with self._held_lock:
            held, self._held = self._held, {}
        for _, fd in held.values():
            os.close(fd)
