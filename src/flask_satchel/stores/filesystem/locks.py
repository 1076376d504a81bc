"""Session locks (``SESSION_LOCKING``) as ``flock``\\s on files in ``locks/``."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading

from .files import unavailable

_LOCKS = "locks"


class FileLocks:
    """The session locks this process holds in one store folder."""

    def __init__(self, directory: str, mode: int) -> None:
        self._folder = os.path.join(directory, _LOCKS)
        self._mode = mode
        #: Session locks this process holds: token -> (path, open descriptor).
        self._held: dict[str, tuple[str, int]] = {}
        self._held_lock = threading.Lock()

    def lock(self, key: str, token: str) -> bool:
        """An ``flock`` on ``locks/<key>``, held open until ``unlock``.

        The kernel drops an ``flock`` when its process dies, so no lease is
        needed. The file is removed on unlock; a waiter that locked the
        removed file notices the path now names another inode and fails this
        attempt, as ``files.locked`` does for records.
        """
        path = os.path.join(self._folder, key)
        try:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, self._mode)
            except FileNotFoundError:
                os.makedirs(self._folder, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, self._mode)
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
            raise unavailable(e, path) from e

    def unlock(self, token: str) -> bool:
        """Release the lock ``token`` holds; False when it holds none."""
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
        """Release every lock this process holds."""
        with self._held_lock:
            held, self._held = self._held, {}
        for _, fd in held.values():
            os.close(fd)
