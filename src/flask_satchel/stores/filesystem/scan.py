"""Walking the shard folders, for ``cleanup()``, ``count()`` and listing every session.

Files are sharded into 256 folders by the first two hex digits of the key,
and each file's mtime is its expiry, so ``cleanup()`` and ``count()`` only
``stat`` files instead of reading them. A damaged or foreign file (a bad
frame, a name no record has, a folder where a file should be) is skipped and
logged on ``flask_satchel.security`` wherever it is met, reads as an
unreadable session, and is removed by ``cleanup()`` once its mtime has
passed, as any expired record is.
"""

from __future__ import annotations

import os
import typing as t

from .files import security_log

Kind = t.Literal["record", "tmp", "foreign"]


def scan(directory: str) -> t.Iterator[tuple[os.DirEntry[str], Kind, os.stat_result]]:
    """Every entry of the shard folders with its kind (record, tmp or foreign) and its ``lstat``.

    Only two-character folders are shards: the store makes no others but
    ``users`` and ``locks``, so a folder it shares by mistake loses nothing.
    """
    try:
        folders = [folder for folder in os.scandir(directory) if len(folder.name) == 2 and folder.is_dir()]
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
            kind: Kind
            if name.endswith(".tmp"):
                kind = "tmp"
            elif name.startswith(folder.name) and "." not in name and entry.is_file(follow_symlinks=False):
                kind = "record"
            else:
                kind = "foreign"
            yield entry, kind, stat


def records(directory: str) -> t.Iterator[tuple[str, float]]:
    """The keys of the record files with their mtime (their expiry); foreign entries are logged."""
    for entry, kind, stat in scan(directory):
        if kind == "record":
            yield entry.name, stat.st_mtime
        elif kind == "foreign":
            security_log.warning("Foreign entry %r among the session files: skipped", entry.path)


def remove_foreign(entry: os.DirEntry[str], expired: bool) -> None:
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
