"""The filesystem store: the Store protocol over one record file per session.

Every ``OSError`` (a full disk, an I/O error, a permission) is a
``StoreUnavailable`` naming the path and the errno: a 503, and the record
stays as it was.
"""

from __future__ import annotations

import contextlib
import os
import typing as t

import msgspec

from ...errors import ConfigError
from ..base import Change, Record, merge
from .files import DamagedRecord, locked, read, security_log, stale, unavailable, write
from .locks import FileLocks
from .scan import records, remove_foreign, scan
from .users import UserMarks

if t.TYPE_CHECKING:
    from ...settings import StoreSettings


class FileSystemStore:
    """Records in files below ``directory``."""

    def __init__(self, directory: str, *, mode: int = 0o600, timeout: float = 2.0) -> None:
        self.directory = directory
        self._prefix = os.path.join(directory, "")
        self.mode = mode
        self.timeout = timeout
        self._users = UserMarks(directory, mode)
        self._locks = FileLocks(directory, mode)

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> FileSystemStore:
        """``SESSION_FILE_DIR`` (or a ``file://`` ``SESSION_URL``) and ``SESSION_FILE_MODE``."""
        folder = settings.config.get("SESSION_FILE_DIR") or os.path.join(
            settings.instance_path, "flask_satchel_sessions"
        )
        if not isinstance(folder, (str, os.PathLike)):
            raise ConfigError("SESSION_FILE_DIR", f"expected a directory path, got {folder!r}")
        mode = settings.config.get("SESSION_FILE_MODE", 0o600)
        if not isinstance(mode, int) or not 0 <= mode <= 0o777:
            raise ConfigError("SESSION_FILE_MODE", f"expected permission bits such as 0o600, got {mode!r}")
        return cls(settings.local_path(folder), mode=mode, timeout=settings.timeout)

    def describe(self) -> dict[str, str | int]:
        return {"db.system": "filesystem", "db.namespace": self.directory}

    def _path(self, key: str) -> str:
        # Keys are hex digests (the interface's) or other plain names; a
        # format string is cheaper than os.path.join on every request.
        return f"{self._prefix}{key[:2]}{os.sep}{key}"

    # The Store protocol ------------------------------------------------------

    def load(self, key: str) -> Record | None:
        path = self._path(key)
        try:
            return read(path)
        except OSError as e:
            raise unavailable(e, path) from e

    def create(self, key: str, record: Record) -> None:
        path = self._path(key)
        try:
            self._users.mark(key, record.user)
            write(path, record, self.mode)
        except OSError as e:
            raise unavailable(e, path) from e

    def apply(self, key: str, change: Change) -> int | None:
        path = self._path(key)
        try:
            with locked(path, self.timeout) as held:
                if held is None or held.record is None:
                    return None  # gone, or damaged: no session left to change
                old = held.record
                new = merge(old, change)
                if not new.data:
                    os.unlink(path)
                    self._users.unmark(key, old.user)
                    return 0
                if new.user != old.user:
                    self._users.mark(key, new.user)
                    # The old user's marker goes while the new file is still locked:
                    # a change that follows it, and may give the session back to
                    # that user and mark it again, waits until then.
                    write(path, new, self.mode, then=lambda: self._users.unmark(key, old.user))
                else:
                    write(path, new, self.mode)  # under the lock of the file it replaces
                return len(new.data)
        except OSError as e:
            raise unavailable(e, path) from e

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        path = self._path(key)
        try:
            with locked(path, self.timeout) as held:
                if held is None or held.record is None:
                    return False
                write(path, msgspec.structs.replace(held.record, last_seen=last_seen, expires_at=expires_at), self.mode)
                return True
        except OSError as e:
            raise unavailable(e, path) from e

    def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            with locked(path, self.timeout) as held:
                if held is None:
                    return False
                os.unlink(path)
            if held.record is not None:
                self._users.unmark(key, held.record.user)
            return True
        except OSError as e:
            raise unavailable(e, path) from e

    def sessions(self, now: float, user: str | None = None) -> list[tuple[str, Record]]:
        try:
            if user is None:
                keys = [key for key, mtime in records(self.directory) if mtime > now]
            else:
                keys = self._users.keys(user)
            found = []
            for key in keys:
                try:
                    record = read(self._path(key))
                except DamagedRecord as e:
                    security_log.warning("%s: skipped", e)
                    record = None
                if record is None or (user is not None and record.user != user):
                    if user is not None:  # a stale marker: the session ended or changed hands
                        self._users.prune(user, key, now)
                    continue
                if record.expires_at > now:
                    found.append((key, msgspec.structs.replace(record, data={})))
            return found
        except OSError as e:
            raise unavailable(e, self.directory) from e

    def cleanup(self, now: float) -> int:
        """Remove expired records, damaged and foreign files whose mtime has passed, and old temporary files."""
        removed = 0
        try:
            for entry, kind, stat in scan(self.directory):
                if kind == "tmp":
                    if stale(stat, now):  # the leftover of a killed writer
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                elif kind == "foreign":
                    remove_foreign(entry, stat.st_mtime <= now)
                elif stat.st_mtime <= now:
                    removed += self._remove_expired(entry.name, now)
        except OSError as e:
            raise unavailable(e, self.directory) from e
        return removed

    def _remove_expired(self, key: str, now: float) -> int:
        """Remove the record of ``key`` if it is still expired, or damaged, under its lock; 1 for a record."""
        with locked(self._path(key), self.timeout) as held:
            if held is None or (held.record is not None and held.record.expires_at > now):
                return 0  # deleted or refreshed since the scan
            os.unlink(held.path)
        if held.record is None:
            security_log.warning("Removed the damaged session file %r", held.path)
            return 0
        self._users.unmark(key, held.record.user)
        return 1

    def count(self, now: float) -> int:
        try:
            return sum(1 for _, mtime in records(self.directory) if mtime > now)
        except OSError as e:
            raise unavailable(e, self.directory) from e

    def lock(self, key: str, token: str, lease: float) -> bool:
        """An ``flock`` on ``locks/<key>``; the kernel drops it when its process dies, so no lease is needed."""
        return self._locks.lock(key, token)

    def unlock(self, key: str, token: str) -> bool:
        return self._locks.unlock(token)

    def close(self) -> None:
        self._locks.close()
