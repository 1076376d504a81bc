"""A user's sessions: ``users/<hash of user>/`` holds an empty marker file per session.

A marker is added before the record that names its user is written, and
dropped after the record no longer does: a marker whose record does not
name its user is pruned when listed (once it is older than any write in
progress), while a record without its marker would be missing from the
list, and so from "log out everywhere".
"""

from __future__ import annotations

import contextlib
import os

from ..base import user_hash
from .files import stale

_USERS = "users"


class UserMarks:
    """The marker folders of the users of one store folder."""

    def __init__(self, directory: str, mode: int) -> None:
        self._root = os.path.join(directory, _USERS)
        self._mode = mode

    def _folder(self, user: str) -> str:
        return os.path.join(self._root, user_hash(user))

    def mark(self, key: str, user: str | None) -> None:
        """Add the session's marker to ``user``'s folder, before the record names them."""
        if user is None:
            return
        folder = self._folder(user)
        marker = os.path.join(folder, key)
        flags = os.O_WRONLY | os.O_CREAT
        try:  # the folder is there for every session but a user's first
            fd = os.open(marker, flags, self._mode)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(marker, flags, self._mode)
        os.close(fd)

    def unmark(self, key: str, user: str | None) -> None:
        """Drop the session's marker from ``user``'s folder, after the record no longer names them."""
        if user is not None:
            with contextlib.suppress(OSError):  # the record is written: a stale marker is pruned when listed
                os.unlink(os.path.join(self._folder(user), key))

    def keys(self, user: str) -> list[str]:
        """The keys ``user``'s markers name; some may be stale."""
        try:
            return os.listdir(self._folder(user))
        except FileNotFoundError:
            return []

    def prune(self, user: str, key: str, now: float) -> None:
        """Drop a marker whose record is gone or names someone else, unless a write may be in progress."""
        marker = os.path.join(self._folder(user), key)
        with contextlib.suppress(FileNotFoundError):
            if stale(os.lstat(marker), now):
                os.unlink(marker)
