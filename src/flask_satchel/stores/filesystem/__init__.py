"""Sessions as files in a folder, one file each.

Safe for several processes and threads at once, and it never evicts a live
session to make room (Flask-Session's file store drops sessions past 500
files). The modules, one job each:

- ``store``: the Store protocol;
- ``files``: one record file, its frame and its atomic writes and locks;
- ``users``: each user's sessions, as marker files in ``users/``;
- ``scan``: the walk of the shard folders, and what ``cleanup()`` removes;
- ``locks``: session locks (``SESSION_LOCKING``) in ``locks/``.
"""

from __future__ import annotations

from .files import DamagedRecord as DamagedRecord
from .store import FileSystemStore as FileSystemStore

__all__ = ["DamagedRecord", "FileSystemStore"]
