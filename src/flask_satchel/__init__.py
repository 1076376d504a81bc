"""Flask-Satchel: Flask's ``session``, kept on the server and done right."""

from __future__ import annotations

import typing as t
from importlib import metadata as _metadata
from pathlib import Path as _Path

from flask import session as _flask_session

from .errors import ConfigError as ConfigError
from .errors import NotSupported as NotSupported
from .errors import SatchelError as SatchelError
from .errors import SerializationError as SerializationError
from .errors import SessionLocked as SessionLocked
from .errors import SessionTooLarge as SessionTooLarge
from .errors import StoreUnavailable as StoreUnavailable
from .errors import TooManySessions as TooManySessions
from .extension import Session as Session
from .manager import SessionInfo as SessionInfo
from .manager import SessionManager as SessionManager
from .manager import Stats as Stats
from .session import ServerSession as ServerSession

__all__ = [
    "ConfigError",
    "NotSupported",
    "SatchelError",
    "SerializationError",
    "ServerSession",
    "Session",
    "SessionInfo",
    "SessionLocked",
    "SessionManager",
    "SessionTooLarge",
    "Stats",
    "StoreUnavailable",
    "TooManySessions",
    "current_session",
]


def _version() -> str:
    """The installed distribution's version; in a source tree that was never installed, pyproject's."""
    try:
        return _metadata.version("Flask-Satchel")
    except _metadata.PackageNotFoundError:
        pass
    import sys  # here, not at the top: the package's namespace keeps only its public names

    if sys.version_info >= (3, 11):  # tomllib is Python 3.11+; on 3.10 a bare checkout has no version to read
        import tomllib

        try:
            pyproject = tomllib.loads((_Path(__file__).resolve().parents[2] / "pyproject.toml").read_text("utf-8"))
        except (OSError, ValueError):
            return "0+unknown"
        project = pyproject.get("project", {})
        if project.get("name") == "Flask-Satchel" and isinstance(project.get("version"), str):
            return t.cast(str, project["version"])
    return "0+unknown"


#: The version of Flask-Satchel, as its package metadata says (PEP 440).
__version__: str = _version()

current_session: ServerSession = t.cast(ServerSession, _flask_session)
"""``flask.session``, typed as Flask-Satchel's :class:`ServerSession`.

It *is* ``flask.session`` (the same proxy object, so ``current_session is
flask.session``): it reads, writes, loads and saves exactly as
``flask.session`` does, and may be used in its place anywhere. The only
difference is for a type checker, to which ``flask.session`` is a
``SessionMixin`` without ``regenerate()``, ``destroy()``, ``sid`` or
``handle``::

    from flask_satchel import current_session

    current_session["_user_id"] = user.id
    current_session.regenerate()

Like ``flask.session`` it only works while a request is being handled
(outside one, Flask raises ``RuntimeError: Working outside of request
context``). It does not check what the session is: it is a promise to the
type checker that ``Session(app)`` keeps. When the app's session is not a
Flask-Satchel one — ``Session(app)`` was never called, or Flask gave the
request its ``NullSession`` because a store that signs or seals needs
``SECRET_KEY`` and none is set — it behaves as that session does: a
``NullSession`` reads as empty and raises Flask's ``RuntimeError`` ("The
session is unavailable because no secret key was set") on a write, and the
Flask-Satchel attributes (``regenerate``, ``destroy``, ``sid``, ``handle``)
raise ``AttributeError``.
"""
