"""One record file: its frame, and reading, writing and locking it safely.

Each file holds one msgpack record in a frame: a marker byte, the record's
length and its CRC-32, then the record.

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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import struct
import time
import typing as t
import zlib

import msgspec

from ...errors import StoreUnavailable
from ..base import Record, decode_record, encode_record

security_log = logging.getLogger("flask_satchel.security")

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


def frame(record: Record) -> bytes:
    """The content of the file that holds ``record``."""
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


def stale(stat: os.stat_result, now: float) -> bool:
    """Whether a temporary file or a user marker is too old to belong to a write in progress."""
    # A write sets a record's mtime to its expiry, later than now, but
    # cannot set the ctime: the smaller of the two is when it was written.
    return min(stat.st_mtime, stat.st_ctime) < now - _STALE_AGE


def unavailable(e: OSError, path: str, what: str = "session file") -> StoreUnavailable:
    """The ``StoreUnavailable`` (a 503) for an ``OSError``: a full disk, an I/O error, a permission."""
    code = errno.errorcode.get(e.errno or 0, str(e.errno))
    return StoreUnavailable(f"{what} {e.filename or path!r}: {code} ({e.strerror})")


def read(path: str) -> Record | None:
    """The record in the file at ``path``, None when there is none; ``DamagedRecord`` when it is no record."""
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


def write(path: str, record: Record, mode: int, then: t.Callable[[], None] | None = None) -> None:
    """Put a file for ``record`` at ``path`` atomically: a temporary file renamed into place.

    On any failure the temporary file is removed and ``path`` keeps what
    it had, so a full disk costs the change, never the session. ``then``
    runs once the new file is in place but still locked, before any
    other change of the record can start.
    """
    tmp = f"{path}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            _write_all(fd, frame(record))
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


def _flock(fd: int, kind: int, path: str, timeout: float) -> None:
    """``flock(fd, kind)``, waiting at most ``timeout`` seconds: a 503 rather than a hung request."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"session file {path!r} stayed locked") from None
            time.sleep(0.0005)


class Held(t.NamedTuple):
    """A locked record file: its path and its record (None when the file is damaged)."""

    path: str
    record: Record | None


@contextlib.contextmanager
def locked(path: str, timeout: float) -> t.Iterator[Held | None]:
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
    while True:
        try:
            fd = os.open(path, os.O_RDWR)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            yield None
            return
        try:
            _flock(fd, fcntl.LOCK_EX, path, timeout)
            if os.fstat(fd).st_nlink:
                try:
                    record: Record | None = _unframe(_read_all(fd), path)
                except DamagedRecord as e:
                    security_log.warning("%s", e)
                    record = None
                yield Held(path, record)
                return
        finally:
            os.close(fd)  # releases the lock
        # Replaced or deleted while we waited: lock whatever the path names now.
