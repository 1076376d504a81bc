"""Flask-Session's files: cachelib's ``FileSystemCache`` in ``SESSION_FILE_DIR``.

Flask-Session's ``"filesystem"`` and ``"cachelib"`` types both keep a
session in a ``FileSystemCache``: one file per session, at the top of the
folder, named by the hex digest of ``SESSION_KEY_PREFIX + sid`` (SHA-256
since cachelib 0.16, MD5 before, so both names are tried), holding a 4-byte
unsigned expiry timestamp in the machine's byte order (0: never) and then
the session dict, pickled. Flask-Satchel's filesystem store keeps its own
files in two-hex-digit subfolders, so the two can share one folder.

The folder is ``SESSION_FILE_DIR`` when it is set (for ``"cachelib"``,
Flask-Satchel's store folder, which is the ``FileSystemCache``'s), else
Flask-Session's default, ``flask_session`` in the working directory.

Pickle is code: whoever can write a file there could make ``pickle.load``
run anything. The unpickler here refuses every global, so it builds only
what pickle makes without naming a class (dicts, lists, tuples, sets,
strings, bytes, numbers, booleans, None); a record that needs any class, a
``datetime`` as much as an exploit, is skipped and logged. Anything else
such a record could do is bounded: a file larger than ``MAX_FILE`` is not
read.

A take claims the file first, by renaming it to a name of its own, so of two
requests racing with the same old cookie only one reads it; a cookie that
names nothing costs one failed rename per name tried. The claimed file is
removed once read, whatever it held.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import pickle
import secrets
import stat
import struct
import typing as t

from ..stores.filesystem.files import unavailable
from . import BaseImporter, Taken, Unreadable

if t.TYPE_CHECKING:
    from flask import Flask

    from ..errors import StoreUnavailable
    from ..settings import Settings

#: cachelib's expiry header: an unsigned int, native byte order and size ("I").
_EXPIRY = struct.Struct("I")
#: The largest Flask-Session file read; a session is a few kilobytes.
MAX_FILE = 16 * 1024 * 1024
#: cachelib's suffix for its temporary files: a claimed file left behind by a
#: killed process is one cachelib ignores too.
_CLAIMED = ".__wz_cache"


class _PlainUnpickler(pickle.Unpickler):
    """An unpickler that can load no class, no function, nothing by name."""

    def find_class(self, module: str, name: str) -> t.Any:
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: Flask-Satchel never unpickles a class")

    def persistent_load(self, pid: t.Any) -> t.Any:
        raise pickle.UnpicklingError("refused a persistent id")


def plain_unpickle(data: bytes) -> t.Any:
    """``pickle.loads`` of plain values only; ``pickle.UnpicklingError`` for anything that names a global."""
    return _PlainUnpickler(io.BytesIO(data)).load()


def flask_session_dir(app: Flask, settings: Settings) -> str:
    """The folder Flask-Session's files are in, by Flask-Session's own rule (see the module docstring)."""
    # The cache's folder for SESSION_TYPE "cachelib", which it puts in front of SESSION_FILE_DIR.
    configured = settings.store.config.get("SESSION_FILE_DIR")
    if configured:
        return str(os.fspath(configured))
    return os.path.join(os.getcwd(), "flask_session")


def _names(store_id: str) -> tuple[str, str]:
    key = store_id.encode()
    return hashlib.sha256(key).hexdigest(), hashlib.md5(key, usedforsecurity=False).hexdigest()


def _unavailable(e: OSError, path: str) -> StoreUnavailable:
    return unavailable(e, path, "Flask-Session file")


class FileImporter(BaseImporter):
    """Takes Flask-Session's file by renaming it, then reads it with the plain unpickler."""

    backend = "filesystem"

    def __init__(self, settings: Settings, app: Flask) -> None:
        super().__init__(settings, app)
        #: Where Flask-Session kept its files.
        self.directory = flask_session_dir(app, settings)

    def take_record(self, store_id: str, now: float, lifetime: float) -> Taken | None:
        for name in _names(store_id):
            path = os.path.join(self.directory, name)
            claimed = f"{path}.{secrets.token_hex(8)}{_CLAIMED}"
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                continue  # not this name, or no such folder: nothing of Flask-Session's here
            except OSError as e:
                raise _unavailable(e, path) from e
            raw = self._read_claimed(store_id, path, claimed)
            if raw is None:
                return None
            if len(raw) < _EXPIRY.size:
                self.skipped(store_id, "the file is shorter than its expiry header")
                return None
            (expiry,) = _EXPIRY.unpack_from(raw)
            if expiry == 0:  # cachelib's "never expires", which Flask-Session never writes
                expires_at = now + lifetime
            elif expiry < now:
                return None  # expired: cachelib would not have returned it either
            else:
                expires_at = float(expiry)
            return Taken(raw[_EXPIRY.size :], expires_at)
        return None

    def _read_claimed(self, store_id: str, path: str, claimed: str) -> bytes | None:
        """The bytes of the claimed file, which is then removed; None (logged) when it is no file to read."""
        try:
            fd = os.open(claimed, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise _unavailable(e, claimed) from e
            os.unlink(claimed)  # a symbolic link where a session file should be: the link goes
            self.skipped(store_id, "a symbolic link, not a file")
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                with contextlib.suppress(OSError):
                    os.rename(claimed, path)  # not ours to remove: a folder, a device
                self.skipped(store_id, "not a regular file")
                return None
            if info.st_size > MAX_FILE:
                os.unlink(claimed)
                self.skipped(store_id, f"{info.st_size} bytes, more than a session file holds")
                return None
            with open(fd, "rb", closefd=False) as f:
                raw = f.read(MAX_FILE + 1)
            os.unlink(claimed)
        except OSError as e:
            raise _unavailable(e, claimed) from e
        finally:
            os.close(fd)
        return raw

    def load(self, record: t.Any) -> t.Any:
        try:
            return plain_unpickle(record)
        except Exception as e:  # a global refused, or bytes that are no pickle: either way, not a session
            raise Unreadable(f"not a plain pickle: {type(e).__name__}: {e}") from None
